"""Status requests paced by what the provider accepts: generous, halved on 429, recovering."""

from __future__ import annotations

import itertools
import math

import pytest
from _loopback import completed, evolink_app, serve
from aiohttp import web
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._pacing import AdaptiveRate, Pace

URL = "https://example.com/a.png"


def test_the_defaults_put_no_constant_cap_on_status_requests() -> None:
    """No default status rate and no fixed status concurrency: status requests are not paced
    before the provider answers one with 429, however many come due at once, and at most a
    thirty-second of max_in_flight (at least 64) are in flight at once."""
    config = qe.ClientConfig()
    assert config.poll_rate is None
    assert config.poll_concurrency is None
    client = qe.QwenEditClient("evolink", api_key=API_KEY, max_in_flight=5000)
    assert client._poller._concurrency == 156
    pace = client._poller.rate
    assert not pace.paced
    # A wave of 5,000 checks due together (5,000 tasks started together) all go at once.
    assert max(pace.delay(now=5.0) for _ in range(5000)) == 0.0
    assert max(pace.delay(now=5.5) for _ in range(3000)) == 0.0


def test_the_first_429_paces_at_half_of_the_last_second() -> None:
    """The first 429 starts the pace from what the provider took: half the requests sent in
    the last second, without a burst; later 429s halve it as before."""
    pace = AdaptiveRate()
    for k in range(2000):  # 2,000 requests over a second, then 600 in the next half
        pace.delay(now=10.0 + k / 2000)
    for k in range(600):
        pace.delay(now=11.0 + k / 1200)
    pace.limited(None, now=11.5)
    # The last second: the 600 of this window and half of the 2,000 before.
    assert pace.paced
    assert pace.rate == pytest.approx((600 + 1000) / 2)
    assert pace.delay(now=11.5) == pytest.approx(1 / 800)
    pace.limited(None, now=11.6)  # the same burst of refusals: one signal
    assert pace.rate == pytest.approx(800)
    pace.limited(None, now=12.1)
    assert pace.rate == pytest.approx(400)
    # Nothing sent for a while: the first 429 starts at the floor.
    idle = AdaptiveRate(floor=2.0)
    idle.delay(now=0.0)
    idle.limited(None, now=30.0)
    assert idle.rate == 2.0


def test_a_ceiling_paces_from_the_first_request() -> None:
    pace = AdaptiveRate(ceiling=100.0)
    assert pace.paced
    assert max(pace.delay(now=0.0) for _ in range(100)) == 0.0
    assert pace.delay(now=0.0) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("max_in_flight", "configured", "expected"),
    [
        (20000, None, 625),
        (5000, None, 156),
        (200, None, 64),
        (20, None, 20),
        (200, 8, 8),
        (200, 500, 200),
    ],
)
def test_status_concurrency_follows_max_in_flight(
    max_in_flight: int, configured: int | None, expected: int
) -> None:
    """A wave of checks due together waits for a thirty-second of max_in_flight status workers
    (at least 64) rather than opening a connection per check; poll_concurrency replaces it;
    never more than max_in_flight. The client's connection pool is sized to match."""
    client = qe.QwenEditClient(
        "evolink", api_key=API_KEY, max_in_flight=max_in_flight, poll_concurrency=configured
    )
    assert client._poller._concurrency == expected


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


@pytest.mark.slow  # over 2.5 s on 2 cores (pyproject's rule for the marker)
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
        return web.json_response(completed(request.match_info["id"]))

    async with (
        serve(evolink_app(create, status)) as base_url,
        qe.QwenEditClient(
            "evolink", api_key=API_KEY, base_url=base_url, max_in_flight=4, poll_initial=0.01
        ) as client,
    ):
        requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(4)]
        outcomes = [o async for o in client.edit_many(requests)]
        rate = client._poller.rate.rate
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert limited == 6
    assert rate < 100.0  # paced from the first 429: half of the few requests sent before


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
