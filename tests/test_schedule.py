"""The poll schedule: sane plans, the hint before learning, and learning that pays.

Everything runs in simulated time (a small discrete-event loop below), so the ratios are exact
and no test sleeps or reads a clock.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Callable

import pytest

from qwen_edit_async._schedule import PollPlan, PollSchedule

MIN_GAP = 0.05


@dataclasses.dataclass
class Run:
    """Per finished task, in acceptance order: latency, detection lag and status requests."""

    latency: list[float]
    lag: list[float]
    polls: list[int]
    gaps: list[float] = dataclasses.field(default_factory=list)  # between a task's requests

    def tail(self, start: int) -> tuple[float, float]:
        """Polls per task and detection efficiency (mean latency / mean time to detection)."""
        lat, lag, polls = self.latency[start:], self.lag[start:], self.polls[start:]
        return sum(polls) / len(polls), sum(lat) / (sum(lat) + sum(lag))


def simulate(
    schedule: PollSchedule,
    latency: Callable[[random.Random], float],
    *,
    in_flight: int,
    jobs: int,
    hint: float | None = None,
    seed: int = 1,
    recheck: bool = False,
) -> Run:
    """Keep ``in_flight`` tasks running; each status request is answered at once."""
    rng = random.Random(seed)
    run = Run([0.0] * jobs, [0.0] * jobs, [0] * jobs)
    heap: list[tuple[float, int, int, float, PollPlan]] = []
    last_sent: dict[int, float] = {}
    started = 0

    def start(now: float) -> None:
        nonlocal started
        index, started = started, started + 1
        run.latency[index] = latency(rng)
        plan = schedule.plan(hint)
        heapq.heappush(heap, (now + plan.at(0), index, 0, now, plan))

    for _ in range(in_flight):
        start(0.0)
    while heap:
        now, index, attempt, accepted, plan = heapq.heappop(heap)
        if recheck:
            later = plan.recheck(attempt, now - accepted)
            if accepted + later > now:
                heapq.heappush(heap, (accepted + later, index, attempt, accepted, plan))
                continue
        run.polls[index] += 1
        if index in last_sent:
            run.gaps.append(now - last_sent[index])
        last_sent[index] = now
        done = now - accepted >= run.latency[index]
        schedule.observe(plan, attempt, done, elapsed=now - accepted)
        if done:
            run.lag[index] = now - accepted - run.latency[index]
            if started < jobs:
                start(now)
        else:
            due = accepted + plan.at(attempt + 1)
            heapq.heappush(heap, (due, index, attempt + 1, accepted, plan))
    return run


def lognormal(median: float, sigma: float) -> Callable[[random.Random], float]:
    return lambda rng: median * math.exp(sigma * rng.gauss(0.0, 1.0))


def assert_sane(plan: PollPlan, attempts: int = 80, max_interval: float = 10.0) -> None:
    times = [plan.at(k) for k in range(attempts)]
    assert times[0] >= MIN_GAP
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(MIN_GAP - 1e-9 <= gap <= max_interval + 1e-9 for gap in gaps), gaps


def test_plans_never_decrease_and_gaps_stay_between_50ms_and_the_cap() -> None:
    """Before and after learning, with or without a hint, a task still running is polled
    for ever, at least 50 ms and at most ``max_interval`` apart."""
    schedule = PollSchedule(initial=1.0, max_interval=4.0, rng=random.Random(0))
    for hint in (None, 0.01, 30.0, 1e4):
        assert_sane(schedule.plan(hint), max_interval=4.0)
    simulate(schedule, lognormal(0.5, 0.3), in_flight=50, jobs=600)
    assert schedule.learned
    for hint in (None, 30.0):
        plan = schedule.plan(hint)
        for k in range(80):  # a task that never ends, told so at every answer
            plan.at(k)
            schedule.observe(plan, k, False)
        assert_sane(plan, max_interval=4.0)
        assert plan.at(79) > 100.0  # it backs off instead of hammering


def test_before_learning_the_first_check_comes_from_the_hint_or_initial() -> None:
    """With nothing learned, the first check is early in the hint (hints run long), else
    early in ``initial``; it does not depend on tasks that never answered."""
    schedule = PollSchedule(initial=2.0, rng=random.Random(1))
    assert not schedule.learned
    hinted = [schedule.plan(30.0).at(0) for _ in range(50)]
    plain = [schedule.plan(None).at(0) for _ in range(50)]
    assert min(hinted) >= 3.0 and max(hinted) <= 7.5
    assert min(plain) >= 0.6 and max(plain) <= 1.4
    assert not schedule.learned


def test_fixed_latency_is_learned_down_to_about_one_poll_per_task() -> None:
    """Fixed 0.5 s tasks: after 1,000 tasks the first check sits just after 0.5 s and a task
    needs at most 1.3 status requests, detected at over 90% of the ideal rate."""
    schedule = PollSchedule(initial=1.0, rng=random.Random(2))
    run = simulate(schedule, lambda _rng: 0.5, in_flight=50, jobs=2000)
    polls, efficiency = run.tail(1000)
    assert polls <= 1.3
    assert efficiency >= 0.9
    first = [schedule.plan(None).at(0) for _ in range(20)]
    assert all(0.45 <= t <= 0.6 for t in first), first


def test_lognormal_latency_costs_at_most_two_polls_at_a_high_detection_rate() -> None:
    """Lognormal (median 0.5 s, sigma 0.3): at most 2 status requests per task once
    learned, detection at over 80% of the ideal rate, and the start-up stays cheap."""
    schedule = PollSchedule(initial=1.0, rng=random.Random(3))
    run = simulate(schedule, lognormal(0.5, 0.3), in_flight=100, jobs=2500)
    polls, efficiency = run.tail(500)
    assert polls <= 2.0
    assert efficiency >= 0.8
    all_polls, all_efficiency = run.tail(0)
    assert all_polls <= 2.1
    assert all_efficiency >= 0.78
    assert min(run.gaps) >= MIN_GAP - 1e-9 and max(run.gaps) <= 10.0 + 1e-9


def test_a_hint_six_times_too_long_is_overcome() -> None:
    """The provider says 30 s but tasks take about 5 s: the first wave is not held to the
    hint, and once learned, plans ignore it."""
    schedule = PollSchedule(initial=1.0, rng=random.Random(4))
    run = simulate(schedule, lognormal(5.0, 0.3), in_flight=100, jobs=600, hint=30.0)
    first_wave = run.lag[:100]
    assert sum(first_wave) / len(first_wave) < 2.5  # not ~25 s late
    polls, efficiency = run.tail(300)
    assert polls <= 2.1
    assert efficiency >= 0.8
    first = sorted(schedule.plan(30.0).at(0) for _ in range(21))
    assert 4.0 <= first[10] <= 6.5


def test_recheck_lets_most_tasks_wait_for_the_scouts() -> None:
    """With ``recheck=True`` a non-scout task pushes its due request back while nothing is
    learned, never earlier than asked, and the first wave spends fewer requests."""
    latency = lognormal(5.0, 0.3)
    plain = simulate(PollSchedule(rng=random.Random(5)), latency, in_flight=400, jobs=400)
    schedule = PollSchedule(rng=random.Random(5), recheck=True)
    plan = next(p for p in (schedule.plan() for _ in range(200)) if not p._scout)
    first = plan.at(0)
    later = plan.recheck(0, first)
    assert later > first and plan.at(0) == later
    waited = simulate(
        PollSchedule(rng=random.Random(5), recheck=True),
        latency,
        in_flight=400,
        jobs=400,
        recheck=True,
    )
    assert sum(waited.polls) < 0.75 * sum(plain.polls)
    assert sum(waited.lag) < 1.3 * sum(plain.lag)
    assert min(waited.gaps) >= MIN_GAP - 1e-9 and max(waited.gaps) <= 10.0 + 1e-9


def test_without_recheck_mode_a_due_request_is_always_sent() -> None:
    """A schedule made without ``recheck=True`` never pushes a request back."""
    schedule = PollSchedule(rng=random.Random(6))
    plan = schedule.plan()
    assert plan.recheck(0, plan.at(0)) == plan.at(0)


@pytest.mark.parametrize("recheck", [False, True])
def test_same_seed_same_plans(recheck: bool) -> None:
    """Plans depend only on the answers and the given random generator."""

    def times() -> list[float]:
        schedule = PollSchedule(rng=random.Random(7), recheck=recheck)
        simulate(schedule, lognormal(0.5, 0.3), in_flight=20, jobs=200, recheck=recheck)
        return [schedule.plan().at(k) for k in range(3)]

    assert times() == times()


def test_latency_that_doubles_is_followed() -> None:
    """When tasks suddenly take twice as long, the first check moves up to match."""
    schedule = PollSchedule(rng=random.Random(8))
    simulate(schedule, lognormal(0.5, 0.3), in_flight=50, jobs=800)
    before = schedule.plan().at(0)
    run = simulate(schedule, lognormal(1.0, 0.3), in_flight=50, jobs=1500, seed=9)
    after = schedule.plan().at(0)
    assert 1.6 <= after / before <= 2.5
    assert max(run.polls) <= 15
