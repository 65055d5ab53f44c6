"""QwenEditClient: the lifecycle, bounded jobs in flight, and edit/submit/attach/edit_many."""

from __future__ import annotations

import functools
import logging
import os
import pathlib
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup

from . import _parts
from ._callbacks import CallbackReceiver
from ._config import ClientConfig
from ._defaults import USE_CLIENT_DEFAULT, _Default
from ._download import download_result
from ._errors import ValidationError
from ._images import ImageInput, Uploader
from ._job import Job, OnAccepted, OnSend
from ._jobs import JobRunner
from ._many import run_many
from ._models import EditRequest, EditResult, Outcome, RequestLike, as_request
from ._options import ClientOptions, EditOptions, ProviderName
from ._poller import status_concurrency
from ._prepare import ImagePreparer
from ._safety import SafetyNet
from ._statistics import ClientStatistics, ProgressHook
from ._taskhost import TaskHost
from .providers import Provider

if TYPE_CHECKING:
    import aiohttp  # the type of a session the caller shares; the pipe uses it
    from typing_extensions import Unpack  # typing's own from Python 3.11

__all__ = ["USE_CLIENT_DEFAULT", "ClientStatistics", "QwenEditClient"]

logger = logging.getLogger("qwen_edit_async")


class QwenEditClient:
    """An async client for qwen-image-edit-plus on one provider.

    Use it as an async context manager; it owns its HTTP session (unless given one), its
    poller and the jobs it starts, and closes them all on exit.

    >>> async with QwenEditClient("evolink", uploader=my_uploader) as client:  # doctest: +SKIP
    ...     result = await client.edit(["cat.png"], "Make it a watercolour", n=2)
    ...     paths = await client.download(result, "out/")

    ``provider``: a name (``"dashscope"``, ``"dashscope-intl"``, ``"modelstream"``,
    ``"onetoken"``, ``"evolink"``, ``"vtrix"``) or a provider object; else
    ``QWEN_EDIT_PROVIDER``, else ``"dashscope"``. ``api_key``: else ``QWEN_EDIT_API_KEY``,
    else the provider's own variable. ``base_url``: the root URL
    (``"http://127.0.0.1:8000"``), else ``QWEN_EDIT_BASE_URL`` (unless ``provider`` is an
    object, which keeps its own). The client's own session honours ``HTTP_PROXY``,
    ``HTTPS_PROXY`` and ``NO_PROXY``. ``max_in_flight``: the most jobs between taking a
    slot and their end (the client learns how many the provider allows, up to this).
    ``session``: an ``aiohttp.ClientSession`` to use and leave open. ``uploader``: an
    async ``(data, mime) -> url`` for local images on URL-only providers. ``on_progress``:
    called with :meth:`statistics` whenever a job starts or ends. ``shared``: a
    ``redis://`` URL; every client with the same provider, base URL and key then shares one
    set of limits (needs the ``redis`` extra). Any
    :class:`ClientConfig` field may be given as a keyword (``job_timeout=120``).

    ``callbacks``: a :class:`CallbackReceiver` (Evolink only: the one provider that calls
    back). Every create then carries its own ``callback_url``, the job ends as soon as the
    provider's callback arrives, and polling only checks, late, on tasks whose callback has
    not come. A request with its own ``callback_url`` keeps it and is polled as usual, as
    are jobs from :meth:`attach`. Other providers refuse ``callbacks`` with a
    :class:`ConfigurationError`.
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
        session: aiohttp.ClientSession | None = None,
        uploader: Uploader | None = None,
        on_progress: ProgressHook | None = None,
        callbacks: CallbackReceiver | None = None,
        shared: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        _parts.check_max_in_flight(max_in_flight)
        self.config = _parts.config_with(config or ClientConfig(), options)
        self.provider, self._api_key = _parts.pick_provider(provider, base_url, model, api_key)
        _parts.check_callbacks(callbacks, self.provider)
        self._callbacks = callbacks
        self.max_in_flight = max_in_flight
        self._on_progress = on_progress
        self._build_parts(session, uploader, shared)
        self._downloads = anyio.CapacityLimiter(self.config.download_concurrency)
        #: The model of calls that name none (``None``: the provider's); views change it.
        self._default_model: str | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._task_group: TaskGroup | None = None
        self._host = TaskHost()

    def _build_parts(
        self, session: aiohttp.ClientSession | None, uploader: Uploader | None, shared: str | None
    ) -> None:
        cfg, provider, callbacks = self.config, self.provider, self._callbacks
        most = self.max_in_flight
        poll_concurrency = status_concurrency(most, cfg.poll_concurrency)
        self._limits = _parts.make_limits(cfg, provider, self._api_key, most, shared)
        self._calls = _parts.make_calls(
            cfg,
            provider,
            self._api_key,
            self._limits,
            session,
            max_in_flight=most,
            poll_concurrency=poll_concurrency,
        )
        self._preparer = ImagePreparer(
            accepts_data_uri=provider.accepts_data_uri,
            uploader=uploader,
            provider=provider.name,
            cache_bytes=cfg.image_cache_bytes,
        )
        self._poller = _parts.make_poller(cfg, provider, self._calls, poll_concurrency)
        self._safety = SafetyNet(
            initial=cfg.poll_initial,
            max_interval=cfg.poll_max_interval,
            public_url=callbacks.public_url if callbacks is not None else "",
        )
        self._jobs = JobRunner(
            provider,
            self._calls,
            self._limits,
            self._poller,
            self._preparer,
            self._safety,
            callbacks,
            # No hook, no call per job.
            progress=self._progress if self._on_progress is not None else None,
        )

    def __repr__(self) -> str:
        return (
            f"QwenEditClient({self.provider.name!r}, base_url={self.provider.base_url!r}, "
            f"model={self.provider.model!r}, max_in_flight={self.max_in_flight}, "
            f"api_key={self._api_key!r}, state={self._state!r})"
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> QwenEditClient:
        if self._state == "open":
            raise RuntimeError("this QwenEditClient is already open")
        if self._state == "closed":
            raise RuntimeError("a closed QwenEditClient cannot be reopened; create a new one")
        await self._calls.pipe.open()
        try:
            self._task_group = await self._host.start(self._poller.run)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._calls.pipe.aclose()
            self._state = "closed"
            raise
        await self._limits.open(self._task_group)
        self._state = "open"
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel pending work, stop the poller and close the session (if owned).

        Any task may call it, not only the one that opened the client; calling it again,
        or on a client never opened, does nothing.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        self._task_group = None
        try:
            await self._host.stop()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._limits.aclose()
                finally:
                    await self._calls.pipe.aclose()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed (it cannot be reopened)."""
        return self._state == "closed"

    def _require_open(self) -> TaskGroup:
        if self._state != "open" or self._task_group is None:
            if self._state == "closed":
                raise RuntimeError("this QwenEditClient is closed")
            raise RuntimeError(
                "this QwenEditClient is not open: use 'async with QwenEditClient(...) as client:'"
            )
        return self._task_group

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of the client's counters and of the limits in force."""
        limits = self._limits.snapshot()
        return ClientStatistics(
            in_flight=self._limits.in_flight,
            waiting=self._jobs.waiting,
            polling=self._poller.pending,
            completed=self._jobs.completed,
            failed=self._jobs.failed,
            status_requests=self._calls.status_requests,
            completed_by_callback=self._poller.completed_by_callback,
            completed_by_poll=self._poller.completed_by_poll,
            in_flight_limit=limits.in_flight,
            submit_rate_limit=limits.rate,
            rate_limited=limits.rate_limited,
        )

    def _progress(self) -> None:
        if self._on_progress is not None:
            try:
                self._on_progress(self.statistics())
            except Exception:
                # A broken hook must not end jobs or the client; say so once per call.
                logger.exception("the on_progress hook raised; the jobs go on")

    # -- one job --------------------------------------------------------------------------

    def _timeout(self, job_timeout: float | _Default | None) -> float | None:
        if isinstance(job_timeout, _Default):
            return self.config.job_timeout
        return job_timeout

    def _model_for(self, model: str | None) -> str | None:
        return model if model is not None else self._default_model

    async def _run(self, job: Job, model: str | None, limit: float | None) -> None:
        """Run ``job`` to its end in the current task (see :meth:`JobRunner.run`)."""
        await self._jobs.run(job, model, limit, self.config)

    def _new_job(
        self,
        request: EditRequest,
        model: str | None,
        *,
        on_send: OnSend | None = None,
        on_accepted: OnAccepted | None = None,
    ) -> Job:
        if not isinstance(request, EditRequest):
            raise ValidationError(
                f"request: {type(request).__name__} is not an EditRequest", field="request"
            )
        self.provider.check(request, model=model)
        return Job(request, on_send=on_send, on_accepted=on_accepted)

    # -- views ----------------------------------------------------------------------------

    def _root_client(self) -> QwenEditClient:
        return self

    def with_options(
        self,
        *,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        max_attempts: int | None = None,
        model: str | None = None,
    ) -> QwenEditClient:
        """A view of this client with other defaults for the calls made through it.

        The view shares everything that must be shared: the HTTP session, the
        ``max_in_flight`` slots, the 429 cooldown, the poller and the counters of
        :meth:`statistics`. Only the defaults differ: ``job_timeout`` (``None`` turns the
        deadline off), ``max_attempts`` for a create (``1``: a 429 or 5xx is raised at
        once, for a route that must fail fast) and ``model``. The view needs no closing:
        it lives as long as the client, and closing the client ends it.

        >>> fast = client.with_options(max_attempts=1, job_timeout=20)  # doctest: +SKIP
        >>> result = await fast.edit(["cat.png"], "Add a hat")          # doctest: +SKIP
        """
        config = _parts.view_config(self.config, job_timeout, max_attempts, model)
        return _ClientView(self._root_client(), config, self._model_for(model))

    # -- public API -----------------------------------------------------------------------

    async def edit(
        self,
        images: Sequence[ImageInput] | ImageInput | EditRequest,
        prompt: str | None = None,
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        **options: Unpack[EditOptions],
    ) -> EditResult:
        """Edit ``images`` as ``prompt`` says and wait for the result.

        ``options`` are :class:`EditRequest` fields (``n``, ``size``, ``seed``,
        ``negative_prompt``, ``prompt_extend``, ``watermark``, ``callback_url``); a ready
        :class:`EditRequest` may be given instead of ``images``, ``prompt`` and options.
        ``model`` and ``job_timeout`` override the client's for this call. Cancelling the
        call cancels the job and frees its slot.

        >>> result = await client.edit(["cat.png"], "Add a hat", n=2)  # doctest: +SKIP
        >>> result = await client.edit(qe.EditRequest(images=["cat.png"], prompt="Add a hat"))
        ... # doctest: +SKIP
        """
        self._require_open()
        request = as_request(images, prompt, options)
        model = self._model_for(model)
        job = self._new_job(request, model)
        await self._run(job, model, self._timeout(job_timeout))
        return await job.result()

    async def submit(
        self,
        images: Sequence[ImageInput] | ImageInput | EditRequest,
        prompt: str | None = None,
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        **options: Unpack[EditOptions],
    ) -> Job:
        """Start an edit and return its :class:`Job` once the provider has accepted it
        (task providers) or once the request is on its way (synchronous providers).

        Takes what :meth:`edit` takes: ``images``, ``prompt`` and options, or a ready
        :class:`EditRequest`. Errors before acceptance are raised here. The job belongs to
        the client: it runs on after this call returns, until it ends, ``job.cancel()``, or
        the client closes.

        >>> job = await client.submit(["cat.png"], "Add a hat", seed=7)  # doctest: +SKIP
        >>> task_id = job.id                                            # doctest: +SKIP
        """
        self._require_open()
        request = as_request(images, prompt, options)
        return await self._submit(request, model=model, job_timeout=job_timeout)

    async def _submit(
        self,
        request: EditRequest,
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        on_send: OnSend | None = None,
        on_accepted: OnAccepted | None = None,
    ) -> Job:
        """:meth:`submit`, with ``on_send`` awaited just before each create is written and
        ``on_accepted(task_id, request_id)`` each time the provider accepts one."""
        task_group = self._require_open()
        model = self._model_for(model)
        job = self._new_job(request, model, on_send=on_send, on_accepted=on_accepted)
        task_group.start_soon(self._run, job, model, self._timeout(job_timeout))
        try:
            await job._wait_accepted()
        except BaseException:
            job.cancel()
            raise
        if job.done() and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]
        return job

    async def attach(
        self, task_id: str, *, job_timeout: float | _Default | None = USE_CLIENT_DEFAULT
    ) -> Job:
        """A :class:`Job` for a task created earlier (task providers only).

        The task is asked for once before this returns: an unknown or expired id raises
        :class:`TaskNotFoundError` here, and nothing is left running. A task that already
        ended gives a job that is already done.

        >>> job = await client.attach("task-unified-1757156493-imcg5zqt")  # doctest: +SKIP
        >>> result = await job.result()                                      # doctest: +SKIP
        """
        task_group = self._require_open()
        if not self.provider.is_task:
            raise ValidationError(
                f"task_id: {self.provider.name} is synchronous; it has no tasks to attach to",
                field="task_id",
            )
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValidationError(f"task_id: {task_id!r} is not a task id", field="task_id")
        self.provider.build_status(task_id)  # refuses an id that is not one path segment
        first = await self._calls.status(task_id)
        job = Job(None, task_id=task_id)
        if first.state.done:
            # Ended already: answer from this status rather than waiting for the poller.
            self._jobs.end_attached(job, first)
            return job
        task_group.start_soon(self._run, job, None, self._timeout(job_timeout))
        await job._wait_accepted()
        return job

    def edit_many(
        self,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
    ) -> AsyncGenerator[Outcome, None]:
        """Run many edits, yielding an :class:`Outcome` for each as it ends.

        Each request is an :class:`EditRequest` or a dict of its fields
        (``{"images": [...], "prompt": "...", "n": 2}``); one that is not valid ends as an
        outcome with a :class:`ValidationError`, and the others go on.

        ``requests`` is consumed lazily: only about ``max_in_flight`` of them are held at a
        time, so a generator of a million requests is fine, and the work started follows
        the requests (one request starts one job, whatever ``max_in_flight`` is). One
        failed job never stops the others: its outcome carries the error. Leaving the loop
        early (``break``, an exception, cancellation) cancels the jobs it started; wrap it
        in ``contextlib.aclosing`` to make that immediate.

        >>> async for outcome in client.edit_many(requests):   # doctest: +SKIP
        ...     print(outcome.index, outcome.result or outcome.error)
        """
        model = self._model_for(model)
        limit, config, runner = self._timeout(job_timeout), self.config, self._jobs
        new_job = self._new_job
        return run_many(
            requests,
            open_group=self._require_open,
            width=self.max_in_flight,
            # Closures with positional calls (a partial with keywords merges a dict per job).
            new_job=lambda request: new_job(request, model),
            run_job=lambda job, scope: runner.run(job, model, limit, config, scope=scope),
        )

    async def download(
        self, result: EditResult, dest: str | os.PathLike[str], *, stem: str | None = None
    ) -> list[pathlib.Path]:
        """Save every image of ``result`` into the folder ``dest``; return the paths.

        Files are named ``<stem>-<k>.<ext>`` (``stem`` defaults to the task or request id;
        ``stem=""`` gives ``<k>.<ext>``), written atomically, capped at
        ``download_max_bytes``. An expired URL raises :class:`DownloadError` saying so.
        """
        return await self._download(result, dest, stem=stem)

    async def _download(
        self,
        result: EditResult,
        dest: str | os.PathLike[str],
        *,
        stem: str | None = None,
        durable: bool = True,
    ) -> list[pathlib.Path]:
        """:meth:`download`; ``durable=False`` leaves the fsyncs to the caller (bulk runs
        sync their saved files in batches)."""
        self._require_open()
        return await download_result(
            functools.partial(self._calls.fetch, attempts=self.config.max_attempts),
            result,
            dest,
            stem=stem,
            config=self.config,
            limiter=self._downloads,
            durable=durable,
        )


class _ClientView(QwenEditClient):
    """What :meth:`QwenEditClient.with_options` returns: the client with other defaults.

    Everything but ``config`` and the default model is read from and written to the client
    itself (slots, poller, transport, counters, state), so the two can never drift apart.
    """

    def __init__(self, root: QwenEditClient, config: ClientConfig, model: str | None) -> None:
        # Deliberately no super().__init__(): the view owns nothing of its own.
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "_default_model", model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._root, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._root, name, value)

    def _root_client(self) -> QwenEditClient:
        root: QwenEditClient = self._root
        return root

    def __repr__(self) -> str:
        return f"<view of {self._root!r} job_timeout={self.config.job_timeout!r}>"

    async def __aenter__(self) -> QwenEditClient:
        self._require_open()
        return self

    async def aclose(self) -> None:
        """Nothing to close: the view lives as long as its client."""
