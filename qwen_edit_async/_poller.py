"""One coroutine per client that watches every pending task.

A heap of due times feeds status workers, so status requests are bounded in concurrency (at
most ``concurrency`` workers, started only as the due checks need them, each handed its next
check directly, without a stream) and in rate (an :class:`~._pacing.AdaptiveRate` in the
dispatcher: generous at first, halved when the provider answers a status request with 429,
recovering when it stops). A request still unanswered after ``slow_after`` seconds (a
provider dripping its answer) stops counting against ``concurrency``: a due check then gets a
worker of its own instead of waiting, so slow answers for some tasks never starve the checks
of others; each request is bounded by ``status_timeout`` and each task has at most one in
flight, so those extra workers are bounded too, and they end with their check. A waiter that
leaves (its job's deadline, a cancel) cancels its task's request in flight. A job waiting for
its task sleeps on an :class:`anyio.Event`; nothing loops on ``sleep``. A poll error that
retries could not cure ends that job; an unexpected error in the poller itself is handed to
every waiting job and to every later one: never swallowed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ._errors import QwenEditError, RateLimitError, with_context
from ._pacing import AdaptiveRate
from ._retry import RetryPolicy, pause
from ._schedule import PollPlan, PollSchedule
from .providers._base import TaskState, TaskStatus

__all__ = ["Plan", "Poller", "Pushed"]

logger = logging.getLogger("qwen_edit_async")

#: Status checks after a "completed" answer without results, before the job fails.
_LATE_RESULT_CHECKS = 5


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
        "error",
        "event",
        "failures",
        "late",
        "plan",
        "scope",
        "status",
        "task_id",
    )

    def __init__(self, task_id: str, plan: Plan, accepted_at: float) -> None:
        self.task_id = task_id
        self.plan = plan
        self.accepted_at = accepted_at
        self.attempt = 0
        #: Status requests in a row that failed transiently.
        self.failures = 0
        #: "Completed" answers without results so far (see _LATE_RESULT_CHECKS).
        self.late = 0
        self.cancelled = False
        #: The cancel scope of this task's status request in flight, if any.
        self.scope: anyio.CancelScope | None = None
        self.event = anyio.Event()
        self.status: TaskStatus | None = None
        self.error: BaseException | None = None


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
    ) -> None:
        #: One status request for a task id, without retries: the poller reschedules
        #: a transient failure itself, so no worker sleeps through a backoff.
        self._status = status
        self._policy = policy or RetryPolicy(backoff_base=0.5, backoff_max=retry_max)
        self._slow_after = slow_after
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
        self._wakeup = anyio.Event()
        self._broken: BaseException | None = None
        self._free: asyncio.Future[None] | None = None
        self.pending = 0
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
        watch = _Watch(task_id, plan or self._schedule.plan(hint), time.monotonic())
        self.pending += 1
        try:
            self._push(watch)
            if pushed is not None:
                pushed.connect(lambda status: self._pushed(watch, status))
            await watch.event.wait()
        finally:
            self.pending -= 1
            watch.cancelled = True  # a cancelled waiter's task is not polled again
            if watch.scope is not None:
                watch.scope.cancel()  # nor is its request in flight waited for
        if watch.error is not None:
            raise watch.error
        assert watch.status is not None
        return watch.status

    def _pushed(self, watch: _Watch, status: TaskStatus) -> bool:
        if watch.cancelled or watch.event.is_set():
            return False
        watch.status = status
        watch.cancelled = True  # no more polls
        self.completed_by_callback += 1
        watch.event.set()
        return True

    def _push(self, watch: _Watch, not_before: float = 0.0, keep_plan: bool = False) -> None:
        planned = watch.accepted_at + watch.plan.at(watch.attempt)
        due = not_before if keep_plan else max(not_before, planned)
        heapq.heappush(self._heap, (due, next(self._seq), watch))
        if self._heap[0][2] is watch:
            self._wakeup.set()

    async def run(self, task_group: TaskGroup) -> None:
        """Dispatch due status requests to workers until cancelled."""
        self._task_group = task_group
        try:
            await self._dispatch()
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                logger.exception("the poller failed; failing the tasks it watched")
                self._fail_all(exc)
            raise
        finally:
            for idle in self._idle:
                idle.cancel()
            self._idle.clear()

    async def _dispatch(self) -> None:
        heap = self._heap
        loop = asyncio.get_running_loop()
        while True:
            if not heap:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                continue
            due, _, watch = heap[0]
            if watch.cancelled:
                heapq.heappop(heap)
                continue
            delay = due - time.monotonic()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wakeup.wait()
                if self._wakeup.is_set():
                    self._wakeup = anyio.Event()
                continue
            if not self._idle and self._workers >= self._concurrency:
                now = time.monotonic()
                slow = now - self._slow_after
                stalled = sum(1 for started in self._started.values() if started <= slow)
                if self._workers - stalled >= self._concurrency:
                    # Every worker is busy, none on a slow answer: the next one to finish
                    # asks for work, or the oldest request turns slow.
                    oldest = min(self._started.values(), default=now)
                    self._free = loop.create_future()
                    with anyio.move_on_after(max(0.0, oldest - slow)):
                        await self._free
                    continue
            heapq.heappop(heap)
            if not watch.failures:
                # The schedule may have learned since this time was planned: ask again.
                elapsed = time.monotonic() - watch.accepted_at
                later = watch.plan.recheck(watch.attempt, elapsed)
                if later > elapsed + 1e-3:
                    heapq.heappush(heap, (watch.accepted_at + later, next(self._seq), watch))
                    continue
            wait = self.rate.delay()
            if wait > 0:
                await anyio.sleep(wait)
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
        try:
            while True:
                if not watch.cancelled:
                    await self._poll(watch)
                free = self._free
                if free is not None and not free.done():
                    free.set_result(None)
                if self._workers > self._concurrency:
                    return  # an extra worker, started beside slow answers: done
                idle: asyncio.Future[_Watch] = loop.create_future()
                self._idle.append(idle)
                watch = await idle
        finally:
            self._workers -= 1

    async def _poll(self, watch: _Watch) -> None:
        started = time.monotonic()
        self._started[watch] = started
        try:
            with anyio.CancelScope() as scope:
                watch.scope = scope
                await self._check(watch, started - watch.accepted_at)
        finally:
            watch.scope = None
            del self._started[watch]

    async def _check(self, watch: _Watch, sent: float) -> None:
        """One status request for ``watch`` and what its answer means."""
        try:
            status = await self._status(watch.task_id)
        except QwenEditError as exc:
            retry_after: float | None = getattr(exc, "retry_after", None)
            if isinstance(exc, RateLimitError):
                self.rate.limited(None if retry_after is None else pause(retry_after))
            if watch.event.is_set():
                return  # a callback ended it meanwhile
            if self._policy.should_retry(exc, idempotent=True) and not watch.cancelled:
                # The task exists; an outage of the status endpoint is waited out (the
                # job's deadline bounds it), without holding a worker through the wait,
                # and never longer than the schedule's longest interval between checks.
                watch.failures += 1
                delay = self._policy.delay(watch.failures, retry_after)
                delay = pause(self._retry_max) if delay is None else min(delay, self._retry_max)
                logger.debug("status of %s failed (%s); again in %.2f s", watch.task_id, exc, delay)
                self._push(watch, not_before=time.monotonic() + delay, keep_plan=True)
                return
            watch.error = with_context(exc, task_id=watch.task_id)
            watch.event.set()
            return
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # a bug must reach the job, not vanish in the poller
            logger.exception("status request for task %s failed", watch.task_id)
            watch.error = exc
            watch.event.set()
            return
        if watch.event.is_set():
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
            watch.event.set()
            return
        if watch.cancelled:
            return
        watch.attempt += 1
        # A late poll (rate limit, slow answer) must not be followed at once by another.
        self._push(watch, not_before=time.monotonic() + 0.05)

    def _fail_all(self, exc: BaseException) -> None:
        self._broken = exc
        for _, _, watch in self._heap:
            if not watch.cancelled:
                watch.error = exc
                watch.event.set()
        self._heap.clear()
