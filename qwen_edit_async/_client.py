"""QwenEditClient: the lifecycle, bounded jobs in flight, and edit/submit/attach/edit_many."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import enum
import functools
import logging
import math
import os
import pathlib
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import nullcontext
from typing import Any, Literal

import aiohttp
import anyio
import msgspec
from anyio.abc import TaskGroup

from ._body import StreamedBody, split_body
from ._callbacks import CallbackReceiver, SafetyNet, _Ticket
from ._config import (
    ClientConfig,
    resolve_api_key,
    resolve_base_url,
    resolve_provider,
)
from ._download import download_result
from ._errors import (
    ConfigurationError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    QwenEditError,
    ValidationError,
)
from ._images import ImageInput, Uploader
from ._job import Job, JobStatus
from ._limits import Limits, LocalLimits
from ._many import run_many
from ._models import MAX_N, EditRequest, EditResult, Outcome, RequestLike, as_request
from ._pacing import AdaptiveRate
from ._poller import Poller
from ._prepare import ImagePreparer
from ._schedule import PollSchedule
from ._transport import Transport
from .providers import Provider, get_provider
from .providers._base import HttpRequest, TaskState

__all__ = ["USE_CLIENT_DEFAULT", "ClientStatistics", "QwenEditClient"]

logger = logging.getLogger("qwen_edit_async")


class _Default(enum.Enum):
    USE_CLIENT_DEFAULT = "USE_CLIENT_DEFAULT"


#: Marks an argument left to the client's configuration (distinct from ``None``, which
#: disables a timeout).
USE_CLIENT_DEFAULT = _Default.USE_CLIENT_DEFAULT


class ClientStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a client's work (``client.statistics()``)."""

    #: Jobs holding a slot (between taking it and their end).
    in_flight: int
    #: Jobs waiting for a slot.
    waiting: int
    #: Tasks the poller is watching.
    polling: int
    #: Jobs that ended with a result, and with an error.
    completed: int
    failed: int
    #: Status requests sent so far.
    status_requests: int
    #: Tasks whose end a provider callback reported, and a status request (with
    #: ``callbacks=``, polling only catches the callbacks that did not come).
    completed_by_callback: int = 0
    completed_by_poll: int = 0
    #: The limits in force: jobs in flight and creates per second (``None``: unpaced),
    #: learned from the provider unless ``adaptive_limits=False``; and 429s received.
    in_flight_limit: int = 0
    submit_rate_limit: float | None = None
    rate_limited: int = 0


ProgressHook = Callable[[ClientStatistics], None]


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
        provider: str | Provider | None = None,
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
        **options: Any,
    ) -> None:
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValidationError(
                f"max_in_flight: {max_in_flight!r} must be a whole number of at least 1",
                field="max_in_flight",
            )
        base = config or ClientConfig()
        unknown = set(options) - {f.name for f in dataclasses.fields(ClientConfig)}
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        self.config = dataclasses.replace(base, **options) if options else base
        if base_url is not None or not isinstance(provider, Provider):
            # A provider object keeps its own root URL unless base_url says otherwise.
            base_url = resolve_base_url(base_url)
        chosen = resolve_provider(provider)
        self.provider = get_provider(chosen, base_url=base_url, model=model)  # type: ignore[arg-type]
        self._api_key = resolve_api_key(api_key, self.provider.env_var)
        if callbacks is not None and not isinstance(callbacks, CallbackReceiver):
            raise ConfigurationError(
                f"callbacks: {type(callbacks).__name__} is not a CallbackReceiver"
            )
        if callbacks is not None and not self.provider.supports_callback:
            raise ConfigurationError(
                f"callbacks: {self.provider.name} does not call back when a task ends "
                "(only evolink takes a callback_url); leave callbacks unset and its jobs "
                "are polled",
                provider=self.provider.name,
            )
        self._callbacks = callbacks
        self.max_in_flight = max_in_flight
        cfg = self.config
        poll_concurrency = min(cfg.poll_concurrency or max_in_flight, max_in_flight)
        connections = max_in_flight + cfg.download_concurrency
        if self.provider.is_task:
            connections += poll_concurrency
        self._limits = self._make_limits(shared)
        self._transport = Transport(
            self.provider,
            self._api_key,
            cfg,
            session=session,
            connections=connections,
            limits=self._limits,
        )
        self._preparer = ImagePreparer(
            accepts_data_uri=self.provider.accepts_data_uri,
            uploader=uploader,
            provider=self.provider.name,
            cache_bytes=cfg.image_cache_bytes,
        )
        self._schedule = PollSchedule(
            initial=cfg.poll_initial,
            growth=cfg.poll_growth,
            max_interval=cfg.poll_max_interval,
            jitter=cfg.poll_jitter,
            rng=random.Random(),
            recheck=True,  # the poller asks again when an entry comes due
        )
        ceiling = cfg.poll_rate
        if self.provider.poll_rate_limit is not None:
            ceiling = min(ceiling or math.inf, self.provider.poll_rate_limit)
        self._poller = Poller(
            functools.partial(self._transport.status, attempts=1),
            self._schedule,
            concurrency=poll_concurrency,
            rate=AdaptiveRate(ceiling=ceiling),
            policy=self._transport.policy,
            retry_max=cfg.poll_max_interval,
        )
        self._safety = SafetyNet(
            initial=cfg.poll_initial,
            max_interval=cfg.poll_max_interval,
            public_url=callbacks.public_url if callbacks is not None else "",
        )
        self._downloads = anyio.CapacityLimiter(cfg.download_concurrency)
        self._on_progress = on_progress
        #: The model of calls that name none (``None``: the provider's); views change it.
        self._default_model: str | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._task_group: TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._waiting = 0
        self._completed = 0
        self._failed = 0

    def _make_limits(self, shared: str | None) -> Limits:
        cfg = self.config
        local = LocalLimits(
            max_in_flight=self.max_in_flight,
            submit_rate=cfg.submit_rate,
            adaptive=cfg.adaptive_limits,
        )
        if shared is None:
            return local
        from ._shared import RedisLimits  # the redis package is an optional extra

        return RedisLimits(
            shared,
            local,
            provider=self.provider.name,
            base_url=self.provider.base_url,
            api_key=self._api_key,
            lease_ttl=cfg.lease_ttl,
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
        await self._transport.open()
        # The task group lives in a task of its own, not in the caller's: then any task may
        # close the client (a FastAPI lifespan, a signal handler), and a job's failure never
        # cancels the code inside ``async with``.
        started: asyncio.Future[TaskGroup] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        runner = self._runner = asyncio.create_task(self._hold_task_group(started))
        try:
            await asyncio.wait((started, runner), return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                raise RuntimeError("the client's task group ended as it started") from (
                    runner.exception()
                )
        except BaseException:
            runner.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(runner, return_exceptions=True)
                await self._transport.aclose()
            self._state = "closed"
            raise
        self._task_group = started.result()
        await self._limits.open(self._task_group)
        self._state = "open"
        return self

    async def _hold_task_group(self, started: asyncio.Future[TaskGroup]) -> None:
        """Own the client's task group (the poller and every job) until :meth:`aclose`."""
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._poller.run, task_group)
            started.set_result(task_group)
            await self._stop.wait()
            task_group.cancel_scope.cancel()

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
        runner, self._runner = self._runner, None
        try:
            self._stop.set()
            if runner is not None:
                # Shielded: a caller cancelled while closing still leaves nothing running.
                with anyio.CancelScope(shield=True):
                    (outcome,) = await asyncio.gather(runner, return_exceptions=True)
                if isinstance(outcome, Exception):
                    # Jobs and the poller catch their own errors; this is a bug, so say so
                    # rather than raise an exception group out of a close.
                    logger.error("the client's task group failed", exc_info=outcome)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._limits.aclose()
                finally:
                    await self._transport.aclose()

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
            waiting=self._waiting,
            polling=self._poller.pending,
            completed=self._completed,
            failed=self._failed,
            status_requests=self._transport.status_requests,
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

    async def _run(
        self, job: Job, model: str | None, limit: float | None, *, handle: bool = True
    ) -> None:
        """Run ``job`` to its end in the current task; never raises (but cancellation).

        ``handle``: the job has a handle (``job.cancel()``) and needs its own cancel scope;
        ``edit_many``'s jobs are cancelled with their worker, and go without one.
        """
        error: BaseException | None = None
        result: EditResult | None = None
        try:
            scope = anyio.CancelScope() if handle else None
            with scope if scope is not None else nullcontext():
                if scope is not None:
                    job._scope = scope
                    if job._cancel_requested:
                        scope.cancel()
                self._waiting += 1
                try:
                    # A free slot needs no trip through the event loop.
                    if not self._limits.try_acquire(job):
                        await self._limits.acquire(job)
                finally:
                    self._waiting -= 1
                try:
                    self._progress()
                    if limit is None:
                        result = await self._execute(job, model)
                    else:
                        try:
                            with anyio.fail_after(limit):
                                result = await self._execute(job, model)
                        except TimeoutError:
                            error = JobTimeoutError(
                                f"no result within the job timeout of {limit:g} s; the task "
                                "may still finish: collect it later with "
                                "client.attach(task_id)",
                                provider=self.provider.name,
                                task_id=job.task_id,
                            )
                finally:
                    self._limits.release(job)
            if scope is not None and scope.cancelled_caught:
                error = JobCancelledError(
                    "the job was cancelled", provider=self.provider.name, task_id=job.task_id
                )
        except QwenEditError as exc:
            error = exc
        except anyio.get_cancelled_exc_class():
            job._finish(
                None,
                JobCancelledError(
                    "the job was cancelled", provider=self.provider.name, task_id=job.task_id
                ),
            )
            self._failed += 1
            raise
        except Exception as exc:
            error = exc
        if isinstance(error, QwenEditError):
            if error.task_id is None:
                error.task_id = job.task_id
            if job.submissions > 1:
                error.submissions = job.submissions
        if error is None:
            self._completed += 1
        else:
            self._failed += 1
        job._finish(result, error)
        self._progress()

    async def _execute(self, job: Job, model: str | None) -> EditResult:
        """Submit ``job`` and wait for its end, submitting it again after a task failure the
        provider calls transient (a failed task is not billed), up to ``max_resubmits``."""
        create = job.task_id is None  # else the job attaches to a task created earlier
        while True:
            try:
                result = await self._submission(job, model, create)
            except JobFailedError as exc:
                if not (
                    exc.retryable
                    and job.request is not None
                    and job.submissions <= self.config.max_resubmits
                ):
                    raise
                logger.info(
                    "task %s failed transiently (%s); submitting the job again (%d of %d)",
                    job.task_id,
                    exc.code or exc.message,
                    job.submissions,
                    self.config.max_resubmits,
                )
                # job.task_id names the failed task until the new one is accepted, so an
                # error (a timeout) in between still says which task was paid for last.
                create = True
                # Full jitter, one doubling ahead of the create retries: the task ran and
                # failed, so the provider had a moment already.
                wait = self._transport.policy.delay(job.submissions + 1)
                if wait:
                    await anyio.sleep(wait)
                continue
            asked = MAX_N if job.request is None else job.request.n or 1
            if len(result.images) > asked:
                raise JobFailedError(
                    f"the result lists {len(result.images)} images; {asked} asked for: "
                    "refused, nothing was fetched",
                    provider=result.provider,
                    task_id=result.task_id,
                    request_id=result.request_id,
                    body=result.raw,
                )
            return result

    async def _submission(self, job: Job, model: str | None, create: bool) -> EditResult:
        """One create (unless the job attaches to its task) and the wait for its end, told
        by a completion callback when the client has a receiver."""
        receiver = self._callbacks
        if (
            receiver is None
            or not create
            or job.request is None
            or job.request.callback_url is not None
        ):
            return await self._execute_once(job, model, None, create)
        ticket = receiver._issue(self.provider, mask=self._transport.mask)
        try:
            return await self._execute_once(job, model, ticket, create)
        finally:
            receiver._retire(ticket)

    async def _execute_once(
        self, job: Job, model: str | None, ticket: _Ticket | None, create: bool
    ) -> EditResult:
        provider = self.provider
        if create:
            request = job.request
            assert request is not None
            if ticket is not None:
                request = _with_callback(request, ticket.url)
            job.status = JobStatus.SUBMITTING
            http, body = await self._build_create(request, model)

            async def sending() -> None:
                if job._on_send is not None:
                    await job._on_send()
                job.request_sent = True
                if provider.mode == "sync":
                    job._mark_accepted()  # the request is on its way

            job.submissions += 1
            answer = await self._transport.create(
                http, job, body=body, on_send=sending, attempts=self.config.max_attempts
            )
            if isinstance(answer, EditResult):
                if answer.model is None:
                    answer.model = model or provider.model
                return answer
            job.task_id, job.request_id = answer.task_id, answer.request_id
            if job._on_accepted is not None:
                await job._on_accepted(answer.task_id, answer.request_id)
            job.status = JobStatus.PENDING
            job._mark_accepted()
            hint = answer.estimated_time
        else:
            job.status = JobStatus.PENDING
            job._mark_accepted()
            hint = None
        assert job.task_id is not None
        if ticket is None:
            status = await self._poller.wait(job.task_id, hint)
        else:
            ticket.bind(job.task_id)
            plan = self._safety.plan(hint)
            status = await self._poller.wait(job.task_id, hint, plan=plan, pushed=ticket)
            if ticket.elapsed is not None:
                self._safety.observe_callback(ticket.elapsed)
            else:
                self._safety.observe_poll()
        if status.state is TaskState.SUCCEEDED and status.result is not None:
            return status.result
        if status.error is not None:
            raise status.error
        raise QwenEditError(
            f"the task ended as {status.state.value} without a result",
            provider=provider.name,
            task_id=job.task_id,
        )

    async def _build_create(
        self, request: EditRequest, model: str | None
    ) -> tuple[HttpRequest, StreamedBody | None]:
        """The create request; local images as a body streamed while it is sent."""
        images = request.images
        urls = [i for i in images if isinstance(i, str) and i.startswith(_URL_PREFIXES)]
        if len(urls) == len(images):
            return self.provider.build_create(request, urls, model=model), None
        prepared, sources = await self._preparer.prepare_parts(images)
        http = self.provider.build_create(request, prepared, model=model)
        if not sources:
            return http, None
        assert http.body is not None
        body = split_body(http.body, sources)
        if body is not None:
            return http, body
        # A dialect that does not carry the data URI verbatim: build the body whole.
        prepared = await self._preparer.prepare(images)
        return self.provider.build_create(request, prepared, model=model), None

    def _new_job(self, request: EditRequest, model: str | None) -> Job:
        if not isinstance(request, EditRequest):
            raise ValidationError(
                f"request: {type(request).__name__} is not an EditRequest", field="request"
            )
        self.provider.check(request, model=model)
        return Job(request)

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
        config = self.config
        changes: dict[str, Any] = {}
        if not isinstance(job_timeout, _Default):
            changes["job_timeout"] = job_timeout
        if max_attempts is not None:
            if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
                raise ValidationError(
                    f"max_attempts: {max_attempts!r} is not a whole number of at least 1",
                    field="max_attempts",
                )
            changes["max_attempts"] = max_attempts
        if changes:
            config = dataclasses.replace(config, **changes)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValidationError(f"model: {model!r} is not a model name", field="model")
        return _ClientView(self._root_client(), config, self._model_for(model))

    # -- public API -----------------------------------------------------------------------

    async def edit(
        self,
        images: Sequence[ImageInput] | ImageInput | EditRequest,
        prompt: str | None = None,
        *,
        model: str | None = None,
        job_timeout: float | _Default | None = USE_CLIENT_DEFAULT,
        **options: Any,
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
        **options: Any,
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
        on_send: Callable[[], Awaitable[None]] | None = None,
        on_accepted: Callable[[str, str | None], Awaitable[None]] | None = None,
    ) -> Job:
        """:meth:`submit`, with ``on_send`` awaited just before each create is written and
        ``on_accepted(task_id, request_id)`` each time the provider accepts one."""
        task_group = self._require_open()
        model = self._model_for(model)
        job = self._new_job(request, model)
        job._on_send = on_send
        job._on_accepted = on_accepted
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
        first = await self._transport.status(task_id)
        job = Job(None, task_id=task_id)
        if first.state.done:
            # Ended already: answer from this status rather than waiting for the poller.
            error: BaseException | None = first.error
            if first.state is TaskState.SUCCEEDED and first.result is not None:
                error = None
            elif error is None:
                error = QwenEditError(
                    f"the task ended as {first.state.value} without a result",
                    provider=self.provider.name,
                    task_id=task_id,
                )
            if isinstance(error, QwenEditError) and error.task_id is None:
                error.task_id = task_id
            if error is None:
                self._completed += 1
            else:
                self._failed += 1
            self._poller.completed_by_poll += 1  # a status request told its end
            job._finish(first.result if error is None else None, error)
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
        return run_many(
            self, requests, model=self._model_for(model), limit=self._timeout(job_timeout)
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
            self._transport,
            result,
            dest,
            stem=stem,
            config=self.config,
            limiter=self._downloads,
            durable=durable,
        )


def _with_callback(request: EditRequest, url: str) -> EditRequest:
    """A copy of ``request`` carrying the job's own callback URL.

    Set without re-validating: the receiver checked the URL, and a loopback ``http://`` one
    (a local fake provider) is allowed there, not in user requests.
    """
    clone = copy.copy(request)
    msgspec.structs.force_setattr(clone, "callback_url", url)
    return clone


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


#: Inputs that go to the provider as they are, whatever it accepts.
_URL_PREFIXES = ("https://", "http://")

