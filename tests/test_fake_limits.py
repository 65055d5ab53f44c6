"""The fake's account limits that a client cannot see: a concurrent-task quota, requests
per second with a burst guard, changeable while running, each refusal counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

import qwen_edit_async.testing as testing
from qwen_edit_async.testing import FakeProvider
from qwen_edit_async.testing._cli import build_parser, fake_from_args
from qwen_edit_async.testing._pytest import FakeFactory
from qwen_edit_async.testing._quota import BURST_MESSAGE, RATE_MESSAGE, RateGuard

fake_provider_factory = testing.fake_provider_factory

AUTH = {"Authorization": "Bearer sk-any"}
EVOLINK = {"model": "qwen-image-edit-plus", "prompt": "p", "image_urls": ["https://e.com/a.png"]}
DASHSCOPE = {
    "model": "qwen-image-edit-plus",
    "input": {"messages": [{"role": "user", "content": [{"image": "https://e.com/a.png"}]}]},
}
DASHSCOPE["input"]["messages"][0]["content"].append({"text": "p"})  # type: ignore[index]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def create(session: aiohttp.ClientSession, fake: FakeProvider) -> tuple[int, str]:
    async with session.post(fake.url + "/v1/images/generations", json=EVOLINK) as resp:
        body = await resp.json()
    message = body.get("error", {}).get("message", "") if resp.status != 200 else ""
    return resp.status, message


def test_rate_guard_window_and_burst() -> None:
    """max_rate counts admitted requests over a sliding second; the burst guard refuses a
    rate that rises faster than its token bucket refills, even under max_rate."""
    guard = RateGuard()
    answers = [guard.check(now=0.0, max_rate=3, burst=None) for _ in range(4)]
    assert answers == [None, None, None, RATE_MESSAGE]
    assert guard.check(now=0.5, max_rate=3, burst=None) == RATE_MESSAGE
    assert guard.check(now=1.0, max_rate=3, burst=None) is None  # the first three left
    guard = RateGuard()
    answers = [guard.check(now=0.0, max_rate=10, burst=2) for _ in range(3)]
    assert answers == [None, None, BURST_MESSAGE]
    assert guard.check(now=0.05, max_rate=10, burst=2) == BURST_MESSAGE  # half a token
    assert guard.check(now=0.1, max_rate=10, burst=2) is None
    assert guard.check(now=0.1, max_rate=None, burst=2) is None  # limits off


async def test_max_rate_refuses_and_counts(
    fake_provider_factory: FakeFactory, session: aiohttp.ClientSession
) -> None:
    """Beyond max_rate creates in a second the fake answers 429 in the dialect's shape with
    a rate message, creates no job, and counts the refusal as refused_rate."""
    fake = await fake_provider_factory(max_rate=3)
    answers = [await create(session, fake) for _ in range(5)]
    assert [status for status, _ in answers] == [200, 200, 200, 429, 429]
    assert answers[-1][1] == RATE_MESSAGE
    stats = fake.stats
    assert (stats.jobs_created, stats.refused_rate, stats.rate_limited) == (3, 2, 2)
    assert stats.refused_concurrency == 0


async def test_burst_guard_refuses_a_sudden_burst_under_the_rate(
    fake_provider_factory: FakeFactory, session: aiohttp.ClientSession
) -> None:
    """With max_rate=10 and burst=2, three creates in quick succession: the third is refused as a
    rate that increased too quickly, in DashScope's own error shape."""
    fake = await fake_provider_factory(max_rate=10, burst=2, latency=0.0)
    path = fake.url + "/api/v1/services/aigc/multimodal-generation/generation"
    statuses, bodies = [], []
    for _ in range(3):
        async with session.post(path, json=DASHSCOPE) as resp:
            statuses.append(resp.status)
            bodies.append(await resp.json())
    assert statuses == [200, 200, 429]
    assert bodies[2]["message"] == BURST_MESSAGE and bodies[2]["code"].startswith("Throttling")
    assert fake.stats.refused_rate == 1


async def test_limits_change_while_running_through_the_control_route(
    fake_provider_factory: FakeFactory, session: aiohttp.ClientSession
) -> None:
    """POST /_fake/config sets and clears max_running, max_rate and burst on a running fake;
    refusals of the concurrency quota are counted apart from rate refusals."""
    fake = await fake_provider_factory(latency=5.0)
    assert (await create(session, fake))[0] == 200
    async with session.post(fake.url + "/_fake/config", json={"max_running": 1}) as r:
        assert (await r.json())["max_running"] == 1
    status, message = await create(session, fake)
    assert status == 429 and "concurrent" in message
    async with session.post(
        fake.url + "/_fake/config", json={"max_running": None, "max_rate": 1, "burst": 1}
    ) as r:
        config = await r.json()
    assert (config["max_running"], config["max_rate"], config["burst"]) == (None, 1, 1)
    assert (await create(session, fake))[0] == 200
    assert (await create(session, fake))[0] == 429
    async with session.post(fake.url + "/_fake/config", json={"max_rate": 0}) as r:
        assert r.status == 400  # the rule is named, nothing changed
    assert fake.max_rate == 1
    snap = fake.stats.snapshot(jobs=False)
    assert (snap["refused_concurrency"], snap["refused_rate"], snap["rate_limited"]) == (1, 1, 2)


def test_serve_fake_options_set_the_limits() -> None:
    """``serve-fake --max-running --max-rate --burst`` configure the fake's limits."""
    args = build_parser().parse_args(["--max-running", "8", "--max-rate", "5", "--burst", "2"])
    fake = fake_from_args(args)
    assert (fake.max_running, fake.max_rate, fake.burst) == (8, 5.0, 2)


def test_bad_limits_are_refused() -> None:
    """A rate of zero or a burst below one is a clear error naming the argument."""
    with pytest.raises(ValueError, match="max_rate"):
        FakeProvider(max_rate=0)
    with pytest.raises(ValueError, match="burst"):
        FakeProvider(burst=0)
