"""A job: one edit from taking its slot to its end."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Awaitable, Callable

import anyio

from ._errors import JobCancelledError, QwenEditError, with_context
from ._models import EditRequest, EditResult

__all__ = ["Job", "JobCancelledError", "JobStatus"]

_ids = itertools.count(1)

#: Awaited just before a create is written.
OnSend = Callable[[], Awaitable[None]]
#: Awaited with (task_id, request_id) each time the provider accepts a create.
OnAccepted = Callable[[str, str | None], Awaitable[None]]


class JobStatus(str, enum.Enum):
    """Where a job stands."""

    #: Waiting for a slot (``max_in_flight`` jobs are running).
    WAITING = "waiting"
    #: Holding a slot: preparing images and sending the create.
    SUBMITTING = "submitting"
    #: Accepted by a task provider; the poller watches it.
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job:
    """A handle on one edit, from :meth:`QwenEditClient.submit` or ``attach``.

    ``id`` is the provider's task id for task providers, a local id for synchronous ones.

    >>> job = await client.submit(request)            # doctest: +SKIP
    >>> job.id, job.status                             # doctest: +SKIP
    ('task-unified-1757156493-imcg5zqt', <JobStatus.PENDING: 'pending'>)
    >>> result = await job.result()                    # doctest: +SKIP
    """

    # Where a new job starts: class-level values, read until the job sets its own, so
    # making a job (thousands per second in a bulk run) sets only what differs.
    status: JobStatus = JobStatus.WAITING
    request_id: str | None = None
    #: How many creates this job took: 1 normally, more when a task that failed
    #: transiently was submitted again (``max_resubmits``), 0 for ``attach``.
    submissions: int = 0
    #: True once the create's request has started to go out on the wire (after any
    #: rate limit, 429 cooldown or slot wait). A job that ended before that was never
    #: sent, so it cannot exist (or be billed) at the provider.
    request_sent: bool = False
    _result: EditResult | None = None
    _error: BaseException | None = None
    # Events are made only when someone waits: most jobs (edit, edit_many) never need
    # them, and at thousands of jobs per second their cost shows.
    _accepted: anyio.Event | None = None
    _done_event: anyio.Event | None = None
    _is_accepted: bool = False
    _is_done: bool = False
    _scope: anyio.CancelScope | None = None
    _cancel_requested: bool = False

    def __init__(
        self,
        request: EditRequest | None,
        *,
        task_id: str | None = None,
        on_send: OnSend | None = None,
        on_accepted: OnAccepted | None = None,
    ) -> None:
        self.request = request
        self.task_id = task_id
        self._number = next(_ids)  # its local id, formatted only when asked for
        #: Awaited just before the create is written (the bulk runner journals it there).
        self._on_send = on_send
        #: Awaited with (task_id, request_id) each time the provider accepts a create, the
        #: resubmissions of a transiently failed task included (the bulk runner journals
        #: the newest task, so a resumed run attaches to it, not to the failed one).
        self._on_accepted = on_accepted

    @property
    def local_id(self) -> str:
        """The job's id in this process, ``job-<n>``."""
        return f"job-{self._number}"

    @property
    def id(self) -> str:
        """The provider's task id once known, else the local id."""
        return self.task_id or self.local_id

    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self._is_done

    async def result(self) -> EditResult:
        """Wait for the end of the job; return its result or raise its error.

        Cancelling this wait does not cancel the job (use :meth:`cancel`).
        """
        await self.wait_done()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def wait_done(self) -> None:
        """Wait for the end of the job without raising its error (see :meth:`exception`)."""
        if self._is_done:
            return
        if self._done_event is None:
            self._done_event = anyio.Event()
        await self._done_event.wait()

    async def _wait_accepted(self) -> None:
        if self._is_accepted:
            return
        if self._accepted is None:
            self._accepted = anyio.Event()
        await self._accepted.wait()

    def exception(self) -> BaseException | None:
        """The job's error once it has ended, else ``None``."""
        return self._error

    def cancel(self) -> None:
        """Stop the job and free its slot. A task already accepted is no longer watched."""
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status.value}>"

    # -- its transitions, driven by the client ------------------------------------------
    # The job changes its own fields: whoever runs it calls these, in this order.

    def _open_scope(self) -> anyio.CancelScope:
        """The cancel scope :meth:`cancel` cancels; already cancelled if asked for earlier."""
        scope = self._scope = anyio.CancelScope()
        if self._cancel_requested:
            scope.cancel()
        return scope

    def _submitting(self) -> None:
        """It holds a slot and its create is being built."""
        self.status = JobStatus.SUBMITTING

    def _count_submission(self) -> None:
        """One more create is about to be sent for it."""
        self.submissions += 1

    def _sending(self) -> Awaitable[None] | None:
        """Its create starts to go out on the wire (a task provider's): what to await first,
        the ``on_send`` hook, if it has one."""
        if self._on_send is not None:
            return self._sending_after_hook(accepted=False)
        self.request_sent = True
        return None

    def _sending_sync(self) -> Awaitable[None] | None:
        """:meth:`_sending` for a synchronous provider, for which a request on its way is as
        good as accepted."""
        if self._on_send is not None:
            return self._sending_after_hook(accepted=True)
        self.request_sent = True
        self._mark_accepted()
        return None

    async def _sending_after_hook(self, *, accepted: bool) -> None:
        assert self._on_send is not None
        await self._on_send()
        self.request_sent = True
        if accepted:
            self._mark_accepted()

    async def _accept(self, task_id: str, request_id: str | None) -> None:
        """The provider accepted its create as ``task_id``."""
        self.task_id, self.request_id = task_id, request_id
        if self._on_accepted is not None:
            await self._on_accepted(task_id, request_id)
        self._watch()

    def _watch(self) -> None:
        """Its task is known (accepted, or attached to): from now on it is polled."""
        self.status = JobStatus.PENDING
        self._mark_accepted()

    # -- used by the client -------------------------------------------------------------

    def _mark_accepted(self) -> None:
        self._is_accepted = True
        if self._accepted is not None:
            self._accepted.set()

    def _finish(self, result: EditResult | None, error: BaseException | None) -> None:
        if self._is_done:
            return
        if isinstance(error, QwenEditError):
            # The error says which task it concerns and how many creates the job took.
            error = with_context(
                error,
                task_id=self.task_id,
                submissions=self.submissions if self.submissions > 1 else None,
            )
        self._result, self._error = result, error
        if error is None:
            self.status = JobStatus.SUCCEEDED
        elif isinstance(error, JobCancelledError):
            self.status = JobStatus.CANCELLED
        else:
            self.status = JobStatus.FAILED
        self._mark_accepted()
        self._is_done = True
        if self._done_event is not None:
            self._done_event.set()
