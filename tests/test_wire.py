"""Exact wire format: what the client puts on the wire for each provider (aioresponses).

The expected bodies are the examples of PROVIDERS.md; key order is checked too (images
first, the single text last; unset fields absent, never null).
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from typing import Any

import aioresponses.core as aioresponses_core
import pytest
from aiohttp import ClientResponse
from aioresponses import CallbackResult, aioresponses

import qwen_edit_async as qe

KEY = "sk-wire-test-key"
BASE = "https://gateway.test"
IMG1, IMG2 = "https://example.com/a.png", "https://example.com/b.png"
PROMPT = "Put the cat from image 1 on the sofa from image 2"


class _Response(ClientResponse):
    """aiohttp 3.14 wants a ``stream_writer``; aioresponses 0.7.9 does not pass one."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture(autouse=True)
def _compatible_mock_responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _Response)
    yield


class Capture:
    """Records each request the mocked session receives and answers with ``body``."""

    def __init__(self, body: dict[str, Any], status: int = 200) -> None:
        self.body, self.status = body, status
        self.requests: list[dict[str, Any]] = []

    def __call__(self, url: Any, **kwargs: Any) -> CallbackResult:
        self.requests.append({"url": str(url), **kwargs})
        return CallbackResult(status=self.status, payload=self.body)


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
    capture = Capture(answer)
    with aioresponses() as mocked:
        mocked.post(BASE + path, callback=capture)
        async with qe.QwenEditClient(provider, api_key=KEY, base_url=BASE) as client:
            result = await client.edit([IMG1, IMG2], PROMPT, **nested_options())
    (sent,) = capture.requests
    body = json.loads(sent["data"])
    assert body == {"model": "qwen-image-edit-plus", **NESTED_BODY}
    assert list(body) == ["model", "input", "parameters"]
    assert list(body["input"]["messages"][0]["content"][-1]) == ["text"]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert result.images[0].url == "https://r/x.png"


async def test_unset_fields_are_left_out_not_null() -> None:
    """A minimal request sends no parameters the user did not set."""
    capture = Capture({"created": 1, "data": [{"url": "https://r/x.png"}]})
    with aioresponses() as mocked:
        mocked.post(BASE + "/v1/images/generations", callback=capture)
        async with qe.QwenEditClient("modelstream", api_key=KEY, base_url=BASE) as client:
            await client.edit([IMG1], "x")
    raw = capture.requests[0]["data"]
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
    create, poll = Capture(created), Capture(done)
    with aioresponses() as mocked:
        mocked.post(BASE + "/v1/images/generations", callback=create)
        mocked.get(BASE + f"/v1/tasks/{created['id']}", callback=poll, repeat=True)
        async with qe.QwenEditClient(
            "evolink", api_key=KEY, base_url=BASE, poll_initial=0.01
        ) as client:
            result = await client.edit(
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
    assert json.loads(create.requests[0]["data"]) == {
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
    assert poll.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
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
    with aioresponses() as mocked:
        mocked.post(BASE + "/model/v1/generation", callback=create)
        mocked.get(BASE + "/model/v1/generation/task/task-1", callback=poll, repeat=True)
        async with qe.QwenEditClient(
            "vtrix", api_key=KEY, base_url=BASE, poll_initial=0.01
        ) as client:
            result = await client.edit([IMG1, IMG2], PROMPT, **nested_options())
    body = json.loads(create.requests[0]["data"])
    assert body == {"model": "qwen_image_edit_plus", **NESTED_BODY}
    assert result.urls == ["https://r/v.png"] and result.usage is not None


async def test_local_image_is_sent_as_a_data_uri(tmp_path: Any) -> None:
    """A local file becomes a data URI of its own bytes, in its position."""
    from _imagegen import make_image

    path = tmp_path / "cat.png"
    path.write_bytes(make_image("png", 400, 400))
    capture = Capture({"created": 1, "data": [{"url": "https://r/x.png"}]})
    with aioresponses() as mocked:
        mocked.post(BASE + "/v1/images/generations", callback=capture)
        async with qe.QwenEditClient("modelstream", api_key=KEY, base_url=BASE) as client:
            await client.edit([IMG1, path], "x")
    content = json.loads(capture.requests[0]["data"])["input"]["messages"][0]["content"]
    assert content[0] == {"image": IMG1}
    assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/=]+", content[1]["image"])


async def test_retry_after_http_date_is_honoured() -> None:
    """Retry-After given as an HTTP date is read as a wait, and the request is retried."""
    calls: list[float] = []

    def answer(url: Any, **kwargs: Any) -> CallbackResult:
        calls.append(1)
        if len(calls) == 1:
            return CallbackResult(
                status=503,
                payload={"error": {"message": "busy", "code": "service_unavailable"}},
                headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
            )
        return CallbackResult(status=200, payload={"created": 1, "data": [{"url": "https://r/x"}]})

    with aioresponses() as mocked:
        mocked.post(BASE + "/v1/images/generations", callback=answer, repeat=True)
        async with qe.QwenEditClient("modelstream", api_key=KEY, base_url=BASE) as client:
            result = await client.edit([IMG1], "x")
    assert len(calls) == 2 and result.urls == ["https://r/x"]
