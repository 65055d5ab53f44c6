"""The bulk runner behind ``qwen-edit run``: a manifest in; a journal, images and results out.

One feeder reads the manifest lazily and admits lines to the journal in order (which is how
duplicate ids are found without holding every id in memory); ``concurrency`` workers take
them one by one. A worker commits ``submitting`` before the create is sent, the task id as
soon as the provider accepts it, the result's URLs when it arrives, then downloads the images
at once (URLs expire) and commits the files. Workers equal the client's ``max_in_flight``, so
a job never waits for a slot after it was journaled as ``submitting``.

Stopping (Ctrl-C): no new submissions; waits for tasks are dropped at once (their task ids are
journaled, a resumed run re-attaches); creates, synchronous requests and downloads in flight
get ``grace`` seconds to finish, then are cancelled and, if still ``submitting``, recorded as
uncertain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._callbacks import CallbackReceiver
from .._client import QwenEditClient
from .._errors import (
    AuthenticationError,
    ConfigurationError,
    InsufficientQuotaError,
    PermissionDeniedError,
    QwenEditError,
    SubmitUncertainError,
    TransportError,
)
from .._images import Uploader
from .._job import Job, JobCancelledError
from .._models import EditRequest, EditResult, GeneratedImage
from .._version import __version__
from ..providers import Provider, get_provider
from ._disksync import BatchSync
from ._journal import (
    JOURNAL_NAME,
    Action,
    Admission,
    Journal,
    ProviderMismatch,
    SettingMismatch,
)
from ._lock import FolderLock, FolderLocked
from ._manifest import Entry, ManifestError, check_format, count_lines, read_manifest
from ._progress import ProgressMode, Reporter, Tracker, make_reporter
from ._results import find_symlink, folder_name, remove_partials
from ._resume_check import compare_manifest
from ._state import EntryState
from ._upload import HttpUploader, local_inputs

__all__ = ["BulkRunner", "RunOptions", "RunRefused", "RunReport"]

_FEED_BATCH = 256
_MAX_LINE_WARNINGS = 20
#: Errors that would fail every job alike: the run stops submitting at the first one.
_RUN_WIDE = (
    AuthenticationError,
    PermissionDeniedError,
    InsufficientQuotaError,
    ConfigurationError,
)
#: Creates in a row that could not reach the endpoint before the run stops (it is down).
_BREAKER = 5


#: A save that failed with one of these cannot succeed for any job until someone acts.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _disk_full(error: BaseException | None) -> OSError | None:
    """The disk-full ``OSError`` behind ``error`` (itself or a cause), if any."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return error
        error = error.__cause__
    return None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


class RunRefused(Exception):
    """The run cannot start as asked (exit status 2); the message says what to do."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What ``qwen-edit run`` was asked to do."""

    manifest: Path
    out: Path
    provider: str = "dashscope"
    base_url: str | None = None
    model: str | None = None
    #: ``None``: from the environment (``QWEN_EDIT_API_KEY``, then the provider's variable).
    api_key: str | None = None
    concurrency: int = 16
    resume: bool = False
    retry_uncertain: bool = False
    download: bool = True
    #: Seconds per job; ``None``: the client's default; ``0``: no limit.
    job_timeout: float | None = None
    upload_url: str | None = None
    #: A ``redis://`` URL: share the account's limits with every run and process on it.
    shared: str | None = None
    progress: ProgressMode = "auto"
    progress_interval: float = 5.0
    #: Seconds that creates, sync requests and downloads in flight get after Ctrl-C.
    grace: float = 10.0
    #: With ``resume``: requeue failed jobs whose error this accepts (``None``: none).
    retry_failed: Callable[[str | None], bool] | None = None
    #: Creates per second at most (the client's ``submit_rate``; ``None``: no cap).
    submit_rate: float | None = None
    #: With ``resume``: accept a manifest that differs from the journaled run's.
    allow_changed_manifest: bool = False
    #: The command that resumes this run (printed after an interruption).
    resume_hint: str = "qwen-edit run MANIFEST --out DIR --resume"
    #: Most images this invocation may ask for (the sum of ``n`` over the jobs it submits);
    #: a job that would go past it is never sent and stays queued. ``None``: no limit.
    max_images: int | None = None
    #: Completion callbacks (Evolink): the public URL of the receiver, and where it listens.
    callback_url: str | None = None
    callback_listen: tuple[str, int] = ("127.0.0.1", 8080)


@dataclasses.dataclass
class RunReport:
    """How a run ended."""

    succeeded: int
    failed: int
    uncertain: int
    total: int | None
    images: int
    wall: float
    interrupted: bool
    results: Path | None
    #: Jobs left queued because sending them would have passed ``max_images``.
    over_budget: int = 0
    #: Why the run stopped submitting on its own (a run-wide error), else ``None``.
    stopped: str | None = None
    #: Jobs left queued in the journal (never sent): a resume sends them.
    queued: int = 0

    @property
    def exit_code(self) -> int:
        """0 only when every job succeeded; 1 otherwise; 2 when a run-wide error stopped
        it; 130 when interrupted."""
        if self.stopped is not None:
            return 2
        if self.interrupted:
            return 130
        return 0 if self.failed == 0 and self.uncertain == 0 and self.over_budget == 0 else 1


@dataclasses.dataclass(slots=True)
class _Work:
    id: str
    request: EditRequest | None
    admission: Admission


class _Active:
    __slots__ = ("phase", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        #: ``submit`` (create in flight), ``sync`` (synchronous request in flight),
        #: ``wait`` (task accepted, waiting), ``download``.
        self.phase: Literal["submit", "sync", "wait", "download"] = "submit"


class BulkRunner:
    """Runs one ``qwen-edit run``. Call :meth:`request_stop` from a signal handler.

    >>> report = await BulkRunner(RunOptions(manifest=Path("m.jsonl"), out=Path("out"))).run()
    ... # doctest: +SKIP
    """

    def __init__(self, options: RunOptions, *, stderr: IO[str] | None = None) -> None:
        self.options = options
        self.tracker = Tracker()
        self.journal = Journal(options.out / JOURNAL_NAME)
        self._syncer = BatchSync(options.out)
        self._reporter: Reporter = make_reporter(
            options.progress, self.tracker, stderr or sys.stderr, interval=options.progress_interval
        )
        self._active: set[_Active] = set()
        self._stopping = False
        self._stops = 0
        #: The run-wide error that stopped submissions (fail fast), if any.
        self._halted: str | None = None
        #: Jobs whose creates failed to reach the endpoint, in a row (the breaker's count).
        self._unreachable: list[str] = []
        self._stop_event: anyio.Event | None = None
        self._feed_scope: anyio.CancelScope | None = None
        self._pass_complete = False
        self._abandoned = 0
        self._last_line = 0
        self._line_warnings = 0
        self._run = 0
        self._http: HttpUploader | None = None
        self._client: QwenEditClient | None = None
        self._images_asked = 0
        self._over_budget = 0
        self._receiver: CallbackReceiver | None = None

    # -- stopping ----------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: stop submitting, let work in flight settle. Second: stop now."""
        self._stops += 1
        if self._stops == 1:
            busy = self._stop_submitting()
            if self._stop_event is not None:
                self._stop_event.set()  # the grace period starts
            self._log(
                f"stopping: no new submissions; {busy} requests in flight get up to "
                f"{self.options.grace:g} s to be recorded (Ctrl-C again to stop now)"
            )
        else:
            self._cancel_all()

    def _stop_submitting(self) -> int:
        """Stop the feed, drop waits (their tasks are journaled); return requests in flight."""
        self._stopping = True
        if self._feed_scope is not None:
            self._feed_scope.cancel()
        for active in list(self._active):
            if active.phase == "wait":
                active.scope.cancel()
        return sum(1 for active in self._active if active.phase != "wait")

    def _halt(self, reason: str) -> None:
        """Fail fast: a run-wide error (bad key, no quota, endpoint down) stops submitting;
        jobs not sent stay queued for a resume once the cause is fixed."""
        if self._halted is not None:
            return
        self._halted = reason
        # Creates in flight are let finish (no grace cut): cancelled mid-retry they would
        # be uncertain; they end soon, refused or unreachable, and are queued again.
        self._stop_submitting()
        self._log(f"stopping: {reason}; jobs not sent yet stay queued")

    def _cancel_all(self) -> None:
        for active in list(self._active):
            active.scope.cancel()

    async def _grace_watch(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()
        await anyio.sleep(self.options.grace)
        self._cancel_all()

    def _log(self, message: str) -> None:
        self._reporter.log(message)

    # -- setup -------------------------------------------------------------------------

    def _provider(self) -> Provider:
        o = self.options
        try:
            return get_provider(o.provider, base_url=o.base_url, model=o.model)
        except ConfigurationError as exc:
            raise RunRefused(str(exc)) from exc

    def _uploader(self, provider: Provider) -> HttpUploader | None:
        """For URL-only providers: the ``--upload-url`` endpoint, if one was given."""
        url = self.options.upload_url
        return None if provider.accepts_data_uri or url is None else HttpUploader(url)

    def _check_first_line(self, provider: Provider, uploader: Uploader | None) -> None:
        """Fail fast: local images for a URL-only provider and nowhere to upload them."""
        if provider.accepts_data_uri or uploader is not None:
            return
        for entry in read_manifest(self.options.manifest):
            if entry.request is None:
                continue
            local = local_inputs(entry.request)
            if local:
                raise RunRefused(
                    f"manifest line {entry.line}: {local[0]} is a local image but "
                    f"{provider.name} takes only public URLs (ConfigurationError); pass "
                    "--upload-url URL (an endpoint that takes the bytes in a POST and answers "
                    '{"url": ...}), or give public https URLs in the manifest'
                )
            return

    def _build_client(self, provider: Provider, uploader: Uploader | None) -> QwenEditClient:
        o = self.options
        options: dict[str, Any] = {}
        if o.job_timeout is not None:
            options["job_timeout"] = o.job_timeout or None
        if o.submit_rate is not None:
            options["submit_rate"] = o.submit_rate
        try:
            if o.callback_url is not None:
                options["callbacks"] = self._receiver = CallbackReceiver(o.callback_url)
            return QwenEditClient(
                provider,
                api_key=o.api_key,
                max_in_flight=o.concurrency,
                uploader=uploader,
                shared=o.shared,
                **options,
            )
        except QwenEditError as exc:
            raise RunRefused(str(exc)) from exc

    def _listening(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The callback receiver served on ``--callback-listen`` for the run, if any."""
        if self._receiver is None:
            return contextlib.nullcontext()
        return self._receiver.listen(*self.options.callback_listen)

    async def _open_journal(self, provider: Provider) -> None:
        o = self.options
        await anyio.to_thread.run_sync(self.journal.start)
        meta = {
            "provider": provider.name,
            "base_url": provider.base_url,
            "model": provider.model,
            "manifest": str(o.manifest.resolve()),
            "version": __version__,
        }
        try:
            self._run, swept, _old = await self.journal.begin_run(meta)
        except ProviderMismatch as exc:
            raise RunRefused(
                f"{o.out} holds a run on provider {exc.old!r}: its task ids mean nothing "
                f"to {provider.name!r}; resume with --provider {exc.old}"
            ) from None
        except SettingMismatch as exc:
            raise RunRefused(
                f"{o.out} holds a run that used base URL {exc.old}, but this run would send "
                f"your key to {provider.base_url}; the key goes only where you say: add "
                f"--base-url {exc.old} if that is where this run should go"
            ) from None
        if swept:
            self._log(
                f"{swept} job(s) were being submitted when the last run stopped: marked "
                "uncertain (they may exist at the provider); --retry-uncertain resubmits them"
            )

    async def _check_manifest(self) -> None:
        """Refuse a resume with another manifest, or with lines edited since the run began."""
        o = self.options
        allow = o.allow_changed_manifest
        changes = await compare_manifest(self.journal, o.manifest, stop_at_first=not allow)
        if not changes:
            return
        if not allow:
            raise RunRefused(
                f"{o.manifest} is not the manifest the run in {o.out} started with: "
                f"{changes.examples[0]}. Resume with that manifest, or add "
                "--allow-changed-manifest (new ids are added; changed lines keep their "
                "journaled state and are reported)"
            )
        self._log(
            f"the manifest changed since the run started: {changes.changed} changed line(s) "
            f"keep their journaled state, {changes.new} new id(s) are added; "
            + "; ".join(changes.examples)
        )

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> RunReport:
        """Run the manifest to its end (or to a stop); return the report."""
        o = self.options
        started = time.monotonic()
        if not o.manifest.is_file():
            raise RunRefused(f"manifest {o.manifest} not found")
        try:
            await anyio.to_thread.run_sync(check_format, o.manifest)
        except ManifestError as exc:
            raise RunRefused(str(exc)) from None
        provider = self._provider()
        await anyio.to_thread.run_sync(lambda: o.out.mkdir(parents=True, exist_ok=True))
        try:
            lock = await anyio.to_thread.run_sync(FolderLock.acquire, o.out)
        except FolderLocked as exc:
            raise RunRefused(str(exc)) from None
        try:
            return await self._run_locked(provider, started)
        finally:
            lock.release()

    async def _run_locked(self, provider: Provider, started: float) -> RunReport:
        o = self.options
        journal_path = o.out / JOURNAL_NAME
        if journal_path.exists() and not o.resume:
            raise RunRefused(
                f"{o.out} already holds a run ({journal_path}). To continue it, add --resume "
                "(finished jobs are skipped, submitted tasks re-attached, nothing paid twice); "
                "or choose another --out"
            )
        self._stop_event = anyio.Event()
        self._feed_scope = anyio.CancelScope()
        if self._stopping:
            self._stop_event.set()
            self._feed_scope.cancel()
        try:
            uploader = self._http = self._uploader(provider)
            await anyio.to_thread.run_sync(self._check_first_line, provider, uploader)
            client = self._build_client(provider, uploader)
            link = await anyio.to_thread.run_sync(find_symlink, o.out)
            if link is not None:
                raise RunRefused(
                    f"{link} is a symbolic link; a run never writes through a link inside its "
                    "folder (it could put files anywhere): remove it, then run again"
                )
            try:
                await self._open_journal(provider)
                if o.resume and self._run > 1:
                    await self._check_manifest()
                async with self._listening(), client:
                    self._client = client
                    await self._run_jobs()
                if self._abandoned or not self._pass_complete:
                    marked = await self.journal.sweep_submitting()
                    results = None
                    if self._halted is not None:  # the run is over until its cause is fixed
                        results = await self.journal.export_results(o.out, self._run)
                else:
                    marked = 0
                    await self.journal.prune_rejects(self._last_line)
                    results = await self.journal.export_results(o.out, self._run)
                counts = await self.journal.counts()
            finally:
                await anyio.to_thread.run_sync(self.journal.close)
        finally:
            if self._http is not None:
                await self._http.aclose()
        t = self.tracker
        return RunReport(
            succeeded=t.succeeded,
            failed=t.failed,
            uncertain=t.uncertain + marked,
            total=t.total,
            images=counts.get("images", 0),
            wall=time.monotonic() - started,
            interrupted=self._stopping and results is None,
            results=results,
            over_budget=self._over_budget,
            stopped=self._halted,
            queued=counts.get(EntryState.QUEUED, 0),
        )

    async def _run_jobs(self) -> None:
        o = self.options
        self._reporter.start()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._count_total)
                outer.start_soon(self._report_loop)
                outer.start_soon(self._grace_watch)
                send, receive = anyio.create_memory_object_stream[_Work](o.concurrency)
                async with anyio.create_task_group() as workers:
                    workers.start_soon(self._feed, send)
                    with receive:
                        for _ in range(o.concurrency):
                            workers.start_soon(self._worker, receive.clone())
                outer.cancel_scope.cancel()
        finally:
            self._reporter.stop()

    async def _count_total(self) -> None:
        try:
            total = await anyio.to_thread.run_sync(
                count_lines, self.options.manifest, abandon_on_cancel=True
            )
        except OSError:
            return
        self.tracker.total = total

    async def _report_loop(self) -> None:
        while True:
            self._reporter.update()
            await anyio.sleep(0.2)

    async def _feed(self, send: MemoryObjectSendStream[_Work]) -> None:
        o = self.options
        entries = read_manifest(o.manifest)
        try:
            assert self._feed_scope is not None
            with send, self._feed_scope:
                if self._stopping:
                    return
                while True:
                    batch = await anyio.to_thread.run_sync(
                        lambda: list(itertools.islice(entries, _FEED_BATCH))
                    )
                    if not batch:
                        self._pass_complete = True
                        return
                    admissions = await self.journal.admit(
                        batch,
                        self._run,
                        retry_uncertain=o.retry_uncertain,
                        retry_failed=o.retry_failed,
                    )
                    for entry, admission in zip(batch, admissions, strict=True):
                        self._last_line = entry.line
                        if admission.action is Action.SKIP:
                            self._skip(entry, admission)
                            continue
                        assert entry.id is not None
                        await send.send(_Work(entry.id, entry.request, admission))
        finally:
            entries.close()

    def _skip(self, entry: Entry, admission: Admission) -> None:
        if admission.note is not None:
            self._warn_line(admission.note)
        self.tracker.finish(admission.status, earlier=True)

    def _warn_line(self, message: str) -> None:
        self._line_warnings += 1
        if self._line_warnings <= _MAX_LINE_WARNINGS:
            self._log(f"manifest {message}")
        elif self._line_warnings == _MAX_LINE_WARNINGS + 1:
            self._log("more manifest lines were refused: see qwen-edit status")

    async def _worker(self, receive: MemoryObjectReceiveStream[_Work]) -> None:
        with receive:
            async for work in receive:
                if self._stopping:
                    return
                await self._process(work)

    async def _process(self, work: _Work) -> None:
        active = _Active()
        self._active.add(active)
        self.tracker.in_flight += 1
        outcome: tuple[EntryState, int] | None = None
        try:
            with active.scope:
                outcome = await self._handle(work, active)
        finally:
            self._active.discard(active)
            self.tracker.in_flight -= 1
        if outcome is None:  # stopped: the journal says where it stands
            self._abandoned += 1
        elif outcome[0] is EntryState.QUEUED:  # over --max-images: left for a later run
            self._over_budget += 1
        else:
            self.tracker.finish(outcome[0], images=outcome[1])

    async def _handle(self, work: _Work, active: _Active) -> tuple[EntryState, int] | None:
        """One job from where the journal left it; ``None`` when the run stopped first."""
        client, journal = self._client, self.journal
        assert client is not None
        admission = work.admission
        if admission.action is Action.DOWNLOAD:
            assert admission.urls is not None
            result = EditResult(
                images=[GeneratedImage(url=url) for url in admission.urls],
                provider=client.provider.name,
                task_id=admission.task_id,
                request_id=admission.request_id,
            )
            return await self._save(work.id, result, active, admission.folder)
        if admission.action is Action.ATTACH:
            assert admission.task_id is not None
            try:
                job = await client.attach(admission.task_id)
            except QwenEditError as exc:
                return await self._failed(work.id, exc, task_id=admission.task_id)
        else:
            assert work.request is not None
            if not self._within_budget(work.request):
                return EntryState.QUEUED, 0
            active.phase = "submit" if client.provider.is_task else "sync"
            job_id = work.id
            try:
                # ``submitting`` is committed just before the create is written, after any
                # rate or cooldown wait: a job still waiting when the process dies stays
                # ``queued`` (it was never sent) instead of ``uncertain``.
                # Each accepted task is journaled as it is accepted, resubmissions of a
                # transiently failed task included: a resumed run attaches to the newest.
                job = await client._submit(
                    work.request,
                    on_send=lambda: journal.mark_submitting(job_id),
                    on_accepted=lambda task_id, request_id: journal.mark_submitted(
                        job_id, task_id, request_id
                    ),
                )
            except Exception as exc:  # refused, invalid, unreachable, an uploader's failure
                return await self._failed(work.id, exc)
            self._unreachable.clear()  # the endpoint answered
        if job.task_id is not None:
            active.phase = "wait"
            if self._stopping:  # re-attachable: leave it for --resume
                job.cancel()
                return None
        return await self._wait(work.id, job, active, admission.folder)

    def _within_budget(self, request: EditRequest) -> bool:
        """Count ``request``'s images against ``max_images``; False (nothing counted) when
        they would pass it. Checked and counted with no await between: workers never
        overshoot together."""
        limit = self.options.max_images
        n = request.n or 1
        if limit is not None and self._images_asked + n > limit:
            if self._over_budget == 0:
                self._log(
                    f"--max-images {limit}: jobs that would pass it are left queued "
                    f"({self._images_asked} image(s) asked for so far)"
                )
            return False
        self._images_asked += n
        return True

    async def _wait(
        self, job_id: str, job: Job, active: _Active, folder: str | None
    ) -> tuple[EntryState, int] | None:
        try:
            result = await job.result()
        except JobCancelledError:
            return None
        except Exception as exc:
            return await self._failed(job_id, exc, task_id=job.task_id)
        except BaseException:
            job.cancel()
            raise
        if job.task_id is None:
            self._unreachable.clear()  # a synchronous answer: the endpoint is up
        return await self._save(job_id, result, active, folder)

    async def _failed(
        self, job_id: str, exc: Exception, *, task_id: str | None = None
    ) -> tuple[EntryState, int] | None:
        """Journal how a job ended with ``exc``; fail fast on run-wide errors.

        ``None``: the job is left for a resume (queued when never accepted, its task
        re-attached when it was).
        """
        if isinstance(exc, SubmitUncertainError):  # the create's answer was lost
            await self.journal.end(job_id, EntryState.UNCERTAIN, exc)
            return EntryState.UNCERTAIN, 0
        if isinstance(exc, (OSError, sqlite3.Error)):  # the disk or the journal: run-wide
            raise exc
        unreachable = isinstance(exc, TransportError) and task_id is None
        if unreachable and self._halted is None:
            self._unreachable.append(job_id)
            if len(self._unreachable) >= _BREAKER:
                self._halt(
                    f"the endpoint looks down: {len(self._unreachable)} creates in a row "
                    f"could not reach it ({type(exc).__name__}: {_one_line(exc)})"
                )
                # The streak's earlier jobs were never sent either: queued, not failed.
                earlier = self._unreachable[:-1]
                for earlier_id in earlier:
                    await self.journal.requeue(earlier_id, exc)
                self.tracker.retract(EntryState.FAILED, len(earlier))
        if isinstance(exc, _RUN_WIDE):
            self._halt(f"{type(exc).__name__}: {_one_line(exc)}")
        if self._halted is not None and (unreachable or isinstance(exc, _RUN_WIDE)):
            if task_id is None:
                await self.journal.requeue(job_id, exc)
            return None  # accepted tasks stay journaled as submitted: re-attached later
        await self.journal.end(job_id, EntryState.FAILED, exc, task_id=task_id)
        return EntryState.FAILED, 0

    async def _save(
        self, job_id: str, result: EditResult, active: _Active, folder_name_: str | None
    ) -> tuple[EntryState, int]:
        """Journal the result, download its images into ``images/<folder>/``, journal the
        files. A full disk is run-wide: it ends the run (the job stays re-downloadable)."""
        o, journal = self.options, self.journal
        client = self._client
        assert client is not None
        urls = [image.url for image in result.images]
        ids = {"task_id": result.task_id, "request_id": result.request_id}
        usage = result.usage.raw if result.usage is not None else None  # as the provider gave it
        if not o.download:
            await journal.succeed(job_id, urls=urls, files=[], usage=usage, **ids)
            return EntryState.SUCCEEDED, 0
        if all(urls):  # inline (b64) images cannot be fetched again: write them first
            await journal.mark_downloading(job_id, urls=urls, **ids)
        active.phase = "download"
        folder = o.out / "images" / (folder_name_ or folder_name(job_id))
        try:
            if o.resume:
                await anyio.to_thread.run_sync(remove_partials, folder)
            # Written unsynced, then made durable in batches with other jobs' files, before
            # the journal lists them. Safe: each file is renamed into place only after its
            # whole write, so a kill -9 at any point leaves no partial file under a final
            # name (the kernel keeps what was written); and the journal commit naming the
            # files comes after the sync, so after a power cut a journaled file is on disk
            # whole. A cut before the sync loses at most this job's files, which the journal
            # still shows as ``downloading``: --resume downloads them again.
            paths = await client._download(result, folder, stem="", durable=False)
            await self._syncer.sync([*paths, folder, folder.parent])
        except (QwenEditError, OSError) as exc:
            full = _disk_full(exc)
            if full is not None:
                raise full from None
            await journal.end(job_id, EntryState.FAILED, exc, **ids)
            return EntryState.FAILED, 0
        files = [path.relative_to(o.out).as_posix() for path in paths]
        await journal.succeed(job_id, urls=urls, files=files, usage=usage, **ids)
        return EntryState.SUCCEEDED, len(files)
