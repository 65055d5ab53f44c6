"""Status requests paced by what the provider accepts: generous, halved on 429, recovering."""

from __future__ import annotations

import itertools
import math

import pytest
from aiohttp import web
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._pacing import AdaptiveRate, Pace

URL = "https://example.com/a.png"


def test_the_defaults_put_no_constant_cap_on_status_requests() -> None:
    """No default status rate or concurrency: the pace starts at 1,000/s (five times the old
    cap of 200/s) and status concurrency follows max_in_flight."""
    config = qe.ClientConfig()
    assert config.poll_rate is None
    assert config.poll_concurrency is None
    client = qe.QwenEditClient("evolink", api_key=API_KEY, max_in_flight=5000)
    assert client._poller.rate.rate == 1000.0
    assert client._poller._concurrency == 5000
    # A second's burst goes out without waiting, and the next request waits its turn.
    pace = client._poller.rate
    assert max(pace.delay(now=5.0) for _ in range(1000)) == 0.0
    assert pace.delay(now=5.0) == pytest.approx(0.001)


def test_a_user_cap_and_a_documented_limit_are_ceilings() -> None:
    pace = AdaptiveRate(ceiling=20.0)
    assert pace.rate == 20.0
    for _ in range(1000):
        pace.pace.next_at = math.inf  # the pace is the bottleneck
        pace.accepted()
    assert pace.rate == 20.0
    client = qe.QwenEditClient("evolink", api_key=API_KEY, poll_rate=50.0)
    assert client._poller.rate.ceiling == 50.0


def test_429_halves_the_rate_once_per_burst_and_never_below_the_floor() -> None:
    pace = AdaptiveRate(start=100.0, cooldown=0.5)
    pace.limited(None, now=10.0)
    pace.limited(None, now=10.1)  # the same burst: one signal
    assert pace.rate == 50.0
    pace.limited(None, now=10.6)
    assert pace.rate == 25.0
    for k in range(20):
        pace.limited(None, now=11.0 + k)
    assert pace.rate == 1.0


def test_retry_after_pauses_every_status_request() -> None:
    pace = AdaptiveRate(start=1000.0)
    t = 100.0
    pace.limited(3.0, now=t)
    assert pace.delay(now=t) == pytest.approx(3.0)
    assert pace.delay(now=t + 2.0) == pytest.approx(1.0)
    assert pace.delay(now=t + 4.0) < 0.01


def test_the_rate_recovers_while_the_provider_accepts() -> None:
    """After a cut, accepted requests (while the bucket holds requests back) grow the rate
    by about a tenth per second until it is back."""
    pace = AdaptiveRate(start=100.0)
    pace.limited(None, now=0.0)
    assert pace.rate == 50.0
    seconds = 0
    while pace.rate < 100.0:
        for _ in range(int(pace.rate)):  # one second's worth of answers
            pace.pace.next_at = math.inf  # the pace is the bottleneck
            pace.accepted()
        seconds += 1
    assert 5 <= seconds <= 10
    # Not binding (turns to spare): no growth past what is used.
    pace.pace.next_at = -math.inf
    rate = pace.rate
    pace.accepted()
    assert pace.rate == rate


async def test_status_429s_slow_the_poller_and_jobs_still_finish() -> None:
    """A real server that answers the first status requests with 429: the client halves
    its status pace, keeps polling, and every job ends with its result."""
    counter = itertools.count(1)
    status_calls = 0
    limited = 0

    async def create(request: web.Request) -> web.Response:
        return web.json_response({"id": f"task-{next(counter)}", "status": "pending"})

    async def status(request: web.Request) -> web.Response:
        nonlocal status_calls, limited
        status_calls += 1
        if status_calls <= 6:
            limited += 1
            return web.json_response(
                {"error": {"code": "rate_limit_exceeded", "message": "Too many requests"}},
                status=429,
            )
        return web.json_response(
            {
                "id": request.match_info["id"],
                "status": "completed",
                "progress": 100,
                "results": ["https://example.com/out.png"],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/images/generations", create)
    app.router.add_get("/v1/tasks/{id}", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with qe.QwenEditClient(
            "evolink",
            api_key=API_KEY,
            base_url=f"http://127.0.0.1:{port}",
            max_in_flight=4,
            poll_initial=0.01,
        ) as client:
            requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(4)]
            outcomes = [o async for o in client.edit_many(requests)]
            rate = client._poller.rate.rate
    finally:
        await runner.cleanup()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert limited == 6
    assert rate < 1000.0  # cut by the 429s (at most once per half second)


def test_one_pace_spaces_creates_and_status_requests() -> None:
    """Creates (the adaptive limits) and status requests (the poller) are held back by the
    same rate limiter, Pace: a burst allowance, then one turn every 1/rate."""
    client = qe.QwenEditClient("evolink", api_key=API_KEY)
    assert type(client._poller.rate.pace) is Pace
    assert type(client._limits._pace_of_creates) is Pace  # type: ignore[attr-defined]
    pace = Pace()
    waits = [pace.take(now=0.0, rate=4.0, tolerance=0.5) for _ in range(5)]
    assert waits == [0.0, 0.0, 0.0, 0.25, 0.5]
    assert pace.binding(now=0.0, tolerance=0.5)
    assert not pace.binding(now=2.0, tolerance=0.5)
    pace.resume_at(10.0, tolerance=0.5)
    assert pace.take(now=2.0, rate=4.0, tolerance=0.5) == 8.0
