"""The poller in a drain: when far fewer tasks wait than ended lately (the end of a batch),
the last ones are checked sooner than their plan says, within a bounded share of the rate at
which tasks ended; in a steady state, and for a callback's safety net, the plan alone rules."""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

import qwen_edit_async as qe
from qwen_edit_async._poller import Poller
from qwen_edit_async._retry import RetryPolicy
from qwen_edit_async._schedule import PollPlan, PollSchedule
from qwen_edit_async.providers._base import TaskState, TaskStatus
from tests.test_poller import _At  # a plan that is no PollPlan, as a callback's safety net

pytestmark = pytest.mark.timeout(20)

_DONE = TaskStatus("t", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
_RUNNING = TaskStatus("t", TaskState.RUNNING)
#: The slow task answers "done" at this check (1-based).
_LAST_CHECK = 6


def _earliest(planned: float) -> float:
    """The earliest a check planned ``planned`` s after acceptance may go: with the checks
    due within 1% of its time (at most 10 ms), so several leave on one timer."""
    return planned - min(0.01, 0.01 * planned) - 1e-3


class _Recorded(PollSchedule):
    """A schedule that keeps the plans it makes (to compare the checks with them)."""

    def __init__(self) -> None:
        # Median 0.1 s while nothing is learned (the quick tasks below teach it nothing:
        # they wait on plans of their own); each unlearned check at least doubles the last.
        super().__init__(initial=0.1, max_interval=10.0, jitter=0.0, rng=random.Random(1))
        self.plans: list[PollPlan] = []

    def plan(self, hint: float | None = None) -> PollPlan:
        plan = super().plan(hint)
        self.plans.append(plan)
        return plan


class _Provider:
    """Status answers: quick tasks are done at once; ``slow`` runs until its
    :data:`_LAST_CHECK`-th check, whose times are kept; ``other-*`` tasks run until
    :attr:`release` is set."""

    def __init__(self) -> None:
        self.slow_checks: list[float] = []
        self.release = anyio.Event()

    async def status(self, task_id: str) -> TaskStatus:
        if task_id == "slow":
            self.slow_checks.append(time.monotonic())
            return _DONE if len(self.slow_checks) >= _LAST_CHECK else _RUNNING
        if task_id.startswith("other-") and not self.release.is_set():
            return _RUNNING
        return _DONE


@asynccontextmanager
async def _running(provider: _Provider, schedule: PollSchedule) -> AsyncIterator[Poller]:
    poller = Poller(
        provider.status,
        schedule,
        concurrency=64,
        policy=RetryPolicy(backoff_base=0.01, backoff_max=0.05),
    )
    async with anyio.create_task_group() as group:
        group.start_soon(poller.run, group)
        await anyio.sleep(0)  # the poller is up
        yield poller
        group.cancel_scope.cancel()


async def _end_quick_tasks(poller: Poller, count: int) -> None:
    """``count`` tasks that end at their first check, at once."""
    async with anyio.create_task_group() as group:
        for i in range(count):
            group.start_soon(lambda i=i: poller.wait(f"quick-{i}", plan=_At(0.0, 0.05)))


async def test_the_last_task_of_a_batch_is_checked_sooner_than_its_plan() -> None:
    """1,000 tasks just ended, one still waits: its checks come about every 50 ms (the
    shortest gap) instead of at least doubling their interval each time, so it is seen done
    at its sixth check in well under half the time its plan gives that check."""
    provider, schedule = _Provider(), _Recorded()
    async with _running(provider, schedule) as poller:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(_end_quick_tasks, poller, 1000)
                started = time.monotonic()
                assert await poller.wait("slow") is _DONE
                took = time.monotonic() - started
    (plan,) = schedule.plans
    planned = plan.at(_LAST_CHECK - 1)  # the sixth check, by the plan alone
    assert planned >= 0.03 * 2 ** (_LAST_CHECK - 1)  # (the plan at least doubles)
    assert took < planned / 2, (took, planned, plan.times)
    gaps = [b - a for a, b in zip(provider.slow_checks, provider.slow_checks[1:], strict=False)]
    assert min(gaps) >= 0.045, gaps  # never faster than the shortest gap
    assert poller.pending == 0


async def test_in_a_steady_state_the_plan_alone_decides() -> None:
    """As many tasks wait as ended lately: the slow task's checks keep to its plan (each
    one no earlier than planned), although 40 tasks just ended."""
    provider, schedule = _Provider(), _Recorded()
    async with _running(provider, schedule) as poller:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                for i in range(40):
                    group.start_soon(lambda i=i: poller.wait(f"other-{i}", plan=_At(0.0, 0.05)))
                group.start_soon(_end_quick_tasks, poller, 40)
                started = time.monotonic()
                assert await poller.wait("slow") is _DONE
                provider.release.set()
    (plan,) = schedule.plans
    sent = [at - started for at in provider.slow_checks]
    for attempt, at in enumerate(sent):
        assert at >= _earliest(plan.at(attempt)), (attempt, sent, plan.times)


async def test_a_callbacks_safety_net_is_never_hurried() -> None:
    """A task whose end a callback brings keeps its sparse checks in a drain too."""
    provider, schedule = _Provider(), _Recorded()
    net = _At(0.01, 0.1)
    async with _running(provider, schedule) as poller:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(_end_quick_tasks, poller, 1000)
                started = time.monotonic()
                assert await poller.wait("slow", plan=net) is _DONE
    sent = [at - started for at in provider.slow_checks]
    assert len(sent) == _LAST_CHECK
    for attempt, at in enumerate(sent):
        assert at >= _earliest(net.at(attempt)), (attempt, sent)


def test_the_count_of_ended_tasks_decays_the_same_however_often_it_is_read() -> None:
    """One task ended at t0: a median latency later its weight is 1/e, whether or not the
    drain read the count halfway (a read used to restart the decay without applying it)."""
    read = Poller(_Provider().status, _Recorded(), concurrency=8)
    unread = Poller(_Provider().status, _Recorded(), concurrency=8)
    median = read._schedule.median
    for poller in (read, unread):
        poller._ended, poller._ended_at = 1.0, 100.0
    read.pending = 1
    read._drain_gap(100.0 + median / 2)
    expected = pytest.approx(math.exp(-1.0))
    assert unread._ended_by(100.0 + median) == expected
    assert read._ended_by(100.0 + median) == expected


def test_a_count_of_ended_tasks_decayed_to_almost_nothing_is_no_drain() -> None:
    """Tasks ended long ago (hundreds of median latencies: stuck tasks waited out at the end
    of a run of quick ones): the decayed count is a denormal float whose share of the rate
    rounds to zero. The poller asks for no drain then; it used to divide by that zero and
    fail the client's task group (seen in the faults run, 10 ms tasks and a 3 s deadline)."""
    poller = Poller(_Provider().status, _Recorded(), concurrency=8)
    median = poller._schedule.median
    poller._ended, poller._ended_at = 1.0, 100.0
    poller.pending = 3
    assert poller._drain_gap(100.0 + 744.0 * median) == math.inf
    assert poller._drain_gap(100.0 + 10_000.0 * median) == math.inf  # decayed to 0.0
