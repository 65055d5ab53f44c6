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
import sqlite3
import sys
import time
from pathlib import Path
from typing import IO, Literal

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

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
from .._job import Job, JobCancelledError
from .._models import EditRequest, EditResult, GeneratedImage
from ..providers import Provider
from ._disksync import BatchSync, disk_full
from ._feed import Feeder, Work
from ._journal import (
    JOURNAL_NAME,
    Action,
    Journal,
)
from ._lock import FolderLock, FolderLocked
from ._manifest import ManifestError, check_format
from ._options import RunOptions, RunRefused, RunReport
from ._progress import Reporter, Tracker, make_reporter
from ._results import find_symlink, folder_name, remove_partials
from ._setup import (
    build_client,
    check_first_line,
    check_manifest,
    open_journal,
    provider_for,
    uploader_for,
)
from ._state import EntryState
from ._upload import HttpUploader

__all__ = ["BulkRunner", "RunOptions", "RunRefused", "RunReport"]

#: Errors that would fail every job alike: the run stops submitting at the first one.
_RUN_WIDE = (
    AuthenticationError,
    PermissionDeniedError,
    InsufficientQuotaError,
    ConfigurationError,
)
#: Creates in a row that could not reach the endpoint before the run stops (it is down).
_BREAKER = 5


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


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
        self._feeder = Feeder(options, self.journal, self.tracker, self._log)
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
        self._abandoned = 0
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

    def _listening(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The callback receiver served on ``--callback-listen`` for the run, if any."""
        if self._receiver is None:
            return contextlib.nullcontext()
        return self._receiver.listen(*self.options.callback_listen)

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
        provider = provider_for(o)
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
            uploader = self._http = uploader_for(o, provider)
            await anyio.to_thread.run_sync(check_first_line, o.manifest, provider, uploader)
            client, self._receiver = build_client(o, provider, uploader)
            link = await anyio.to_thread.run_sync(find_symlink, o.out)
            if link is not None:
                raise RunRefused(
                    f"{link} is a symbolic link; a run never writes through a link inside its "
                    "folder (it could put files anywhere): remove it, then run again"
                )
            try:
                marked, results, counts = await self._journaled(provider, client)
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

    async def _journaled(
        self, provider: Provider, client: QwenEditClient
    ) -> tuple[int, Path | None, dict[str, int]]:
        """The run proper, journaled: (jobs newly marked uncertain, results file, counts)."""
        o = self.options
        await anyio.to_thread.run_sync(self.journal.start)
        self._run = await open_journal(self.journal, o, provider, self._log)
        if o.resume and self._run > 1:
            await check_manifest(self.journal, o, self._log)
        async with self._listening(), client:
            self._client = client
            await self._run_jobs()
        if self._abandoned or not self._feeder.pass_complete:
            marked = await self.journal.sweep_submitting()
            results = None
            if self._halted is not None:  # the run is over until its cause is fixed
                results = await self.journal.export_results(o.out, self._run)
        else:
            marked = 0
            await self.journal.prune_rejects(self._feeder.last_line)
            results = await self.journal.export_results(o.out, self._run)
        return marked, results, await self.journal.counts()

    async def _run_jobs(self) -> None:
        o = self.options
        self._reporter.start()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._feeder.count_total)
                outer.start_soon(self._report_loop)
                outer.start_soon(self._grace_watch)
                send, receive = anyio.create_memory_object_stream[Work](o.concurrency)
                async with anyio.create_task_group() as workers:
                    assert self._feed_scope is not None
                    workers.start_soon(
                        self._feeder.feed, send, self._run, self._feed_scope, lambda: self._stopping
                    )
                    with receive:
                        for _ in range(o.concurrency):
                            workers.start_soon(self._worker, receive.clone())
                outer.cancel_scope.cancel()
        finally:
            self._reporter.stop()

    async def _report_loop(self) -> None:
        while True:
            self._reporter.update()
            await anyio.sleep(0.2)

    async def _worker(self, receive: MemoryObjectReceiveStream[Work]) -> None:
        with receive:
            async for work in receive:
                if self._stopping:
                    return
                await self._process(work)

    async def _process(self, work: Work) -> None:
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

    async def _handle(self, work: Work, active: _Active) -> tuple[EntryState, int] | None:
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
            full = disk_full(exc)
            if full is not None:
                raise full from None
            await journal.end(job_id, EntryState.FAILED, exc, **ids)
            return EntryState.FAILED, 0
        files = [path.relative_to(o.out).as_posix() for path in paths]
        await journal.succeed(job_id, urls=urls, files=files, usage=usage, **ids)
        return EntryState.SUCCEEDED, len(files)
