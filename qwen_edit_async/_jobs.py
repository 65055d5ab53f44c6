"""Running one job to its end: its slot, its deadline, its create, the wait for its task and
its resubmission after a transient task failure.

The client builds one :class:`JobRunner` and hands it every job; the job changes its own
fields through its transition methods (``job._submitting()``, ``job._accept(...)``,
``job._finish(...)``), the runner only says when.

A job's deadline (``job_timeout``) costs no timer and no cancel scope of its own: the
:class:`Deadlines` of the client keep the running jobs' deadlines in a set, one event-loop
timer waits for the earliest, and an expired deadline cancels the scope the job runs in
(its own when it has a handle, else the ``edit_many`` worker's).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from ._body import StreamedBody, split_body
from ._callbacks import CallbackReceiver, _Ticket
from ._calls import Calls
from ._config import ClientConfig
from ._errors import JobCancelledError, JobFailedError, JobTimeoutError, QwenEditError
from ._job import Job
from ._limits import Limits
from ._models import MAX_N, EditRequest, EditResult
from ._poller import Poller
from ._prepare import ImagePreparer
from ._safety import SafetyNet
from ._urls import is_http_url
from .providers import Provider
from .providers._base import HttpRequest, TaskAccepted, TaskState, TaskStatus

__all__ = ["JobRunner"]

logger = logging.getLogger("qwen_edit_async")


class Deadline(msgspec.Struct, eq=False):
    """One job's deadline, ``limit`` seconds from :meth:`Deadlines.start`; ``expired``
    once it passed with the job still running (its scope was cancelled then).

    A Struct (made in C, a third of a Python ``__init__``: one per job); ``eq=False``: it
    is its own identity, in the running set.
    """

    limit: float
    scope: anyio.CancelScope
    at: float = math.inf
    expired: bool = False


class Deadlines:
    """The deadlines of a client's running jobs, with one timer for all of them.

    A job adds its deadline to the running set when it starts and takes it out when it
    ends: no timer of its own. The one timer waits for the earliest deadline; when it fires
    it cancels the scopes of the jobs past theirs and waits for the earliest left. Jobs end
    long before a deadline of minutes, so it fires about once per ``limit``, whatever the
    number of jobs.

    >>> deadlines = Deadlines()
    >>> deadline = Deadline(600.0, scope)   # doctest: +SKIP
    >>> deadlines.start(deadline)            # doctest: +SKIP
    >>> deadlines.end(deadline)              # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._running: set[Deadline] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: Timers armed so far (the test of "no timer per job" counts them).
        self.timers = 0

    @property
    def running(self) -> int:
        """Deadlines of jobs still running."""
        return len(self._running)

    def start(self, deadline: Deadline) -> None:
        """The job's time starts now: at ``now + limit`` its scope is cancelled."""
        # The monotonic clock, not loop.time(): asyncio.get_running_loop() costs a getpid()
        # system call on each call, and this runs for every job.
        at = deadline.at = time.monotonic() + deadline.limit
        self._running.add(deadline)
        if at < self._timer_at:
            self._arm(asyncio.get_running_loop(), at)

    def end(self, deadline: Deadline) -> None:
        """The job ended (or left the part its deadline covers) before its deadline."""
        self._running.discard(deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_later(max(0.0, at - time.monotonic()), self._fire, loop)
        self.timers += 1

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        earliest = math.inf
        for deadline in list(self._running):
            if deadline.at <= now:
                self._running.discard(deadline)
                deadline.expired = True
                deadline.scope.cancel()
            elif deadline.at < earliest:
                earliest = deadline.at
        if earliest < math.inf:
            self._arm(loop, earliest)


class JobRunner:
    """Runs the jobs of one client; counts those waiting for a slot and those ended."""

    def __init__(
        self,
        provider: Provider,
        calls: Calls,
        limits: Limits,
        poller: Poller,
        preparer: ImagePreparer,
        safety: SafetyNet,
        callbacks: CallbackReceiver | None,
        progress: Callable[[], None] | None,
    ) -> None:
        self._provider = provider
        self._calls = calls
        self._limits = limits
        self._poller = poller
        self._preparer = preparer
        self._safety = safety
        self._callbacks = callbacks
        self._progress = progress
        #: A synchronous provider: the create's answer is the result (no task, no callback).
        self._sync = provider.mode == "sync"
        #: Jobs waiting for a slot; jobs ended with a result, and with an error.
        self.waiting = 0
        self.completed = 0
        self.failed = 0
        self.deadlines = Deadlines()

    async def run(
        self,
        job: Job,
        model: str | None,
        limit: float | None,
        config: ClientConfig,
        *,
        scope: anyio.CancelScope | None = None,
    ) -> None:
        """Run ``job`` to its end in the current task; never raises (but cancellation).

        ``limit``: the job's deadline in seconds (``None``: none), counted from when it has
        a slot. ``scope``: the cancel scope the job runs in, cancelled at its deadline
        (``edit_many``'s worker's: its jobs have no handle and are cancelled with their
        worker); ``None``: the job has a handle (``job.cancel()``) and gets a scope of its own.
        A job whose deadline passed ends with :class:`JobTimeoutError`; if it ran in the
        given ``scope``, the cancellation is raised on to that scope's owner.
        """
        if scope is None:
            await self._run_in_own_scope(job, model, limit, config)
            return
        # Everything from here to the job's end in this one frame, the slot and the
        # resubmissions included: every suspension of the request passes through each
        # coroutine awaiting it, thousands of times per second in a bulk run.
        deadline = None if limit is None else Deadline(limit, scope)
        result: EditResult | None = None
        error: BaseException | None = None
        try:
            try:
                # A free slot needs no trip through the event loop, nor counting as waiting.
                if not self._limits.try_acquire(job):
                    self.waiting += 1
                    try:
                        await self._limits.acquire(job)
                    finally:
                        self.waiting -= 1
                if deadline is not None:
                    self.deadlines.start(deadline)
                try:
                    if self._progress is not None:
                        self._progress()
                    create = job.task_id is None  # else it attaches to a task created earlier
                    while True:
                        try:
                            if self._sync:
                                answer = await self._create(job, model, None, config.max_attempts)
                                if not isinstance(answer, EditResult):  # a broken dialect
                                    raise TypeError(
                                        f"{self._provider.name} answered a create with a task"
                                    )
                                result = self._named(answer, model)
                            else:
                                result = await self._submission(
                                    job, model, create, config.max_attempts
                                )
                        except JobFailedError as exc:
                            # A failed task is not billed: one the provider calls transient is
                            # submitted again, up to max_resubmits.
                            if not (
                                exc.retryable
                                and job.request is not None
                                and job.submissions <= config.max_resubmits
                            ):
                                raise
                            # job.task_id names the failed task until the new one is
                            # accepted, so an error (a timeout) in between still says which
                            # task was paid for.
                            create = True
                            wait = self._resubmitting(job, exc, config)
                            if wait:
                                await anyio.sleep(wait)
                            continue
                        request = job.request
                        if len(result.images) > (MAX_N if request is None else request.n or 1):
                            raise _too_many(result, request)
                        break
                finally:
                    if deadline is not None:
                        self.deadlines.end(deadline)
                    self._limits.release(job)
            except Exception as exc:
                result, error = None, exc
        except anyio.get_cancelled_exc_class():
            job._finish(None, self._interrupted(job, deadline))
            self.failed += 1
            if (deadline is not None and deadline.expired) or (
                scope is job._scope and scope.cancel_called
            ):
                self._report()  # it ended (timed out, or cancelled), as much as any other job
            raise
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
        job._finish(result, error)
        if self._progress is not None:
            self._progress()

    async def _run_in_own_scope(
        self, job: Job, model: str | None, limit: float | None, config: ClientConfig
    ) -> None:
        """:meth:`run` for a job with a handle: in the scope ``job.cancel()`` cancels (its
        deadline cancels it too); the cancellation ends there, the job ended as cancelled or
        timed out."""
        with job._open_scope() as own:
            await self.run(job, model, limit, config, scope=own)

    def _report(self) -> None:
        """Call the progress hook, if the client has one."""
        if self._progress is not None:
            self._progress()

    def _interrupted(self, job: Job, deadline: Deadline | None) -> QwenEditError:
        """The error of a job whose scope was cancelled: its deadline, or a cancel."""
        if deadline is not None and deadline.expired:
            return JobTimeoutError(
                f"no result within the job timeout of {deadline.limit:g} s; the task may "
                "still finish: collect it later with client.attach(task_id)",
                provider=self._provider.name,
                task_id=job.task_id,
            )
        return self._cancelled(job)

    def end_attached(self, job: Job, status: TaskStatus) -> None:
        """End ``job``, attached to a task that had already ended, as ``status`` says."""
        error: BaseException | None = status.error
        if status.state is TaskState.SUCCEEDED and status.result is not None:
            error = None
        elif error is None:
            error = self._no_result(status, job)
        self._poller.completed_by_poll += 1  # a status request told its end
        self._end(job, status.result if error is None else None, error)

    def _end(self, job: Job, result: EditResult | None, error: BaseException | None) -> None:
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
        job._finish(result, error)

    def _cancelled(self, job: Job) -> JobCancelledError:
        return JobCancelledError(
            "the job was cancelled", provider=self._provider.name, task_id=job.task_id
        )

    def _no_result(self, status: TaskStatus, job: Job) -> QwenEditError:
        return QwenEditError(
            f"the task ended as {status.state.value} without a result",
            provider=self._provider.name,
            task_id=job.task_id,
        )

    def _named(self, result: EditResult, model: str | None) -> EditResult:
        """``result`` with the model that made it, when the provider's answer did not say."""
        if result.model is None:
            result.model = model or self._provider.model
        return result

    def _resubmitting(self, job: Job, exc: JobFailedError, config: ClientConfig) -> float | None:
        """Log the resubmission of ``job`` after its task failed transiently; the wait first."""
        logger.info(
            "task %s failed transiently (%s); submitting the job again (%d of %d)",
            job.task_id,
            exc.code or exc.message,
            job.submissions,
            config.max_resubmits,
        )
        # Full jitter, one doubling ahead of the create retries: the task ran and failed, so
        # the provider had a moment already.
        return self._calls.policy.delay(job.submissions + 1)

    async def _submission(
        self, job: Job, model: str | None, create: bool, attempts: int
    ) -> EditResult:
        """One create (unless the job attaches to its task) and the wait for its end, told
        by a completion callback when the client has a receiver."""
        receiver = self._callbacks
        ticket: _Ticket | None = None
        if (
            receiver is not None
            and create
            and job.request is not None
            and job.request.callback_url is None
        ):
            ticket = receiver._issue(self._provider, mask=self._calls.mask)
        try:
            hint = None
            if create:
                answer = await self._create(job, model, ticket, attempts)
                if isinstance(answer, EditResult):
                    return self._named(answer, model)
                hint = answer.estimated_time
                await job._accept(answer.task_id, answer.request_id)
                # Not kept while the task runs: the acceptance holds the parsed answer, a few
                # objects per task that the garbage collector would walk thousands of times.
                del answer
            else:
                job._watch()
            return await self._wait_task(job, ticket, hint)
        finally:
            if receiver is not None and ticket is not None:
                receiver._retire(ticket)

    def _create(
        self, job: Job, model: str | None, ticket: _Ticket | None, attempts: int
    ) -> Awaitable[EditResult | TaskAccepted]:
        """Build and send the job's create: its result (synchronous providers) or the
        provider's acceptance of its task.

        The awaitable is the conversation's own when the request needs nothing read or
        uploaded (only URLs): no coroutine of this runner's between the job and its request.
        """
        request = job.request
        assert request is not None
        if ticket is not None:
            request = _with_callback(request, ticket.url)
        job._submitting()
        urls = _urls_only(request.images)
        if urls is None:  # local files: read (or uploaded) first
            return self._create_built(job, request, model, attempts)
        http = self._provider.build_create(request, urls, model=model)
        job._count_submission()
        # Bound methods, not a coroutine per job: most jobs have no on_send hook to await.
        sending = job._sending_sync if self._sync else job._sending
        return self._calls.create(http, job, on_send=sending, attempts=attempts)

    async def _create_built(
        self, job: Job, request: EditRequest, model: str | None, attempts: int
    ) -> EditResult | TaskAccepted:
        http, body = await self._build_create(request, model)
        job._count_submission()
        sending = job._sending_sync if self._sync else job._sending
        return await self._calls.create(http, job, body=body, on_send=sending, attempts=attempts)

    async def _wait_task(self, job: Job, ticket: _Ticket | None, hint: float | None) -> EditResult:
        """Wait for the end of the job's task: polled, or told by its callback."""
        task_id = job.task_id
        assert task_id is not None
        if ticket is None:
            status = await self._poller.wait(task_id, hint)
        else:
            ticket.bind(task_id)
            plan = self._safety.plan(hint)
            status = await self._poller.wait(task_id, hint, plan=plan, pushed=ticket)
            if ticket.elapsed is not None:
                self._safety.observe_callback(ticket.elapsed)
            else:
                self._safety.observe_poll()
        if status.state is TaskState.SUCCEEDED and status.result is not None:
            return status.result
        if status.error is not None:
            raise status.error
        raise self._no_result(status, job)

    async def _build_create(
        self, request: EditRequest, model: str | None
    ) -> tuple[HttpRequest, StreamedBody | None]:
        """The create request; local images as a body streamed while it is sent."""
        provider = self._provider
        images = request.images
        prepared, sources = await self._preparer.prepare_parts(images)
        http = provider.build_create(request, prepared, model=model)
        if not sources:
            return http, None
        assert http.body is not None
        body = split_body(http.body, sources)
        if body is not None:
            return http, body
        # A dialect that does not carry the data URI verbatim: build the body whole.
        prepared = await self._preparer.prepare(images)
        return provider.build_create(request, prepared, model=model), None


def _too_many(result: EditResult, request: EditRequest | None) -> JobFailedError:
    """The error of a result listing more images than the job asked for."""
    asked = MAX_N if request is None else request.n or 1
    return JobFailedError(
        f"the result lists {len(result.images)} images; {asked} asked for: "
        "refused, nothing was fetched",
        provider=result.provider,
        task_id=result.task_id,
        request_id=result.request_id,
        body=result.raw,
    )


def _urls_only(images: tuple[object, ...]) -> list[str] | None:
    """``images`` as a list when every one is an http(s) URL (sent as given), else None."""
    for image in images:
        if not is_http_url(image):
            return None
    return list(images)  # type: ignore[arg-type]


def _with_callback(request: EditRequest, url: str) -> EditRequest:
    """A copy of ``request`` carrying the job's own callback URL.

    Set without re-validating: the receiver checked the URL, and a loopback ``http://`` one
    (a local fake provider) is allowed there, not in user requests.
    """
    clone = copy.copy(request)
    msgspec.structs.force_setattr(clone, "callback_url", url)
    return clone
