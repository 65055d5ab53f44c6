"""SyncQwenEditClient: the async client run on an event loop in a background thread.

The loop lives in its own thread behind anyio's blocking portal, so the client works the
same in a plain script and where the calling thread already runs a loop (Jupyter, an
``async def`` calling blocking code). Each method sends one coroutine to that loop and
waits for its answer; interrupting the wait (Ctrl-C) cancels the coroutine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import pathlib
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._client import QwenEditClient
from ._config import ClientConfig
from ._defaults import USE_CLIENT_DEFAULT, _Default
from ._images import ImageInput, Uploader
from ._job import Job, JobStatus
from ._models import EditRequest, EditResult, Outcome, RequestLike
from ._options import ClientOptions, EditOptions, ProviderName
from ._statistics import ClientStatistics, ProgressHook
from .providers import Provider

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

__all__ = ["SyncJob", "SyncQwenEditClient"]

T = TypeVar("T")


class SyncJob:
    """A blocking handle on a :class:`~qwen_edit_async.Job` (from ``submit`` or ``attach``).

    >>> job = client.submit(["cat.png"], "Add a hat")    # doctest: +SKIP
    >>> job.id                                            # doctest: +SKIP
    'task-unified-1757156493-imcg5zqt'
    >>> result = job.result(timeout=120)                  # doctest: +SKIP
    """

    def __init__(self, job: Job, portal: BlockingPortal) -> None:
        self._job = job
        self._portal = portal

    @property
    def id(self) -> str:
        """The provider's task id once known, else the local id."""
        return self._job.id

    @property
    def task_id(self) -> str | None:
        """The provider's task id (task providers)."""
        return self._job.task_id

    @property
    def request_id(self) -> str | None:
        """The provider's request id, when it gave one."""
        return self._job.request_id

    @property
    def status(self) -> JobStatus:
        """Where the job stands."""
        return self._job.status

    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self._job.done()

    def exception(self) -> BaseException | None:
        """The job's error once it has ended, else ``None``."""
        return self._job.exception()

    def result(self, timeout: float | None = None) -> EditResult:
        """Wait for the end of the job; return its result or raise its error.

        ``timeout``: seconds to wait at most, then :class:`TimeoutError` (the job goes on).
        """

        async def wait() -> EditResult:
            with anyio.fail_after(timeout):
                return await self._job.result()

        return _call(self._portal, wait)

    def cancel(self) -> None:
        """Stop the job and free its slot. A task already accepted is no longer watched."""
        self._portal.call(self._job.cancel)

    def __repr__(self) -> str:
        return f"<SyncJob {self.id} {self.status.value}>"


class SyncQwenEditClient:
    """A blocking client with the async client's constructor and methods.

    It starts an event loop in a background thread and runs a :class:`QwenEditClient` there;
    it works in scripts and in notebooks whose thread already runs a loop. Use it as a
    context manager, or call :meth:`close`: closing cancels unfinished jobs, closes the
    HTTP session and stops the thread.

    >>> with SyncQwenEditClient("dashscope-intl") as client:              # doctest: +SKIP
    ...     result = client.edit(["cat.png"], "Give the cat a red hat", n=2)
    ...     paths = client.download(result, "out/")
    ...     for outcome in client.edit_many(requests):
    ...         print(outcome.index, outcome.ok)

    The arguments are those of :class:`QwenEditClient` but ``session`` (an aiohttp session
    belongs to one event loop). ``uploader`` (an async callable) and ``on_progress`` run
    on the client's loop thread.
    """

    def __init__(
        self,
        provider: ProviderName | Provider | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        max_in_flight: int = 16,
        config: ClientConfig | None = None,
        uploader: Uploader | None = None,
        on_progress: ProgressHook | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        portal_cm = start_blocking_portal(backend="asyncio")
        portal = portal_cm.__enter__()
        try:
            portal.call(_name_thread, "qwen-edit-sync")  # for thread dumps and debuggers
            # Built on the loop's thread: its limiters and events belong to that loop.
            client = portal.call(
                functools.partial(
                    QwenEditClient,
                    provider,
                    api_key=api_key,
                    base_url=base_url,
                    model=model,
                    max_in_flight=max_in_flight,
                    config=config,
                    uploader=uploader,
                    on_progress=on_progress,
                    **options,
                )
            )
            # The client's task group must be entered and left by one task: the portal
            # keeps one running for the context manager.
            client_cm = portal.wrap_async_context_manager(client)
            client_cm.__enter__()
        except BaseException:
            portal_cm.__exit__(None, None, None)
            raise
        self._portal = portal
        self._client: QwenEditClient = client
        # Also closes a client that was dropped unclosed, at the latest at exit.
        self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
            self, _shut_down, client_cm, portal_cm
        )

    @classmethod
    def _view(cls, portal: BlockingPortal, client: QwenEditClient) -> SyncQwenEditClient:
        view = cls.__new__(cls)
        view._portal = portal
        view._client = client
        view._finalizer = None  # a view owns nothing
        return view

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SyncQwenEditClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel unfinished jobs, close the session and stop the loop thread.

        Calling it again does nothing. On a view from :meth:`with_options` it does nothing:
        the view lives as long as its client.
        """
        if self._finalizer is not None:
            self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed."""
        return self._client.closed

    @property
    def provider(self) -> Provider:
        """The provider dialect in use (name, base URL, default model)."""
        return self._client.provider

    @property
    def config(self) -> ClientConfig:
        """The client's timeouts, retry and polling settings."""
        return self._client.config

    def __repr__(self) -> str:
        return f"Sync{self._client!r}"

    # -- the methods ----------------------------------------------------------------------

    def _run(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._client.closed:
            raise RuntimeError("this SyncQwenEditClient is closed")
        return _call(self._portal, functools.partial(func, *args, **kwargs))

    def edit(
        self,
        images: Sequence[ImageInput] | ImageInput | EditRequest,
        prompt: str | None = None,
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        **options: Unpack[EditOptions],
    ) -> EditResult:
        """Edit ``images`` as ``prompt`` says and wait for the result (see
        :meth:`QwenEditClient.edit`).

        >>> result = client.edit(["cat.png"], "Add a hat", n=2)  # doctest: +SKIP
        """
        return self._run(
            self._client.edit, images, prompt, model=model, job_timeout=job_timeout, **options
        )

    def submit(
        self,
        images: Sequence[ImageInput] | ImageInput | EditRequest,
        prompt: str | None = None,
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        **options: Unpack[EditOptions],
    ) -> SyncJob:
        """Start an edit; return its :class:`SyncJob` once the provider accepted it (see
        :meth:`QwenEditClient.submit`).

        >>> job = client.submit(["cat.png"], "Add a hat")  # doctest: +SKIP
        """
        job = self._run(
            self._client.submit, images, prompt, model=model, job_timeout=job_timeout, **options
        )
        return SyncJob(job, self._portal)

    def attach(
        self, task_id: str, *, job_timeout: float | _Default | None = USE_CLIENT_DEFAULT
    ) -> SyncJob:
        """A :class:`SyncJob` for a task created earlier; an unknown id raises
        :class:`TaskNotFoundError` here (see :meth:`QwenEditClient.attach`).

        >>> result = client.attach("task-unified-1757156493-imcg5zqt").result()  # doctest: +SKIP
        """
        job = self._run(self._client.attach, task_id, job_timeout=job_timeout)
        return SyncJob(job, self._portal)

    def edit_many(
        self,
        requests: Iterable[RequestLike],
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
    ) -> Iterator[Outcome]:
        """Run many edits; iterate over an :class:`Outcome` for each as it ends (see
        :meth:`QwenEditClient.edit_many`).

        The requests are read lazily on the client's thread. Stopping early (``break``, an
        exception) cancels the jobs that were started; ``contextlib.closing`` around the
        iterator makes that immediate where the iterator may outlive the loop.

        >>> for outcome in client.edit_many(requests):  # doctest: +SKIP
        ...     print(outcome.index, outcome.result or outcome.error)
        """
        if self._client.closed:
            raise RuntimeError("this SyncQwenEditClient is closed")
        outcomes = self._client.edit_many(requests, model=model, job_timeout=job_timeout)
        return _iterate(self._portal, outcomes)

    def download(
        self, result: EditResult, dest: str | os.PathLike[str], *, stem: str | None = None
    ) -> list[pathlib.Path]:
        """Save every image of ``result`` into the folder ``dest``; return the paths (see
        :meth:`QwenEditClient.download`).

        >>> paths = client.download(result, "out/")  # doctest: +SKIP
        """
        return self._run(self._client.download, result, dest, stem=stem)

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of the client's counters (still readable once closed)."""
        if self._client.closed:
            return self._client.statistics()
        return self._portal.call(self._client.statistics)

    def with_options(
        self,
        *,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        max_attempts: int | None = None,
        model: str | None = None,
    ) -> SyncQwenEditClient:
        """A view with other defaults, sharing this client's session, limits, cooldown and
        poller (see :meth:`QwenEditClient.with_options`).

        >>> fast = client.with_options(max_attempts=1, job_timeout=20)  # doctest: +SKIP
        """
        view = self._client.with_options(
            job_timeout=job_timeout, max_attempts=max_attempts, model=model
        )
        return SyncQwenEditClient._view(self._portal, view)


def _call(portal: BlockingPortal, func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on the portal's loop and wait; an interrupted wait cancels it."""
    future = portal.start_task_soon(func)
    try:
        while True:
            try:
                # Waits in slices: a wait with a timeout lets Ctrl-C through at once.
                return future.result(timeout=_WAIT_SLICE)
            except concurrent.futures.TimeoutError:
                if future.done():
                    raise  # the call itself timed out (SyncJob.result(timeout=...))
    except BaseException:
        future.cancel()  # Ctrl-C while waiting: the coroutine must not run on unwatched
        raise


#: Seconds between checks for a signal while waiting for the client's loop.
_WAIT_SLICE = 0.5

_END = object()


def _iterate(portal: BlockingPortal, outcomes: AsyncGenerator[Outcome, None]) -> Iterator[Outcome]:
    async def step() -> Any:
        try:
            return await outcomes.__anext__()
        except StopAsyncIteration:
            return _END

    try:
        while True:
            item = _call(portal, step)
            if item is _END:
                return
            yield item
    finally:
        # Leaving early cancels the jobs edit_many started (its own finally does that).
        # A RuntimeError: the client's loop has already stopped, so nothing is left running.
        with contextlib.suppress(RuntimeError):
            portal.call(outcomes.aclose)


def _name_thread(name: str) -> None:
    threading.current_thread().name = name


def _shut_down(
    client_cm: AbstractContextManager[Any], portal_cm: AbstractContextManager[Any]
) -> None:
    try:
        client_cm.__exit__(None, None, None)
    finally:
        portal_cm.__exit__(None, None, None)
