"""``edit_many``: many requests through one client, outcomes in completion order.

The hot path of a bulk run, so it spends nothing per job that the work does not need:

- Workers are started as requests arrive, never more than ``max_in_flight`` and never more
  than there is work for: one request starts one worker. A worker takes requests from a
  plain deque until it is empty, then ends; the next request starts a new one.
- A worker is a plain asyncio task, not one of the client's task group: anyio's
  bookkeeping for a task (a handle, a cancel scope with two sets, an event, a closure) is
  a dozen objects that the garbage collector walks for as long as the worker lives, and a
  bulk run keeps thousands of workers. The structure stays: the feeder, which is in the
  client's task group, lives until the last worker has ended, and when the client closes
  it cancels the workers and waits for them, so closing the client still leaves nothing
  running.
- A request waits in the deque as given: its job is made when a worker takes it, so the
  requests read ahead (up to ``max_in_flight`` of them) hold no job yet.
- Requests and outcomes move through deques, not memory streams: handing a job to a worker
  or an outcome to the consumer costs no pass through the event loop. The consumer sleeps on
  a future only when no outcome is ready, and drains every ready outcome per wake-up.
- The feeder (the only task reading ``requests``) is woken in batches, not once per job.
- Each worker runs under its own cancel scope: leaving the loop (or closing the client)
  cancels the workers and the feeder, so jobs need no scope of their own; a job's deadline
  (``job_timeout``) cancels its worker's scope, and the worker goes on in a new one.

Nothing here holds a resource that must be closed: a run that ends, or a consumer that leaves
early, leaves no stream or task behind once the cancelled workers have unwound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable

import anyio
from anyio.abc import TaskGroup

from ._errors import JobCancelledError, QwenEditError
from ._job import Job
from ._models import EditRequest, Outcome, RequestLike, request_from

__all__ = ["run_many"]

#: A new job for a request (raises :class:`QwenEditError` for one the provider refuses).
NewJob = Callable[[EditRequest], Job]
#: Runs a job to its end in the current task, in the worker's cancel scope (cancelled at the
#: job's deadline); never raises (but cancellation).
RunJob = Callable[[Job, anyio.CancelScope], Awaitable[None]]


class _Run:
    """The shared state of one ``edit_many`` call."""

    __slots__ = (
        "_ended",
        "closing",
        "consumer_wake",
        "count",
        "failure",
        "feed_done",
        "feed_error",
        "feeder_wake",
        "idle",
        "max_workers",
        "new_job",
        "outcomes",
        "outstanding",
        "queue",
        "refill_at",
        "run",
        "scopes",
        "stopping",
        "task_group",
        "tasks",
        "window",
        "workers",
    )

    def __init__(self, task_group: TaskGroup, width: int, new_job: NewJob, run: RunJob) -> None:
        self.task_group = task_group
        self.new_job = new_job
        self.run = run
        self.max_workers = width
        #: Requests admitted but not yet yielded: bounds memory whatever the input's length.
        self.window = width * 2
        #: The feeder is woken once the window has this much room, not for every outcome.
        self.refill_at = self.window - max(1, self.window // 4)
        self.outstanding = 0
        self.count = 0
        self.queue: deque[tuple[int, RequestLike]] = deque()
        self.outcomes: deque[Outcome] = deque()
        self.workers = 0
        #: The worker tasks (the event loop keeps only weak references to tasks).
        self.tasks: set[asyncio.Task[None]] = set()
        self._ended = self._worker_ended  # bound once, not per worker
        #: Resolved when the last worker has ended (the feeder waits for it).
        self.idle: asyncio.Future[None] | None = None
        self.scopes: set[anyio.CancelScope] = set()
        #: The consumer has left: nothing more is offered.
        self.closing = False
        #: The client is closing: workers end the requests they hold as cancelled.
        self.stopping = False
        #: A worker's unexpected error (a bug), raised to the consumer.
        self.failure: BaseException | None = None
        self.feed_done = False
        self.feed_error: Exception | None = None
        self.consumer_wake: asyncio.Future[None] | None = None
        self.feeder_wake: asyncio.Future[None] | None = None

    # -- hand-offs (no event-loop pass unless someone sleeps) --------------------------------

    def offer(self, outcome: Outcome) -> None:
        if self.closing:
            return  # the consumer has left: nobody wants it
        self.outcomes.append(outcome)
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        wake = self.consumer_wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def took_one(self) -> None:
        """The consumer took an outcome: room in the window, perhaps for the feeder (woken
        in batches, at ``refill_at``, not per job)."""
        self.outstanding -= 1
        wake = self.feeder_wake
        if wake is not None and self.outstanding <= self.refill_at and not wake.done():
            wake.set_result(None)

    # -- the feeder ----------------------------------------------------------------------

    async def feed(self, requests: Iterable[RequestLike] | AsyncIterable[RequestLike]) -> None:
        scope = anyio.CancelScope()
        self.scopes.add(scope)
        loop = asyncio.get_running_loop()
        try:
            with scope:
                if isinstance(requests, AsyncIterable):
                    async with contextlib.aclosing(_aiter(requests)) as items:
                        async for request in items:
                            if self.outstanding >= self.window:
                                await self._room(loop)
                            elif self.count < self.window and self.count % 64 == 63:
                                await asyncio.sleep(0)  # see below
                            if self.closing:
                                return
                            self.admit(request)
                else:
                    # A plain iterable is read directly: no async generator step per item.
                    for request in requests:
                        if self.outstanding >= self.window:
                            await self._room(loop)
                        elif self.count < self.window and self.count % 64 == 63:
                            # While the first window fills, let the started jobs send their
                            # creates every 64 requests: a window of 10,000 read in one go
                            # held the first create back for 0.4 s.
                            await asyncio.sleep(0)
                        if self.closing:
                            return
                        self.admit(request)
        except Exception as exc:
            self.feed_error = exc
        except anyio.get_cancelled_exc_class():
            await self._closed_under(loop)
            raise
        finally:
            self.scopes.discard(scope)
            self.feed_done = True
            self._wake_consumer()
        # The feeder stays in the client's task group until the workers have ended: a
        # client closing meanwhile cancels it here, and it stops them.
        try:
            await self._all_ended(loop)
        except anyio.get_cancelled_exc_class():
            await self._closed_under(loop)
            raise

    async def _closed_under(self, loop: asyncio.AbstractEventLoop) -> None:
        """The client is closing under this run (its task group cancelled the feeder): the
        consumer, if still there, hears of it once it has every outcome; every worker is
        stopped and waited for, shielded, so the close leaves none running."""
        if not self.closing:
            self.feed_error = RuntimeError("the QwenEditClient was closed during edit_many")
        self.stop()
        with anyio.CancelScope(shield=True):
            await self._all_ended(loop)

    async def _all_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        while self.workers:
            self.idle = loop.create_future()
            await self.idle

    def stop(self) -> None:
        """The client is closing: every worker ends, its job and the requests it would
        have taken ending as cancelled."""
        self.stopping = True
        for scope in list(self.scopes):
            scope.cancel()

    async def _room(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for room in the window (the consumer takes outcomes, or leaves)."""
        while self.outstanding >= self.window:
            self.feeder_wake = loop.create_future()
            await self.feeder_wake

    def admit(self, given: RequestLike) -> None:
        index = self.count
        self.count += 1
        self.outstanding += 1
        self.queue.append((index, given))
        if self.workers < self.max_workers:
            self.workers += 1
            task = asyncio.get_running_loop().create_task(self.work(), name=_WORKER)
            self.tasks.add(task)
            task.add_done_callback(self._ended)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # A bug: the consumer raises it rather than wait for outcomes that will not come.
            if self.failure is None:
                self.failure = error
            self._wake_consumer()

    # -- a worker ------------------------------------------------------------------------

    async def work(self) -> None:
        queue = self.queue
        run = self.run
        new_job = self.new_job
        try:
            while queue and not self.closing and not self.stopping:
                # One scope per worker, not per job: a job's deadline cancels it (the job
                # ends as timed out) and the worker goes on in a new one.
                scope = anyio.CancelScope()
                self.scopes.add(scope)
                try:
                    with scope:
                        while queue and not self.closing and not self.stopping:
                            index, given = queue.popleft()
                            try:
                                # A request, or a dict of its fields.
                                request = (
                                    given if isinstance(given, EditRequest) else request_from(given)
                                )
                                job = new_job(request)
                            except QwenEditError as exc:
                                # Handed back as given: it may be a dict that is no request.
                                self.offer(Outcome(index, given, None, exc))  # type: ignore[arg-type]
                                continue
                            try:
                                await run(job, scope)
                            finally:
                                if job._is_done:  # else a bug in run(): the consumer raises it
                                    self.offer(
                                        Outcome(
                                            index,
                                            request,
                                            job._result,
                                            job._error,
                                            job.submissions,
                                        )
                                    )
                finally:
                    self.scopes.discard(scope)
        except anyio.get_cancelled_exc_class():
            self._end_queued()  # the event loop is closing
            raise
        finally:
            self.workers -= 1
            idle = self.idle
            if self.workers == 0 and idle is not None and not idle.done():
                idle.set_result(None)
        if self.stopping:
            self._end_queued()

    def _end_queued(self) -> None:
        """The client is closing: the requests no worker will start end as cancelled, so a
        consumer still waiting for them gets every outcome."""
        queue = self.queue
        while queue and not self.closing:
            index, given = queue.popleft()
            try:
                request = given if isinstance(given, EditRequest) else request_from(given)
            except QwenEditError as exc:
                self.offer(Outcome(index, given, None, exc))  # type: ignore[arg-type]
                continue
            self.offer(Outcome(index, request, None, _cancelled()))

    # -- the consumer --------------------------------------------------------------------

    def close(self) -> None:
        self.closing = True
        self.queue.clear()  # never started: nothing was sent for them
        self.outcomes.clear()
        for scope in list(self.scopes):
            scope.cancel()


async def run_many(
    requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
    *,
    open_group: Callable[[], TaskGroup],
    width: int,
    new_job: NewJob,
    run_job: RunJob,
) -> AsyncGenerator[Outcome, None]:
    """The body of :meth:`QwenEditClient.edit_many` (see there).

    ``open_group()`` gives the client's task group (or raises if the client is not open);
    ``width`` is its ``max_in_flight``; ``new_job`` and ``run_job`` make and run one job.
    """
    task_group = open_group()
    run = _Run(task_group, width, new_job, run_job)
    loop = asyncio.get_running_loop()
    task_group.start_soon(run.feed, requests)
    outcomes = run.outcomes
    try:
        while True:
            if outcomes:
                outcome = outcomes.popleft()
                run.took_one()
                yield outcome
                continue
            if run.failure is not None:
                raise run.failure
            if run.feed_done:
                if run.feed_error is not None:
                    raise run.feed_error
                if run.outstanding == 0:
                    return
            run.consumer_wake = loop.create_future()
            try:
                await run.consumer_wake
            finally:
                run.consumer_wake = None
    finally:
        run.close()


#: The name of a worker task.
_WORKER = "qwen_edit_async._Run.work"


def _cancelled() -> JobCancelledError:
    return JobCancelledError("the job was cancelled: the client was closed")


async def _aiter(items: AsyncIterable[RequestLike]) -> AsyncGenerator[RequestLike, None]:
    async for item in items:
        yield item
