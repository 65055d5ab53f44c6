"""The fake provider's completion callbacks, as Evolink documents them, and their faults.

A small aiohttp server on loopback stands in for the receiver and records what arrives.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import msgspec
import pytest
from _wait import until
from aiohttp import web

from qwen_edit_async.testing import FakeProvider, Faults

KEY = "sk-fake-callbacks"
IMAGE = "https://example.com/a.png"


@asynccontextmanager
async def hook(answers: list[int]) -> AsyncIterator[tuple[str, list[tuple[float, bytes]]]]:
    """A receiver answering ``answers`` in turn (then 200); yields its URL and the calls."""
    calls: list[tuple[float, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        calls.append((time.monotonic(), await request.read()))
        status = answers.pop(0) if answers else 200
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook/{token}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook/t", calls
    finally:
        await runner.cleanup()


async def create(fake: FakeProvider, callback_url: str, prompt: str = "Make it blue") -> str:
    body = {"model": "qwen-image-edit-plus", "prompt": prompt, "image_urls": [IMAGE]}
    body["callback_url"] = callback_url
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.url}/v1/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        task_id: str = (await resp.json())["id"]
        return task_id


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(api_key=KEY, latency=0.05, estimated_time=None) as server:
        yield server


@pytest.mark.parametrize("prompt", ["Make it blue", "Make it blue [filter]"])
async def test_the_callback_body_is_the_task_answer(fake: FakeProvider, prompt: str) -> None:
    """The body POSTed when the task ends is what GET /v1/tasks/{id} answers then."""
    async with hook([]) as (url, calls):
        task_id = await create(fake, url, prompt)
        await until(lambda: calls)
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{fake.url}/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"}
            ) as resp,
        ):
            polled = await resp.json()
    sent = msgspec.json.decode(calls[0][1])
    assert sent == polled
    assert sent["id"] == task_id and sent["status"] in ("completed", "failed")
    assert fake.stats.callbacks_delivered == 1
    record = fake.stats.snapshot()["jobs"][0]
    assert record["callback_url"] == url and record["callback_delivered_at"] is not None


async def test_non_2xx_is_retried_with_doubling_waits(fake: FakeProvider) -> None:
    """A 503 and a 404 are retried after base and 2 x base seconds; the third try's 2xx
    ends the delivery."""
    fake.faults = Faults(callback_retry_base=0.05)
    async with hook([503, 404]) as (url, calls):
        await create(fake, url)
        # Counted once the third answer is read: the delivery is over, no fourth call comes.
        await until(lambda: fake.stats.callbacks_delivered == 1)
    times = [t for t, _ in calls]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1
    stats = fake.stats
    assert (stats.callbacks_sent, stats.callbacks_refused, stats.callbacks_delivered) == (3, 2, 1)


async def test_delivery_gives_up_after_three_retries(fake: FakeProvider) -> None:
    """Four attempts in all (1 + 3 retries), then nothing more."""
    fake.faults = Faults(callback_retry_base=0.01)
    async with hook([500] * 10) as (url, calls):
        await create(fake, url)
        # The fourth refusal is counted as the last attempt ends: nothing can follow.
        await until(lambda: fake.stats.callbacks_refused == 4)
    assert len(calls) == 4 and fake.stats.callbacks_delivered == 0


async def test_an_unreachable_receiver_counts_as_failed_and_is_retried(
    fake: FakeProvider,
) -> None:
    """No server at the URL: each attempt fails (connection refused) and is retried."""
    fake.faults = Faults(callback_retry_base=0.01, callback_retries=2)
    async with hook([]) as (url, _):
        pass  # closed again: nobody listens there now
    await create(fake, url)
    await until(lambda: fake.stats.callbacks_failed == 3)


async def test_faults_drop_delay_and_duplicate(fake: FakeProvider) -> None:
    """callback_drop sends nothing; callback_delay holds the first attempt;
    callback_duplicate delivers twice."""
    async with hook([]) as (url, calls):
        fake.faults = Faults(callback_drop=1.0)
        await create(fake, url)
        fake.faults = Faults(callback_delay=0.3, callback_duplicate=1.0)
        started = time.monotonic()
        await create(fake, url)
        await until(lambda: len(calls) == 2)
    assert fake.stats.callbacks_dropped == 1
    assert all(t - started >= 0.3 + 0.05 for t, _ in calls)
    assert calls[0][1] == calls[1][1]


async def test_other_hosts_are_accepted_and_never_called(fake: FakeProvider) -> None:
    """An https callback on a public host passes validation and is never called (no test
    reaches the internet); http is allowed on loopback only."""
    await create(fake, "https://hooks.example.com/done")
    await until(lambda: fake.stats.callbacks_undeliverable == 1)
    assert fake.stats.callbacks_sent == 0


@pytest.mark.parametrize(
    "field", ["callback_drop", "callback_duplicate", "callback_out_of_order", "callback_delay"]
)
def test_callback_faults_are_checked(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Faults(**{field: -1.0})
