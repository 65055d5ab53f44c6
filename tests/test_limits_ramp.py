"""How fast the adaptive limits open up for a provider that refuses nothing.

A 2,000-job batch lasts a few seconds at 200 in flight: a ramp that takes seconds costs a
large share of it. These tests count round trips and accepted creates, never seconds.
"""

from __future__ import annotations

import time

import aiohttp
import anyio
import pytest
from _wait import until

import qwen_edit_async as qe
from qwen_edit_async import _learning
from qwen_edit_async._http import HttpPipe
from qwen_edit_async._learning import Learned
from qwen_edit_async._limits import LocalLimits, Unanswered
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


async def _slots_after_round_trips(rounds: int, *, sent: list[int] | None = None) -> int:
    """Jobs take a slot, send their create (held "in the air" until the round ends) and are
    accepted together at the end of each round; the slots held after ``rounds`` rounds.
    ``sent`` receives the number of creates past the pace at the end of each round."""
    limits = LocalLimits(max_in_flight=1000, submit_rate=None)
    answered = [anyio.Event()]
    went = 0

    async def job(holder: object) -> None:
        nonlocal went
        await limits.acquire(holder)
        await limits.pace()
        went += 1
        await answered[-1].wait()
        limits.accepted(holder)  # keeps its slot: the task runs at the provider

    async with anyio.create_task_group() as group:
        for _ in range(300):
            group.start_soon(job, object())
        for _ in range(rounds):
            await anyio.wait_all_tasks_blocked()
            if sent is not None:
                sent.append(went)
            event = answered[-1]
            answered.append(anyio.Event())
            event.set()
        await anyio.wait_all_tasks_blocked()
        held = limits.in_flight
        group.cancel_scope.cancel()
    return held


async def test_slow_start_doubles_the_creates_in_the_air_each_round_trip() -> None:
    """Before any refusal, each round trip of creates the provider accepts doubles the slots
    (as TCP's slow start doubles its window per round trip). Growing by one slot per
    accepted create only replaced the answered create: 4 more slots per round trip, 16 after
    three round trips, and 200 slots took 50 round trips."""
    assert await _slots_after_round_trips(0) == _learning.INITIAL_IN_FLIGHT
    assert await _slots_after_round_trips(3) >= 8 * _learning.INITIAL_IN_FLIGHT
    assert await _slots_after_round_trips(6) >= 200


async def test_the_rate_does_not_hold_back_the_first_round_trips() -> None:
    """With the real pace (not the tests' shortcut), creates go as fast as slow start lets
    them until a provider refuses a rate: 4, then 12, then 28 past the pace after the first
    three round trips (the creates in the air double: 4, 8, 16). The pace started at 4
    creates/s held them to a dozen in the first second, a fifth of a 2,000-job batch's time
    at 200 in flight."""
    qe.set_testing(False)
    sent: list[int] = []
    await _slots_after_round_trips(3, sent=sent)
    assert sent == [4, 12, 28]


def test_the_rate_reaches_hundreds_per_second_after_few_accepted_creates() -> None:
    """Once a rate refusal made the client pace: below the knee the rate grows gently (so a
    small provider's rate limit is met gently), above it by a share of itself, so 400
    creates/s is reached after 30 accepted creates or fewer (it took 264 at 1.5 creates/s per
    create, 42 with the knee at 15 creates/s)."""
    state = Learned(in_flight=4.0, rate=_learning.INITIAL_RATE)
    accepted = 0
    while state.rate < 400.0:
        _learning.accepted(state, 0.0, ceiling=200, rate_cap=_learning.RATE_MAX,
                         in_flight_bound=False, rate_bound=True)  # fmt: skip
        accepted += 1
        if accepted < 3:  # the first steps are the gentle ones
            assert state.rate == _learning.INITIAL_RATE + accepted * _learning.RATE_STEP
    assert accepted <= 30, accepted


async def _paced_at_once(limits: LocalLimits, count: int) -> int:
    """Start ``count`` creates together: how many got past the pace before any time
    passed (the rest are cancelled)."""
    went = 0

    async def create() -> None:
        nonlocal went
        await limits.pace()
        went += 1

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(create)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    return went


async def test_a_burst_within_the_learned_rate_goes_at_once_and_does_not_grow_it() -> None:
    """At a learned 1,000 creates/s, 40 creates that become ready together (a poll found 40
    tasks done) all go without waiting for the pace; as none waited, the rate is not what
    holds the client back and does not grow. Spacing them 1 ms apart cost one event-loop
    wakeup per create and counted every burst as a reason to raise the rate."""
    qe.set_testing(False)
    limits = LocalLimits(max_in_flight=64, submit_rate=None)
    limits.state.rate, limits.state.in_flight = 1000.0, 64.0
    limits.state.rate_cut_at = 1.0  # learned: past slow start
    limits.state.rate_base = 1000.0
    holders = [object() for _ in range(40)]
    assert all(limits.try_acquire(h) for h in holders)
    assert await _paced_at_once(limits, len(holders)) == len(holders)  # none asleep
    for holder in holders:
        limits.accepted(holder)
    assert limits.state.rate == 1000.0


async def test_a_small_rate_is_still_spaced_evenly() -> None:
    """The burst allowance is a share of a second of the rate: at 4 creates/s (below
    1 / BURST_WINDOW) two ready creates do not go together."""
    qe.set_testing(False)
    limits = LocalLimits(max_in_flight=64, submit_rate=None)
    limits.state.rate = 4.0  # paced since a rate refusal
    assert await _paced_at_once(limits, 2) == 1


@pytest.mark.parametrize("rate", [5.0, 19.0])
def test_no_burst_allowance_below_one_create_per_window(rate: float) -> None:
    assert _learning.burst_tolerance(rate) == 0.0
    assert _learning.burst_tolerance(1000.0) == pytest.approx(_learning.BURST_WINDOW - 0.001)


# -- the synchronous route: creates answered only with their image ------------------------


async def test_a_create_out_without_a_refusal_counts_for_slow_start() -> None:
    """A create sent during slow start counts as accepted once it has been out for
    PROVISIONAL_AFTER without a refusal, and only once: its real answer later does not
    grow the limit again."""
    limits = LocalLimits(max_in_flight=64, submit_rate=None)
    holders = [object() for _ in range(12)]
    never = anyio.Event()

    async def job(holder: object) -> None:
        await limits.acquire(holder)
        await limits.pace()
        limits.sending(holder)
        await never.wait()  # no answer: a synchronous create still making its image

    async with anyio.create_task_group() as group:
        for holder in holders:
            group.start_soon(job, holder)
        await anyio.wait_all_tasks_blocked()
        assert limits.in_flight == _learning.INITIAL_IN_FLIGHT
        await until(lambda: limits.in_flight == 12)  # the first four counted, unanswered
        limit = limits.snapshot().in_flight
        for holder in holders[:4]:
            limits.accepted(holder)  # their answers come: counted already
        assert limits.snapshot().in_flight == limit
        group.cancel_scope.cancel()


async def test_a_quick_refusal_is_not_counted_as_accepted() -> None:
    """A create refused before PROVISIONAL_AFTER never counts: the concurrency refusal sets
    the limit and ends slow start, and no timer is left to grow it afterwards."""
    limits = LocalLimits(max_in_flight=64, submit_rate=None)
    holders = [object() for _ in range(4)]
    for holder in holders:
        assert limits.try_acquire(holder)
        limits.sending(holder)
    await limits.refused(holders[0], "concurrency", None, 0.0, retrying=False)
    assert limits.snapshot().in_flight == 3  # cut: slow start is over
    assert (
        limits._unanswered.pending == 0
    )  # the other creates' timers are gone: nothing counts them


async def test_the_sync_route_opens_up_before_any_image_is_made() -> None:
    """On DashScope (synchronous) an accepted create is answered only with its image. With
    a 30 s job, the client reaches 36 jobs at the provider long before the first answer;
    before, slow start waited for answers and held 4 jobs for the whole first job's time."""
    async with FakeProvider(api_key="sk-test", latency=30.0) as fake:
        client = qe.QwenEditClient(
            "dashscope", api_key="sk-test", base_url=fake.url, max_in_flight=64
        )
        async with client, anyio.create_task_group() as group:

            async def run() -> None:
                requests = [qe.EditRequest(images=[URL], prompt=f"e {i}") for i in range(64)]
                async for _ in client.edit_many(requests):
                    pass

            group.start_soon(run)
            await until(lambda: fake.stats.running >= 36, seconds=8.0)
            group.cancel_scope.cancel()


# -- how long an unanswered create waits: a few measured round trips -----------------------


def test_the_wait_follows_the_measured_round_trip_within_its_bounds() -> None:
    """Four round trips, at least PROVISIONAL_MIN, at most PROVISIONAL_AFTER; none measured
    yet: PROVISIONAL_AFTER."""
    after = _learning.provisional_after
    assert after(None) == _learning.PROVISIONAL_AFTER
    assert after(0.0001) == _learning.PROVISIONAL_MIN  # loopback: the floor
    assert after(0.01) == pytest.approx(4 * 0.01)
    assert after(0.2) == _learning.PROVISIONAL_AFTER  # a provider abroad: as before


async def test_a_create_counts_after_a_few_round_trips_not_a_fixed_tenth() -> None:
    """With a 1 ms round trip measured, a create out for 30 ms without a refusal counts
    when its timer looks (the old rule waited 0.1 s whatever the distance); out for 5 ms,
    it does not, and its timer is set again for the rest of the wait."""
    counted: list[object] = []
    unanswered = Unanswered(lambda holder: counted.append(holder) is None)
    unanswered.round_trip = lambda: 0.001
    early, late = object(), object()
    unanswered.start(early)
    unanswered.start(late)
    now = time.monotonic()
    unanswered._fire(late, now - 0.030)
    assert counted == [late]
    unanswered._fire(early, now - 0.005)
    assert counted == [late] and unanswered.pending == 1  # looked again later
    assert unanswered.answered(late) and not unanswered.answered(early)


async def test_before_any_round_trip_is_measured_a_create_waits_the_full_tenth() -> None:
    """A client's first creates leave before any connection is set up: with nothing
    measured, 30 ms unanswered is not enough; once a round trip is known, the same create
    counts at the next look."""
    counted: list[object] = []
    measured: list[float] = []
    unanswered = Unanswered(lambda holder: counted.append(holder) is None)
    unanswered.round_trip = lambda: measured[0] if measured else None
    holder = object()
    unanswered.start(holder)
    sent = time.monotonic() - 0.030
    unanswered._fire(holder, sent)
    assert counted == [] and unanswered.pending == 1
    measured.append(0.0005)
    unanswered._fire(holder, sent)
    assert counted == [holder]
    unanswered.clear()


async def test_a_client_measures_its_round_trip_to_the_provider() -> None:
    """The client's pipe times the connections it opens and its limits read the quickest:
    on 127.0.0.1 the first creates make the wait the floor, not a tenth of a second."""
    async with (
        FakeProvider(api_key="sk-test", latency=0.0) as fake,
        qe.QwenEditClient(
            "dashscope", api_key="sk-test", base_url=fake.url, max_in_flight=8
        ) as client,
    ):
        pipe = client._calls.pipe
        assert isinstance(pipe, HttpPipe)
        assert pipe.round_trip() is None  # nothing opened yet
        await client.edit(images=[URL], prompt="p")
        seen = pipe.round_trip()
        assert seen is not None and 0.0 < seen < 1.0
        limits = client._calls.limits
        assert isinstance(limits, LocalLimits)
        assert limits._unanswered.round_trip() == seen


async def test_a_shared_session_measures_nothing() -> None:
    """A session the caller shares has its own connector: the pipe reports no round trip
    and slow start keeps the tenth of a second."""
    async with (
        FakeProvider(api_key="sk-test", latency=0.0) as fake,
        aiohttp.ClientSession() as session,
        qe.QwenEditClient(
            "dashscope", api_key="sk-test", base_url=fake.url, max_in_flight=8, session=session
        ) as client,
    ):
        await client.edit(images=[URL], prompt="p")
        pipe = client._calls.pipe
        assert isinstance(pipe, HttpPipe)
        assert pipe.round_trip() is None
