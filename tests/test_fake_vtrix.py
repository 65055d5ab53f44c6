"""The Vtrix dialect: underscore model id, in_progress -> completed, three error forms."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from qwen_edit_async import testing
from qwen_edit_async.testing import FakeProvider, Faults
from qwen_edit_async.testing._png import png_bytes

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

CREATE = "/model/v1/generation"
AUTH = {"Authorization": "Bearer sk-any"}


def body(
    text: str = "make it blue",
    images: tuple[str, ...] = ("https://example.com/a.png",),
    model: str = "qwen_image_edit_plus",
    **params: Any,
) -> dict[str, Any]:
    content: list[dict[str, str]] = [{"image": i} for i in images] + [{"text": text}]
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": params,
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def create(
    session: aiohttp.ClientSession, fake: FakeProvider, payload: Any
) -> tuple[int, Any]:
    async with session.post(fake.url + CREATE, json=payload) as resp:
        return resp.status, await resp.json()


async def poll(session: aiohttp.ClientSession, fake: FakeProvider, task_id: str) -> tuple[int, Any]:
    async with session.get(f"{fake.url}/model/v1/generation/task/{task_id}") as resp:
        return resp.status, await resp.json()


async def wait_done(
    session: aiohttp.ClientSession, fake: FakeProvider, task_id: str
) -> dict[str, Any]:
    for _ in range(500):
        _, task = await poll(session, fake, task_id)
        if task["status"] in ("completed", "failed"):
            return dict(task)
        await asyncio.sleep(0.01)
    raise AssertionError("task did not finish")


async def test_task_goes_in_progress_to_completed_with_output_and_usage(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Create answers in_progress; polls show rising float progress, then the output URLs."""
    fake = await fake_provider_factory(latency=0.3)
    status, task = await create(session, fake, body(n=2, size="1024*1536"))
    assert status == 200
    assert task["status"] == "in_progress"
    assert task["model"] == "qwen_image_edit_plus"
    seen: list[float] = []
    while True:
        await asyncio.sleep(0.02)
        status, polled = await poll(session, fake, task["id"])
        assert status == 200
        if polled["status"] == "completed":
            break
        assert polled["status"] == "in_progress"
        assert isinstance(polled["progress"], float) and 0.0 <= polled["progress"] < 1.0
        seen.append(polled["progress"])
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] > seen[0]
    assert polled["progress"] == 1
    (output,) = polled["output"]
    urls = [c["url"] for c in output["content"] if c["type"] == "image"]
    assert len(urls) == 2 and all("_1024x1536.png" in u for u in urls)
    assert polled["usage"] == {"cost": "0.06", "quantity": 2, "unit_price": "0.03"}
    assert polled["metadata"] == {}


async def test_data_uri_input_is_accepted_and_sets_aspect_ratio(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Vtrix takes base64 data URIs; the output follows the image's 1:2 ratio."""
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(400, 800)).decode()
    status, task = await create(session, fake_provider, body(images=(uri,)))
    assert status == 200
    done = await wait_done(session, fake_provider, task["id"])
    url = done["output"][0]["content"][0]["url"]
    assert "_720x1440.png" in url


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (body(model="qwen-image-edit-plus"), 400),
        (body(n=7), 400),
        (body(size="4000*4000"), 400),
        (body(images=()), 400),
        (body(images=("https://nowhere.invalid/a.png",)), 400),
    ],
    ids=["hyphen model id", "n=7", "size", "no image", "download"],
)
async def test_refusals_carry_a_message(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, payload: Any, status: int
) -> None:
    """Vtrix refusals are {"message": ...} with the HTTP status; nothing is created."""
    got, answer = await create(session, fake_provider, payload)
    assert got == status
    assert isinstance(answer["message"], str) and answer["message"]
    assert fake_provider.stats.jobs_created == 0


async def test_bad_key_and_unknown_task(fake_provider_factory: Any) -> None:
    """A wrong key is 401 and an unknown task id is 404, both with a message."""
    fake = await fake_provider_factory(api_key="sk-right")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-bad"}) as s:
        status, answer = await create(s, fake, body())
        assert status == 401 and answer["message"]
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-right"}) as s:
        status, answer = await poll(s, fake, "task-missing")
        assert status == 404 and answer["message"]


async def test_server_errors_carry_error(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Vtrix 5xx bodies use the {"error": ...} form."""
    fake_provider.script("server_error:502")
    status, answer = await create(session, fake_provider, body())
    assert status == 502
    assert isinstance(answer["error"], str)


@pytest.mark.parametrize(
    ("form", "check"),
    [
        ("string", lambda e: isinstance(e, str) and e.startswith("DataInspectionFailed")),
        ("int_code", lambda e: isinstance(e["code"], int) and e["error_message"]),
        ("str_code", lambda e: e["code"] == "DataInspectionFailed" and e["message"]),
    ],
)
async def test_failed_task_error_in_each_documented_form(
    fake_provider_factory: Any, session: aiohttp.ClientSession, form: str, check: Any
) -> None:
    """Failed tasks carry error as a string, {code:int, error_message} or {code:str, message}."""
    fake = await fake_provider_factory(faults=Faults(vtrix_error_form=form))  # type: ignore[arg-type]
    _, task = await create(session, fake, body(text="[filter] a cat"))
    done = await wait_done(session, fake, task["id"])
    assert done["status"] == "failed"
    assert "output" not in done
    assert check(done["error"])
