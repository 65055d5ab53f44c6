"""Adaptive concurrency and rate: slow start, AIMD, refusals told apart, ceilings."""

from __future__ import annotations

import time

import pytest
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async import _learning
from qwen_edit_async._error_map import api_error, limit_kind
from qwen_edit_async._learning import Learned
from qwen_edit_async._limits import LocalLimits
from qwen_edit_async.providers import get_provider
from qwen_edit_async.testing import FakeProvider
from qwen_edit_async.testing._fake_dialects import FAKE_DIALECTS
from qwen_edit_async.testing._faults import Faults
from qwen_edit_async.testing._problems import Problem
from qwen_edit_async.testing._quota import BURST_MESSAGE, RATE_MESSAGE

URL = "https://example.com/a.png"


def client_for(fake: FakeProvider, provider: str, **options: object) -> qe.QwenEditClient:
    return qe.QwenEditClient(provider, api_key=API_KEY, base_url=fake.url, **options)  # type: ignore[arg-type]


def requests(count: int) -> list[qe.EditRequest]:
    return [qe.EditRequest(images=[URL], prompt=f"edit {i}") for i in range(count)]


# -- the arithmetic ---------------------------------------------------------------------


def test_slow_start_grows_by_two_per_accepted_create_up_to_the_ceiling() -> None:
    """Before any refusal each accepted create adds two slots, never above the ceiling; an
    unused limit does not grow."""
    state = Learned(in_flight=4.0, rate=4.0)
    _learning.accepted(state, 0.0, ceiling=7, rate_cap=1e9, in_flight_bound=True,
                     rate_bound=False)  # fmt: skip
    assert state.in_flight == 6.0
    for _ in range(3):
        _learning.accepted(state, 0.0, ceiling=7, rate_cap=1e9, in_flight_bound=True,
                         rate_bound=False)  # fmt: skip
    assert state.in_flight == 7.0 and state.rate == 4.0
    assert not _learning.accepted(
        state, 0.0, ceiling=64, rate_cap=1e9, in_flight_bound=False, rate_bound=False
    )


def test_a_concurrency_refusal_sets_the_limit_to_the_jobs_running_then_probes_later() -> None:
    """A concurrency 429 with 8 other jobs running sets the limit to 8; it holds for the
    hold time, then grows again, faster the longer no refusal comes."""
    state = Learned(in_flight=20.0, rate=4.0)
    _learning.refused(state, 100.0, "concurrency", others=8, retry_after=None)
    assert state.in_flight == 8.0

    def grow(now: float) -> float:
        for _ in range(50):
            _learning.accepted(state, now, ceiling=64, rate_cap=1e9, in_flight_bound=True,
                             rate_bound=False)  # fmt: skip
        return state.in_flight

    assert grow(101.0) == 8.0  # still holding
    assert 8.0 < grow(100.0 + _learning.HOLD + 1.0) <= 9.0
    assert grow(100.0 + _learning.HOLD + 4.0) == pytest.approx(8.0 + 15.0)
    assert grow(1000.0) == 64.0  # never above the ceiling


def test_a_rate_refusal_cuts_the_rate_once_per_burst_and_retry_after_cools_down() -> None:
    """A rate 429 cuts the rate to just under the creates accepted in the last second, at
    least to RATE_CUT of it (several refusals within a second cut once); unmeasured, the first one
    halves it; a Retry-After sets the cooldown; the rate never grows above submit_rate."""
    state = Learned(in_flight=4.0, rate=10.0)
    _learning.refused(state, 50.0, "rate", others=3, retry_after=2.0, measured=9.5)
    _learning.refused(state, 50.5, "rate", others=3, retry_after=None, measured=3.0)
    assert state.rate == pytest.approx(10.0 * _learning.RATE_CUT)
    assert state.cooldown_until == 52.0 and state.in_flight == 4.0
    _learning.refused(state, 52.0, "rate", others=3, retry_after=None, measured=5.0)
    assert state.rate == 5.0 * _learning.MEASURED_SHARE
    _learning.refused(state, 54.0, "rate", others=3, retry_after=None)
    assert state.rate == pytest.approx(5.0 * _learning.MEASURED_SHARE * _learning.RATE_CUT)
    fresh = Learned(in_flight=4.0, rate=30.0)
    _learning.refused(fresh, 1.0, "rate", others=3, retry_after=None)
    assert fresh.rate == 15.0
    state = Learned(in_flight=4.0, rate=4.0)
    for _ in range(20):
        _learning.accepted(state, 0.0, ceiling=8, rate_cap=5.0, in_flight_bound=False,
                         rate_bound=True)  # fmt: skip
    assert state.rate == 5.0


@pytest.mark.parametrize("provider", ["dashscope", "modelstream", "evolink", "vtrix"])
@pytest.mark.parametrize(
    ("problem", "kind"),
    [
        (Problem("concurrency", "Too many concurrent tasks: at most 8 may run."), "concurrency"),
        (Problem("rate_quota", RATE_MESSAGE), "rate"),
        (Problem("rate_quota", BURST_MESSAGE), "rate"),
        (Problem("rate_limit", "Requests throttling triggered."), None),
    ],
)  # fmt: skip
def test_each_dialect_tells_a_concurrency_429_from_a_rate_429(
    provider: str, problem: Problem, kind: str | None
) -> None:
    """The 429 each dialect answers for the fake's quota, rate limit and burst guard reads
    back as a RateLimitError whose ``limit`` names which limit refused it."""
    status, body = FAKE_DIALECTS[provider].error(problem, "rid", Faults())
    import msgspec

    error = get_provider(provider).parse_error(status, {}, msgspec.json.encode(body))
    assert isinstance(error, qe.RateLimitError)
    assert error.limit == kind
    assert limit_kind("Request rate increased too quickly") == "rate"
    other = api_error(provider="x", status=429, code=None, message="slow down")
    assert isinstance(other, qe.RateLimitError) and other.limit is None


# -- against the fake's hidden limits ----------------------------------------------------


@pytest.mark.slow  # over 2.5 s on 2 cores (pyproject's rule for the marker)
async def test_a_burst_guard_ends_the_unpaced_start_and_the_rate_is_learned() -> None:
    """Slow start without a rate: the first round trip sends INITIAL_IN_FLIGHT creates, each
    accepted one lets at most two more go, so a provider that refuses a rate rising too
    quickly (a burst guard of 4 at 20 creates/s) refuses a few creates of the second round,
    not a burst of max_in_flight. The first rate refusal starts the pacing from what the
    provider took, and every job succeeds."""
    qe.set_testing(False)
    async with FakeProvider(api_key=API_KEY, latency=0.05, max_rate=20, burst=4) as fake:
        async with client_for(fake, "vtrix", max_in_flight=64) as client:
            outcomes = [o async for o in client.edit_many(requests(40))]
            stats = client.statistics()
        refused = fake.stats.refused_rate
    assert [o.error for o in outcomes if not o.ok] == []
    assert 0 < refused <= 2 * _learning.INITIAL_IN_FLIGHT + 4, refused
    assert stats.submit_rate_limit is not None and stats.submit_rate_limit <= 25


@pytest.mark.slow
async def test_a_hidden_concurrency_quota_is_learned_without_losing_jobs() -> None:
    """Against a quota of 6 the client is never told, with max_in_flight=64: every job
    succeeds (none fails with RateLimitError after its retries, as with a fixed 64), few
    creates are refused, and statistics() shows a limit near the quota."""
    async with FakeProvider(api_key=API_KEY, latency=0.3, max_running=6) as fake:
        async with client_for(fake, "evolink", max_in_flight=64) as client:
            outcomes = [o async for o in client.edit_many(requests(60))]
            stats = client.statistics()
        refused = fake.stats.refused_concurrency
    assert [o.error for o in outcomes if not o.ok] == []
    assert refused <= 12, refused
    assert stats.rate_limited == refused
    assert 5 <= stats.in_flight_limit <= 8, stats


async def test_a_fixed_max_in_flight_above_the_quota_loses_jobs() -> None:
    """The same run with adaptive_limits=False (the old behaviour) hammers the quota: many
    refusals, and jobs fail with RateLimitError once their attempts run out. This is the
    baseline the test above improves on."""
    async with FakeProvider(api_key=API_KEY, latency=0.3, max_running=6) as fake:
        client = client_for(fake, "evolink", max_in_flight=64, adaptive_limits=False)
        async with client:
            outcomes = [o async for o in client.edit_many(requests(60))]
        refused = fake.stats.refused_concurrency
    assert refused > 60
    assert any(isinstance(o.error, qe.RateLimitError) for o in outcomes)


@pytest.mark.slow
async def test_a_hidden_rate_limit_with_a_burst_guard_is_learned() -> None:
    """Against 10 creates/s with a burst guard of 2 the client is never told: every job
    succeeds, at most a few creates are refused, and the learned rate stays near 10/s."""
    qe.set_testing(False)
    async with FakeProvider(api_key=API_KEY, latency=0.05, max_rate=10, burst=2) as fake:
        start = time.monotonic()
        async with client_for(fake, "vtrix", max_in_flight=16) as client:
            outcomes = [o async for o in client.edit_many(requests(30))]
            stats = client.statistics()
        elapsed = time.monotonic() - start
        refused = fake.stats.refused_rate
    assert [o.error for o in outcomes if not o.ok] == []
    assert refused <= 4, refused
    assert stats.submit_rate_limit is not None and stats.submit_rate_limit <= 12
    assert elapsed < 6.0, elapsed


async def test_the_limit_grows_to_max_in_flight_and_never_above() -> None:
    """Without a quota the learned limit reaches max_in_flight (the ceiling) and the fake
    never sees more jobs than that."""
    async with (
        FakeProvider(api_key=API_KEY, latency=0.05) as fake,
        client_for(fake, "vtrix", max_in_flight=9) as client,
    ):
        outcomes = [o async for o in client.edit_many(requests(80))]
        stats = client.statistics()
    assert all(o.ok for o in outcomes)
    assert fake.stats.peak_running == 9
    assert stats.in_flight_limit == 9
    assert stats.submit_rate_limit is None  # nothing refused a rate: creates are not paced


async def test_fixed_limits_keep_max_in_flight_from_the_start() -> None:
    """adaptive_limits=False: max_in_flight slots from the first job, no slow start."""
    limits = LocalLimits(max_in_flight=12, submit_rate=None, adaptive=False)
    assert limits.snapshot().in_flight == 12 and limits.snapshot().rate is None
    adaptive = LocalLimits(max_in_flight=12, submit_rate=3.0)
    assert adaptive.snapshot().in_flight == _learning.INITIAL_IN_FLIGHT
    assert adaptive.snapshot().rate == 3.0  # submit_rate caps even the first rate


async def test_slots_are_given_back_on_every_path() -> None:
    """Jobs that fail, are cancelled or time out give their slot back: nothing in flight
    after the batch, whatever happened."""
    async with FakeProvider(api_key=API_KEY, latency=0.05) as fake:
        prompts = ["ok", "[fail]", "[stuck]", "[filter]"] * 5
        reqs = [qe.EditRequest(images=[URL], prompt=p) for p in prompts]
        client = client_for(fake, "vtrix", max_in_flight=4, job_timeout=0.5, poll_initial=0.05)
        async with client:
            outcomes = [o async for o in client.edit_many(reqs)]
            assert client.statistics().in_flight == 0
    assert sum(o.ok for o in outcomes) == 5


async def test_slots_waiting_for_the_pace_do_not_grow_the_concurrency_limit() -> None:
    """An accepted create grows the concurrency limit only when the jobs active at the
    provider filled it: slots whose jobs still wait for the submission pace say nothing
    about the provider's quota (counting them let the limit run far past a quota)."""
    import anyio

    qe.set_testing(False)
    limits = LocalLimits(max_in_flight=64, submit_rate=None)
    limits.state.rate = _learning.INITIAL_RATE  # paced since a rate refusal
    holders = [object() for _ in range(4)]
    assert all(limits.try_acquire(h) for h in holders)
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(limits.pace)  # at 4/s: one goes at once, two wait their turn
        await anyio.wait_all_tasks_blocked()  # each has gone or waits its turn
        limits.accepted(holders[0])
        assert limits.snapshot().in_flight == _learning.INITIAL_IN_FLIGHT
    limits.accepted(holders[1])  # nothing pacing now: four active fill the limit
    assert limits.snapshot().in_flight == _learning.INITIAL_IN_FLIGHT + _learning.SLOW_START_STEP
