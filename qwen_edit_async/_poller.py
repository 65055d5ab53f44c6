"""One poller per client: it watches every pending task.

A heap of due times feeds status workers, so status requests are bounded in concurrency (at
most ``concurrency`` workers, started only as the due checks need them, each handed its next
check directly, without a stream) and in rate (an :class:`~._pacing.AdaptiveRate` in the
dispatcher: unpaced until the provider answers a status request with 429, then paced from what
it took, halved on each later 429, recovering when they stop). The dispatcher is no task of its
own but one event-loop timer, set for the earliest due check: when it fires, every check due by
then (or a little later, 1% of its time and at most 10 ms: :func:`_early`) goes to a worker in
the same pass, and a worker that finishes while every worker was busy takes the next due check
itself. A status request thus costs no event-loop pass beyond its own, and no cancellation. A
request still unanswered after ``slow_after`` seconds (a provider dripping its answer) stops
counting against ``concurrency``: a due check then gets a worker of its own instead of waiting,
so slow answers for some tasks never starve the checks of others; each request is bounded by
``status_timeout`` and each task has at most one in flight, so those extra workers are bounded
too, and they end with their check. At the end of a batch, when far fewer tasks wait than
ended within the last median latency, the last ones are checked sooner than their plans say
(:meth:`Poller._drain_gap`): the batch ends when its last result is seen. A waiter that
leaves (its job's deadline, a cancel) cancels its task's request in flight. A job waiting for
its task sleeps on a future; nothing loops on ``sleep``. A poll error that retries could not
cure ends that job; an unexpected error in the poller itself is handed to every waiting job
and to every later one: never swallowed.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ._errors import QwenEditError, RateLimitError, TransportError, with_context
from ._pacing import AdaptiveRate
from ._retry import RetryPolicy, pause
from ._schedule import MIN_GAP, PollPlan, PollSchedule
from .providers._base import TaskState, TaskStatus

__all__ = ["Plan", "Poller", "Pushed", "status_concurrency"]

logger = logging.getLogger("qwen_edit_async")

#: Status checks after a "completed" answer without results, before the job fails.
_LATE_RESULT_CHECKS = 5
#: A check due this soon goes with the ones due now: one timer and one event-loop pass for
#: several checks rather than one each. At most this share of the check's own time after
#: acceptance (a task found running 1% early is a rare miss) and this many seconds.
_EARLY_SHARE, _EARLY_MAX = 0.01, 0.01


#: In a drain (far fewer tasks waiting than ended lately), the waiting tasks' checks may
#: together take up to this share of the rate at which tasks ended lately (see _drain_gap).
_DRAIN_SHARE = 1 / 16

#: Status requests in flight at once by default: this share of ``max_in_flight``, at least
#: :data:`_CONCURRENCY_MIN`. See :func:`status_concurrency`.
_CONCURRENCY_SHARE, _CONCURRENCY_MIN = 1 / 32, 64


def status_concurrency(max_in_flight: int, configured: int | None = None) -> int:
    """Status requests a client sends at once: ``configured`` (``poll_concurrency``), else a
    thirty-second of ``max_in_flight`` (at least 64); never more than ``max_in_flight``.

    Tasks started together end together, near the median latency, so thousands of checks
    come due within a second. Sent all at once, each would open a connection of its own and
    the answers would queue in the event loop behind the rest: at 5,000 tasks in flight
    against a local provider, up to 2,500 status requests were in flight, the loop stalled
    for up to 1.8 s and results reached the caller 0.6-1.4 s after the status answer that
    carried them. Each answer costs the event loop a little CPU, and answers come back
    together: the more requests in flight, the longer every other answer (and every create)
    waits for the loop. At 5,000 tasks in flight against a local provider, 312 requests in
    flight left 0.27-0.41 s (mean) between the answer that carried a result and the
    caller having it; 156 and 100 left 0.13 and 0.10 s, with the checks themselves no later.
    A thirty-second of ``max_in_flight`` still gives every task two checks per latency while
    a status round trip takes less than 1/64 of a task's latency (image edits take seconds to
    minutes), and grows with ``max_in_flight``, so it is no fixed cap.

    >>> status_concurrency(5000), status_concurrency(200), status_concurrency(20)
    (156, 64, 20)
    """
    most = max(1, max_in_flight)
    wanted = configured or max(_CONCURRENCY_MIN, int(most * _CONCURRENCY_SHARE))
    return min(wanted, most)


def _early(after: float) -> float:
    """How early (s) a check planned ``after`` s after acceptance may go."""
    return min(_EARLY_MAX, _EARLY_SHARE * after)


class Plan(Protocol):
    """When to send the status requests of one task (:class:`PollPlan` and the callback
    safety net's plans)."""

    def at(self, attempt: int) -> float: ...

    def recheck(self, attempt: int, elapsed: float) -> float: ...


class Pushed(Protocol):
    """A task whose end may also be pushed (a provider callback)."""

    def connect(self, deliver: Callable[[TaskStatus], bool]) -> None:
        """Take ``deliver(status)``: it ends the wait with ``status`` (False: already ended)."""


class _Watch:
    __slots__ = (
        "accepted_at",
        "attempt",
        "cancelled",
        "ended",
        "error",
        "expired",
        "failures",
        "hurried",
        "late",
        "plan",
        "scope",
        "status",
        "task_id",
    )

    def __init__(
        self, task_id: str, plan: Plan, accepted_at: float, ended: asyncio.Future[None]
    ) -> None:
        self.task_id = task_id
        self.plan = plan
        self.accepted_at = accepted_at
        self.attempt = 0
        #: Status requests in a row that failed transiently.
        self.failures = 0
        #: "Completed" answers without results so far (see _LATE_RESULT_CHECKS).
        self.late = 0
        #: Its next check was brought forward for a drain: sent when due, not rechecked.
        self.hurried = False
        self.cancelled = False
        #: Its status request in flight was ended at ``status_timeout``.
        self.expired = False
        #: The cancel scope of this task's status request in flight, if any.
        self.scope: anyio.CancelScope | None = None
        #: Done once the wait is over (``status`` or ``error`` set), or its waiter left.
        self.ended = ended
        self.status: TaskStatus | None = None
        self.error: BaseException | None = None

    def end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class Poller:
    """Polls the tasks of one client. Start :meth:`run` in the client's task group."""

    def __init__(
        self,
        status: Callable[[str], Awaitable[TaskStatus]],
        schedule: PollSchedule,
        *,
        concurrency: int,
        rate: AdaptiveRate | None = None,
        policy: RetryPolicy | None = None,
        retry_max: float = 10.0,
        slow_after: float = 1.0,
        status_timeout: float | None = None,
    ) -> None:
        #: One status request for a task id, without retries: the poller reschedules
        #: a transient failure itself, so no worker sleeps through a backoff.
        self._status = status
        self._policy = policy or RetryPolicy(backoff_base=0.5, backoff_max=retry_max)
        self._slow_after = slow_after
        #: Seconds each status request may take, answer included (``None``: ``status``
        #: bounds its requests itself). Kept here, by the timer that dispatches, rather than
        #: by a timer and a cancel scope per request.
        self._status_timeout = status_timeout
        #: Start times of the status requests in flight, by task.
        self._started: dict[_Watch, float] = {}
        self._retry_max = retry_max
        self._schedule = schedule
        self._concurrency = concurrency
        #: The pace of status requests (``rate.rate`` is the current requests per second).
        self.rate = rate or AdaptiveRate()
        self._workers = 0
        #: Workers waiting for their next check (each on its own future).
        self._idle: deque[asyncio.Future[_Watch]] = deque()
        self._task_group: TaskGroup | None = None
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The dispatcher's timer and when it fires (``inf``: none set).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: A check that took its turn of the rate and waits for it: (when, watch).
        self._held: tuple[float, _Watch] | None = None
        #: Every worker is busy with a due check waiting: the next to finish dispatches.
        self._blocked = False
        #: Failed with the poller's own error (``run`` raises it).
        self._stopped: asyncio.Future[None] | None = None
        self._broken: BaseException | None = None
        self.pending = 0
        #: Waits ended lately: a count that decays by e every fitted median latency, and
        #: when it was last brought up to date (see :meth:`_drain_gap`).
        self._ended = 0.0
        self._ended_at = 0.0
        #: Tasks whose end came by callback, and by a status request.
        self.completed_by_callback = 0
        self.completed_by_poll = 0

    async def wait(
        self,
        task_id: str,
        hint: float | None = None,
        *,
        plan: Plan | None = None,
        pushed: Pushed | None = None,
    ) -> TaskStatus:
        """Wait until the task ends; return its final status or raise the poll error.

        ``plan`` replaces the learned schedule (a callback's safety net); ``pushed`` may
        end the wait before any poll does.
        """
        if self._broken is not None:
            raise self._broken
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watch = _Watch(task_id, plan or self._schedule.plan(hint), time.monotonic(), ended)
        self.pending += 1
        try:
            self._push(watch)
            if pushed is not None:
                # A partial, not a lambda: a lambda here would make ``watch`` and ``self``
                # cells in every call, pushed or not.
                pushed.connect(functools.partial(self._pushed, watch))
            await ended
        finally:
            self.pending -= 1
            self._ended = self._ended_by(time.monotonic()) + 1.0
            watch.cancelled = True  # a cancelled waiter's task is not polled again
            if watch.scope is not None:
                watch.scope.cancel()  # nor is its request in flight waited for
        if watch.error is not None:
            raise watch.error
        assert watch.status is not None
        return watch.status

    def _ended_by(self, now: float) -> float:
        """The decayed count of ended waits, brought up to ``now`` (and kept so: the decay
        since the last update is applied once, whoever asks)."""
        ended = self._ended
        if ended:
            since = now - self._ended_at
            if since > 0.0:
                ended *= math.exp(-since / self._schedule.median)
                self._ended = ended
        self._ended_at = now
        return ended

    def _drain_gap(self, now: float) -> float:
        """The longest wait before a waiting task's next check while the client drains.

        At the end of a batch the tasks still waiting are few, and the last of them decides
        when the batch is done: its check may come up to a tenth of its age after it ended.
        The checks of the few left may then share :data:`_DRAIN_SHARE` of the rate at which
        tasks ended lately (``ended`` over one median latency): each task one check per
        ``pending / that rate`` seconds. In a steady state as many tasks wait as ended
        within a latency, so the gap is many latencies long and the schedule decides alone;
        the extra checks of a drain are bounded by that share of the rate.
        """
        # A count decayed to a denormal float has a share that rounds to zero: no drain.
        share = self._ended_by(now) * _DRAIN_SHARE
        if share <= 0.0:
            return math.inf
        return self.pending * self._schedule.median / share

    def _pushed(self, watch: _Watch, status: TaskStatus) -> bool:
        if watch.cancelled or watch.ended.done():
            return False
        watch.status = status
        watch.cancelled = True  # no more polls
        self.completed_by_callback += 1
        watch.end()
        return True

    def _push(self, watch: _Watch, not_before: float = 0.0, keep_plan: bool = False) -> None:
        planned = watch.accepted_at + watch.plan.at(watch.attempt)
        due = not_before if keep_plan else max(not_before, planned)
        heapq.heappush(self._heap, (due, next(self._seq), watch))
        if due < self._timer_at:
            self._arm(due)

    def _arm(self, when: float) -> None:
        """Have the dispatcher run at ``when`` (monotonic), unless it runs earlier anyway."""
        loop = self._loop
        if loop is None or when >= self._timer_at:
            return  # not running yet (``run`` dispatches), or a timer comes first
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_later(max(0.0, when - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._dispatch_safely()

    async def run(self, task_group: TaskGroup) -> None:
        """Dispatch due status requests to workers until cancelled."""
        self._task_group = task_group
        loop = self._loop = asyncio.get_running_loop()
        stopped = self._stopped = loop.create_future()
        try:
            self._dispatch()
            await stopped  # only a failure of the dispatcher sets it
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                logger.exception("the poller failed; failing the tasks it watched")
                self._fail_all(exc)
            raise
        finally:
            self._loop = None
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
            for idle in self._idle:
                idle.cancel()
            self._idle.clear()

    def _dispatch_safely(self) -> None:
        try:
            self._dispatch()
        except Exception as exc:  # a bug: every waiter hears of it (run raises it)
            stopped = self._stopped
            if stopped is not None and not stopped.done():
                stopped.set_exception(exc)

    def _dispatch(self) -> None:
        """Hand every due check to a worker, end the requests past ``status_timeout``; set
        the timer for what comes next."""
        now = time.monotonic()
        self._dispatch_due(now)
        if self._status_timeout is not None:
            self._expire(now, self._status_timeout)

    def _expire(self, now: float, timeout: float) -> None:
        # ``_started`` is in start order: only its head can be overdue first.
        for watch, started in self._started.items():
            if started + timeout > now:
                self._arm(started + timeout)
                return
            if watch.scope is not None:
                watch.expired = True
                watch.scope.cancel()

    def _dispatch_due(self, now: float) -> None:
        heap = self._heap
        if self._held is not None:
            at, watch = self._held
            if at > now + 1e-3:
                self._arm(at)
                return
            self._held = None
            if not watch.cancelled:
                self._hand_over(watch)
        while heap:
            due, _, watch = heap[0]
            if watch.cancelled:
                heapq.heappop(heap)
                continue
            if due > now + min(_EARLY_MAX, _EARLY_SHARE * (due - watch.accepted_at)):
                self._arm(due)
                return
            if not self._idle and self._workers >= self._concurrency:
                slow = now - self._slow_after
                # ``_started`` is in start order: the slow requests are its head.
                stalled = 0
                for started in self._started.values():
                    if started > slow:
                        break
                    stalled += 1
                if self._workers - stalled >= self._concurrency:
                    # Every worker is busy, none on a slow answer: the next one to finish
                    # dispatches, or the oldest request turning slow does.
                    self._blocked = True
                    self._arm(next(iter(self._started.values()), now) + self._slow_after)
                    return
            heapq.heappop(heap)
            if watch.hurried:
                watch.hurried = False
            elif not watch.failures:
                # The schedule may have learned since this time was planned: ask again.
                elapsed = now - watch.accepted_at
                later = watch.plan.recheck(watch.attempt, elapsed)
                if later > elapsed + _early(later):  # (else it would be due again at once)
                    heapq.heappush(heap, (watch.accepted_at + later, next(self._seq), watch))
                    continue
            wait = self.rate.delay(now)
            if wait > 0:
                self._held = (now + wait, watch)
                self._arm(now + wait)
                return
            self._hand_over(watch)

    def _hand_over(self, watch: _Watch) -> None:
        while self._idle:
            idle = self._idle.popleft()
            if not idle.done():
                idle.set_result(watch)
                return
        self._workers += 1
        assert self._task_group is not None
        self._task_group.start_soon(self._worker, watch)

    async def _worker(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        working = True
        try:
            while True:
                if not watch.cancelled:
                    await self._poll(watch)
                if self._workers > self._concurrency:
                    # An extra worker, started beside slow answers: done.
                    working = False
                    self._workers -= 1
                    if self._blocked:
                        self._blocked = False
                        self._dispatch_safely()
                    return
                idle: asyncio.Future[_Watch] = loop.create_future()
                self._idle.append(idle)
                if self._blocked:
                    # Due checks wait for a worker: take one now (no event-loop pass when
                    # it is this worker's).
                    self._blocked = False
                    self._dispatch_safely()
                watch = await idle
        finally:
            if working:
                self._workers -= 1

    async def _poll(self, watch: _Watch) -> None:
        started = time.monotonic()
        self._started[watch] = started
        timeout = self._status_timeout
        if timeout is not None:
            self._arm(started + timeout)
        # The request is awaited here rather than in a coroutine of its own: one frame less
        # per status request; what its answer means is worked out by :meth:`_answered`.
        status: TaskStatus | None = None
        error: Exception | None = None
        try:
            with anyio.CancelScope() as scope:
                watch.scope = scope
                try:
                    status = await self._status(watch.task_id)
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as exc:
                    error = exc
        finally:
            watch.scope = None
            del self._started[watch]
        if scope.cancelled_caught:
            # Interrupted: by ``status_timeout`` (ask again), or because the waiter left.
            # An answer that came in the same event-loop pass as the timeout counts.
            if watch.expired and not watch.cancelled and not watch.ended.done():
                assert timeout is not None
                watch.expired = False
                self._failed(watch, TransportError(f"no complete answer within {timeout:g} s"))
            watch.expired = False
            return
        watch.expired = False
        if error is not None:
            self._refused(watch, error)
        elif status is not None:
            self._answered(watch, status, started - watch.accepted_at)

    def _refused(self, watch: _Watch, error: Exception) -> None:
        """The status request for ``watch`` failed with ``error``."""
        if isinstance(error, QwenEditError):
            if isinstance(error, RateLimitError):
                retry_after = error.retry_after
                self.rate.limited(None if retry_after is None else pause(retry_after))
            if not watch.ended.done():  # (else a callback ended it meanwhile)
                self._failed(watch, error)
            return
        # A bug must reach the job, not vanish in the poller.
        logger.error("status request for task %s failed", watch.task_id, exc_info=error)
        watch.error = error
        watch.end()

    def _answered(self, watch: _Watch, status: TaskStatus, sent: float) -> None:
        """What the status answer for ``watch`` (sent ``sent`` s after acceptance) means."""
        if watch.ended.done():
            return  # a callback ended it meanwhile
        watch.failures = 0
        self.rate.accepted()
        done = status.state.done
        if status.state is TaskState.SUCCEEDED and status.result is None:
            # Completed before its results were attached (Evolink, for a few seconds): the
            # images are paid for, so ask again a few times before failing with the task id.
            watch.late += 1
            if watch.late == 1 and isinstance(watch.plan, PollPlan):
                # The task's latency is known now; later answers add nothing.
                self._schedule.observe(watch.plan, watch.attempt, True, elapsed=sent)
            done = watch.late > _LATE_RESULT_CHECKS
        elif isinstance(watch.plan, PollPlan):
            self._schedule.observe(watch.plan, watch.attempt, done, elapsed=sent)
        if done:
            self.completed_by_poll += 1
            watch.status = status
            watch.end()
            return
        if watch.cancelled:
            return
        watch.attempt += 1
        now = time.monotonic()
        # A late poll (rate limit, slow answer) must not be followed at once by another.
        not_before = now + MIN_GAP
        if isinstance(watch.plan, PollPlan):
            # (Not a callback's safety net: its checks are sparse on purpose.)
            sooner = now + self._drain_gap(now)
            if sooner < watch.accepted_at + watch.plan.at(watch.attempt):
                watch.hurried = True
                self._push(watch, not_before=max(not_before, sooner), keep_plan=True)
                return
        self._push(watch, not_before=not_before)

    def _failed(self, watch: _Watch, exc: QwenEditError) -> None:
        """A status request for ``watch`` failed with ``exc``: ask again later, or end it."""
        if self._policy.should_retry(exc, idempotent=True) and not watch.cancelled:
            # The task exists; an outage of the status endpoint is waited out (the job's
            # deadline bounds it), without holding a worker through the wait, and never
            # longer than the schedule's longest interval between checks.
            watch.failures += 1
            retry_after: float | None = getattr(exc, "retry_after", None)
            delay = self._policy.delay(watch.failures, retry_after)
            delay = pause(self._retry_max) if delay is None else min(delay, self._retry_max)
            logger.debug("status of %s failed (%s); again in %.2f s", watch.task_id, exc, delay)
            self._push(watch, not_before=time.monotonic() + delay, keep_plan=True)
            return
        watch.error = with_context(exc, task_id=watch.task_id)
        watch.end()

    def _fail_all(self, exc: BaseException) -> None:
        self._broken = exc
        watches = [watch for _, _, watch in self._heap]
        watches.extend(self._started)  # their workers end with the task group
        if self._held is not None:
            watches.append(self._held[1])
        for watch in watches:
            if not watch.cancelled:
                watch.error = exc
                watch.end()
        self._heap.clear()
        self._held = None
