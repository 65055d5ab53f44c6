"""Exact wire format: what the client puts on the wire for each provider.

The requests are answered by an in-memory pipe standing where the HTTP pipe stands, so the
dialects, the key and the retries run for real; what the pipe itself adds on a socket
(User-Agent, Content-Type) is checked against a real server in ``test_http``. The expected
bodies are the providers' documented examples; key order is checked too (images first, the
single text last; unset fields absent, never null).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from _memory_pipe import MemoryPipe, Sent, install, json_answer

import qwen_edit_async as qe
from qwen_edit_async._http import Answer

KEY = "sk-wire-test-key"
BASE = "https://gateway.test"
IMG1, IMG2 = "https://example.com/a.png", "https://example.com/b.png"
PROMPT = "Put the cat from image 1 on the sofa from image 2"


class Capture:
    """Records each request the pipe receives and answers with ``body``."""

    def __init__(self, body: dict[str, Any], status: int = 200) -> None:
        self.body, self.status = body, status
        self.requests: list[Sent] = []

    def __call__(self, sent: Sent) -> Answer:
        self.requests.append(sent)
        return json_answer(self.body, self.status)


def client(provider: str, pipe: MemoryPipe, **options: Any) -> qe.QwenEditClient:
    return install(qe.QwenEditClient(provider, api_key=KEY, base_url=BASE, **options), pipe)


def nested_options() -> dict[str, Any]:
    return {
        "n": 2,
        "negative_prompt": "blurry",
        "prompt_extend": True,
        "watermark": False,
        "size": "1024*1536",
        "seed": 42,
    }


NESTED_BODY = {
    "input": {
        "messages": [
            {"role": "user", "content": [{"image": IMG1}, {"image": IMG2}, {"text": PROMPT}]}
        ]
    },
    "parameters": {
        "n": 2,
        "negative_prompt": "blurry",
        "prompt_extend": True,
        "watermark": False,
        "size": "1024*1536",
        "seed": 42,
    },
}


@pytest.mark.parametrize(
    ("provider", "path", "answer"),
    [
        (
            "dashscope",
            "/api/v1/services/aigc/multimodal-generation/generation",
            {
                "output": {
                    "choices": [
                        {
                            "message": {
                                "role": "assistant",
                                "content": [{"image": "https://r/x.png"}],
                            }
                        }
                    ]
                },
                "usage": {"width": 1024, "height": 1536, "image_count": 1},
                "request_id": "bf37ca26",
            },
        ),
        (
            "modelstream",
            "/v1/images/generations",
            {"created": 1, "data": [{"url": "https://r/x.png"}]},
        ),
        ("onetoken", "/v1/images/edits", {"created": 1, "data": [{"url": "https://r/x.png"}]}),
    ],
)
async def test_sync_providers_send_the_documented_nested_body(
    provider: str, path: str, answer: dict[str, Any]
) -> None:
    """DashScope, ModelStream and OneToken: POST the nested body to their path, bearer key."""
    capture, pipe = Capture(answer), MemoryPipe()
    pipe.route("POST", BASE + path, capture)
    async with client(provider, pipe) as c:
        result = await c.edit([IMG1, IMG2], PROMPT, **nested_options())
    (sent,) = capture.requests
    body = sent.json()
    assert body == {"model": "qwen-image-edit-plus", **NESTED_BODY}
    assert list(body) == ["model", "input", "parameters"]
    assert list(body["input"]["messages"][0]["content"][-1]) == ["text"]
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert result.images[0].url == "https://r/x.png"


async def test_unset_fields_are_left_out_not_null() -> None:
    """A minimal request sends no parameters the user did not set."""
    capture, pipe = Capture({"created": 1, "data": [{"url": "https://r/x.png"}]}), MemoryPipe()
    pipe.route("POST", BASE + "/v1/images/generations", capture)
    async with client("modelstream", pipe) as c:
        await c.edit([IMG1], "x")
    raw = capture.requests[0].body
    assert raw is not None
    assert b"null" not in raw
    body = json.loads(raw)
    assert body.get("parameters", {}) == {}


async def test_evolink_flat_body_and_poll() -> None:
    """Evolink: the flat body with image_urls and WxH size, then GET /v1/tasks/{id}."""
    created = {
        "created": 1757156493,
        "id": "task-unified-1757156493-imcg5zqt",
        "model": "qwen-image-edit-plus",
        "object": "image.generation.task",
        "progress": 0,
        "status": "pending",
        "task_info": {"can_cancel": True, "estimated_time": 0},
        "type": "image",
    }
    done = {
        "id": created["id"],
        "status": "completed",
        "progress": 100,
        "results": ["https://r/e.png"],
    }
    create, poll, pipe = Capture(created), Capture(done), MemoryPipe()
    pipe.route("POST", BASE + "/v1/images/generations", create)
    pipe.route("GET", BASE + f"/v1/tasks/{created['id']}", poll)
    async with client("evolink", pipe, poll_initial=0.01) as c:
        result = await c.edit(
            ["https://example.com/1.png"],
            "Replace the background",
            n=1,
            negative_prompt="...",
            size="1024*1024",
            prompt_extend=True,
            watermark=False,
            seed=12345,
            callback_url="https://your-domain.com/webhooks/done",
        )
    assert create.requests[0].json() == {
        "model": "qwen-image-edit-plus",
        "prompt": "Replace the background",
        "image_urls": ["https://example.com/1.png"],
        "n": 1,
        "negative_prompt": "...",
        "size": "1024x1024",
        "prompt_extend": True,
        "watermark": False,
        "seed": 12345,
        "callback_url": "https://your-domain.com/webhooks/done",
    }
    assert poll.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert poll.requests[0].body is None
    assert result.task_id == created["id"] and result.urls == ["https://r/e.png"]


async def test_vtrix_underscored_model_nested_body_and_poll() -> None:
    """Vtrix: model id with underscores, nested body, GET /model/v1/generation/task/{id}."""
    create = Capture({"id": "task-1", "status": "in_progress", "model": "qwen_image_edit_plus"})
    poll = Capture(
        {
            "id": "task-1",
            "status": "completed",
            "progress": 1,
            "output": [{"content": [{"type": "image", "url": "https://r/v.png"}]}],
            "usage": {"cost": "0.03", "quantity": 1, "unit_price": "0.03"},
        }
    )
    pipe = MemoryPipe()
    pipe.route("POST", BASE + "/model/v1/generation", create)
    pipe.route("GET", BASE + "/model/v1/generation/task/task-1", poll)
    async with client("vtrix", pipe, poll_initial=0.01) as c:
        result = await c.edit([IMG1, IMG2], PROMPT, **nested_options())
    body = create.requests[0].json()
    assert body == {"model": "qwen_image_edit_plus", **NESTED_BODY}
    assert result.urls == ["https://r/v.png"] and result.usage is not None


async def test_local_image_is_sent_as_a_data_uri(tmp_path: Any) -> None:
    """A local file becomes a data URI of its own bytes, in its position."""
    from _imagegen import make_image

    path = tmp_path / "cat.png"
    path.write_bytes(make_image("png", 400, 400))
    capture, pipe = Capture({"created": 1, "data": [{"url": "https://r/x.png"}]}), MemoryPipe()
    pipe.route("POST", BASE + "/v1/images/generations", capture)
    async with client("modelstream", pipe) as c:
        await c.edit([IMG1, path], "x")
    content = capture.requests[0].json()["input"]["messages"][0]["content"]
    assert content[0] == {"image": IMG1}
    assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/=]+", content[1]["image"])


async def test_retry_after_http_date_is_honoured() -> None:
    """Retry-After given as an HTTP date is read as a wait, and the request is retried."""
    calls: list[Sent] = []

    def answer(sent: Sent) -> Answer:
        calls.append(sent)
        if len(calls) == 1:
            return json_answer(
                {"error": {"message": "busy", "code": "service_unavailable"}},
                503,
                {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
            )
        return json_answer({"created": 1, "data": [{"url": "https://r/x"}]})

    pipe = MemoryPipe()
    pipe.route("POST", BASE + "/v1/images/generations", answer)
    async with client("modelstream", pipe) as c:
        result = await c.edit([IMG1], "x")
    assert len(calls) == 2 and result.urls == ["https://r/x"]
    assert calls[0].body == calls[1].body  # the same request, sent again
