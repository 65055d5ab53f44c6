"""The Evolink dialect: flat body, task creation, polling, task failures and error shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from qwen_edit_async import testing
from qwen_edit_async.testing import FakeProvider, Faults
from qwen_edit_async.testing._png import png_bytes

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

CREATE = "/v1/images/generations"
AUTH = {"Authorization": "Bearer sk-any"}


def flat(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": "qwen-image-edit-plus",
        "prompt": "Replace the background",
        "image_urls": ["https://example.com/1.png"],
    }
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def create(
    session: aiohttp.ClientSession, fake: FakeProvider, payload: Any
) -> tuple[int, Any]:
    async with session.post(fake.url + CREATE, json=payload) as resp:
        assert resp.headers.get("X-Request-Id")
        return resp.status, await resp.json()


async def poll(session: aiohttp.ClientSession, fake: FakeProvider, task_id: str) -> tuple[int, Any]:
    async with session.get(f"{fake.url}/v1/tasks/{task_id}") as resp:
        return resp.status, await resp.json()


async def wait_done(
    session: aiohttp.ClientSession, fake: FakeProvider, task_id: str, timeout: float = 5.0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        _, task = await poll(session, fake, task_id)
        if task["status"] in ("completed", "failed"):
            return dict(task)
        await asyncio.sleep(0.01)
    raise AssertionError("task did not finish")


async def test_create_answers_the_documented_task_object(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """A flat body on /v1/images/generations creates a pending task with the hint."""
    fake = await fake_provider_factory(latency=2.0)
    status, task = await create(session, fake, flat(n=2))
    assert status == 200
    assert task["id"].startswith("task-unified-")
    assert task["object"] == "image.generation.task"
    assert (task["status"], task["progress"], task["type"]) == ("pending", 0, "image")
    assert task["model"] == "qwen-image-edit-plus"
    assert isinstance(task["created"], int)
    assert task["task_info"] == {"can_cancel": True, "estimated_time": 2}
    assert task["usage"]["billing_rule"] == "per_call"
    assert task["usage"]["credits_reserved"] == 2
    assert fake.stats.jobs_created == 1
    assert fake.stats.running == 1


async def test_task_moves_pending_processing_completed_with_rising_progress(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Polls report pending, then processing with rising progress, then completed results."""
    fake = await fake_provider_factory(latency=0.4)
    _, task = await create(session, fake, flat(n=2))
    seen = [(task["status"], task["progress"])]
    while seen[-1][0] != "completed":
        await asyncio.sleep(0.015)
        status, task = await poll(session, fake, task["id"])
        assert status == 200
        seen.append((task["status"], task["progress"]))
    statuses = [s for i, (s, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != s]
    assert statuses == ["pending", "processing", "completed"]
    progress = [p for _, p in seen]
    assert progress == sorted(progress)
    middle = {p for s, p in seen if s == "processing"}
    assert len(middle) >= 3 and all(0 < p < 100 for p in middle)
    assert task["progress"] == 100
    assert task["task_info"] == {"can_cancel": False}
    assert len(task["results"]) == 2
    assert all(url.startswith(fake.url + "/files/results/") for url in task["results"])


async def test_no_estimated_time_when_disabled(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """estimated_time=None leaves the hint out of the created and polled task."""
    fake = await fake_provider_factory(latency=1.0, estimated_time=None)
    _, task = await create(session, fake, flat())
    assert "estimated_time" not in task["task_info"]
    _, polled = await poll(session, fake, task["id"])
    assert polled["status"] in ("pending", "processing")
    assert "estimated_time" not in polled["task_info"]


@pytest.mark.parametrize(
    ("size", "name"), [("1033x1032", "_1040x1024.png"), ("512x2048", "_512x2048.png")]
)
async def test_size_uses_x_and_is_snapped(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, size: str, name: str
) -> None:
    """Evolink's WxH size is honoured and snapped to multiples of 16."""
    status, task = await create(session, fake_provider, flat(size=size))
    assert status == 200
    done = await wait_done(session, fake_provider, task["id"])
    assert done["status"] == "completed"
    assert name in done["results"][0]


PNG_1X1 = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

ERRORS = {
    "base64 image": (flat(image_urls=[PNG_1X1]), 400, "invalid_parameters", "image_urls"),
    "prompt over 2000": (flat(prompt="p" * 2001), 400, "invalid_parameters", "prompt"),
    "missing prompt": (flat(prompt=None), 400, "invalid_parameters", "prompt"),
    "no images": (flat(image_urls=[]), 400, "invalid_parameters", "image_urls"),
    "four images": (
        flat(image_urls=["https://example.com/a.png"] * 4),
        400,
        "invalid_parameters",
        "image_urls",
    ),
    "n=7": (flat(n=7), 400, "invalid_parameters", "n"),
    "n=0": (flat(n=0), 400, "invalid_parameters", "n"),
    "size with star": (flat(size="1024*1024"), 400, "invalid_parameters", "size"),
    "size 4000x4000": (flat(size="4000x4000"), 400, "invalid_parameters", "size"),
    "size with n=2": (flat(size="1024x1024", n=2), 400, "invalid_parameters", "size"),
    "vtrix model id": (flat(model="qwen_image_edit_plus"), 400, "model_not_found", "model"),
    "unresolvable host": (
        flat(image_urls=["https://cdn.example.invalid/x.png"]),
        400,
        "invalid_parameters",
        "image",
    ),
    "http callback": (
        flat(callback_url="http://example.com/hook"),
        400,
        "invalid_parameters",
        "callback_url",
    ),
    # Loopback is the one private address the fake allows (it calls nothing else).
    "private callback": (
        flat(callback_url="https://10.1.2.3/hook"),
        400,
        "invalid_parameters",
        "callback_url",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
async def test_invalid_requests_answer_evolink_error_objects(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, case: str
) -> None:
    """Each rule answers {"error": {code, message, type, param}} with Evolink's codes."""
    payload, want_status, want_code, want_param = ERRORS[case]
    status, answer = await create(session, fake_provider, payload)
    assert status == want_status
    error = answer["error"]
    assert set(error) == {"code", "message", "type", "param"}
    assert error["code"] == want_code
    assert error["type"] == "invalid_request_error"
    assert error["param"] == want_param
    assert fake_provider.stats.jobs_created == 0


async def test_prompt_of_exactly_2000_characters_and_https_callback_are_accepted(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """The limits are inclusive: 2000 characters and a public https callback pass."""
    payload = flat(prompt="p" * 2000, callback_url="https://hooks.example.com/done")
    status, _ = await create(session, fake_provider, payload)
    assert status == 200


async def test_bad_key_is_401_in_evolink_shape(fake_provider_factory: Any) -> None:
    """A wrong key on create and poll answers 401 with code unauthorized."""
    fake = await fake_provider_factory(api_key="sk-right")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-bad"}) as s:
        status, answer = await create(s, fake, flat())
        assert status == 401
        assert answer["error"]["code"] == "unauthorized"
        assert answer["error"]["type"] == "authentication_error"
        status, answer = await poll(s, fake, "task-unified-1-x")
        assert status == 401


async def test_integer_error_codes_when_asked(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """evolink_int_codes puts the HTTP status in code, as Evolink's older docs show."""
    fake = await fake_provider_factory(faults=Faults(evolink_int_codes=True))
    status, answer = await create(session, fake, flat(n=9))
    assert status == 400
    assert answer["error"]["code"] == 400


async def test_unknown_task_id_is_404_invalid_task_id(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Polling an id the fake never issued answers 404 with param task_id."""
    status, answer = await poll(session, fake_provider, "task-unified-0-nope")
    assert status == 404
    assert answer["error"]["code"] == "invalid_task_id"
    assert answer["error"]["param"] == "task_id"


async def test_vtrix_task_id_is_unknown_to_evolink(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Each dialect only knows its own tasks."""
    payload = {
        "model": "qwen_image_edit_plus",
        "input": {
            "messages": [
                {"role": "user", "content": [{"image": "https://example.com/a.png"}, {"text": "x"}]}
            ]
        },
    }
    async with session.post(fake_provider.url + "/model/v1/generation", json=payload) as resp:
        vtrix_id = (await resp.json())["id"]
    status, _ = await poll(session, fake_provider, vtrix_id)
    assert status == 404


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        ("cat [filter]", "content_policy_violation"),
        ("cat [fail:quota_exceeded]", "quota_exceeded"),
        ("cat [fail]", "generation_failed_no_content"),
        ("cat [fail:generation_timeout]", "generation_timeout"),
    ],
)
async def test_failed_tasks_carry_task_error_codes(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, prompt: str, code: str
) -> None:
    """Magic prompt words make the task fail with the documented Evolink task error."""
    status, task = await create(session, fake_provider, flat(prompt=prompt))
    assert status == 200
    done = await wait_done(session, fake_provider, task["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == code
    assert done["error"]["type"] == "task_error"
    assert done["error"]["message"]
    assert "results" not in done


async def test_quota_is_refused_at_submission_with_402(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """An empty balance is Evolink's HTTP 402 ``quota_exceeded`` at creation: no task."""
    status, answer = await create(session, fake_provider, flat(prompt="cat [quota]"))
    assert status == 402
    assert answer["error"]["code"] == "quota_exceeded"
    assert fake_provider.stats.jobs_created == 0


async def test_uploaded_input_sets_the_aspect_ratio(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """An image uploaded to the fake is inspected: output follows its 2:1 ratio."""
    wide = await fake_provider.uploader(png_bytes(800, 400), "image/png")
    status, task = await create(session, fake_provider, flat(image_urls=[wide]))
    assert status == 200
    done = await wait_done(session, fake_provider, task["id"])
    assert "_1440x720.png" in done["results"][0]
