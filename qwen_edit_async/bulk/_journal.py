"""The bulk run's journal: one SQLite file in the output folder, written by one thread.

Every step of a job is one transaction, committed before the run acts on it::

    queued ──► submitting ──► submitted ──► downloading ──► succeeded
                   │  (task id known)    (URLs known)   (files saved)
                   ├──► uncertain   the create's answer was lost, or the run died meanwhile
                   └──► failed      (from any step; the error is kept)

``submitting`` is committed *before* a create is sent, and the task id the moment the
provider accepts it, so a ``kill -9`` at any instant leaves a journal that says which jobs
may exist at the provider: a job found in ``submitting`` when a run starts is marked
``uncertain`` and is never resubmitted unless asked.

Durability: WAL with ``synchronous=FULL``. NORMAL would survive a killed process (the WAL is
in the OS cache) but an OS crash or power loss could roll back the last commits, and a lost
``submitting`` row means a job paid twice. FULL costs one fsync per commit, so commits are
grouped: the writer thread takes every operation queued meanwhile into one transaction (one
fsync for all), each in its own savepoint, and answers each caller after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .._errors import SubmitUncertainError
from ._admit import Action, Admission, admit_one, error_fields
from ._manifest import Entry
from ._results import count_jobs, write_results
from ._state import EntryState, sql_states

__all__ = [
    "JOURNAL_NAME",
    "Action",
    "Admission",
    "Journal",
    "ProviderMismatch",
    "SettingMismatch",
]

T = TypeVar("T")

JOURNAL_NAME = "journal.sqlite3"
SCHEMA_VERSION = 2
_BATCH = 512

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    line          INTEGER NOT NULL,          -- manifest line of its latest sighting
    seen_run      INTEGER NOT NULL,          -- run that last read it (finds duplicate ids)
    status        TEXT NOT NULL CHECK (status IN {sql_states(*EntryState)}),
    n             INTEGER NOT NULL DEFAULT 1,
    attempts      INTEGER NOT NULL DEFAULT 0, -- creates sent for it
    task_id       TEXT,
    request_id    TEXT,
    urls          TEXT,                      -- JSON list of result URLs (null for inline)
    files         TEXT,                      -- JSON list of paths relative to the folder
    error_type    TEXT,
    error_message TEXT,
    updated_at    REAL NOT NULL,
    folder        TEXT,                      -- images/<folder>, one per id (folder_name)
    usage         TEXT,                      -- JSON usage figures of the result
    line_hash     TEXT                       -- the manifest line's digest when first read
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS rejects (       -- manifest lines that are not jobs
    line          INTEGER PRIMARY KEY,
    id            TEXT,
    error_type    TEXT NOT NULL,
    error_message TEXT NOT NULL
);
"""

_UNCERTAIN_MESSAGE = (
    "the run stopped while this job's create was being sent: the provider may have created "
    "(and billed) it; it is not resubmitted unless the run is resumed with --retry-uncertain"
)


class SettingMismatch(Exception):
    """The journal was written by a run with another ``key`` setting (``old``)."""

    def __init__(self, key: str, old: str) -> None:
        super().__init__(old)
        self.key = key
        self.old = old


class ProviderMismatch(SettingMismatch):
    """The journal was written by a run on another provider (``args[0]``)."""

    def __init__(self, old: str) -> None:
        super().__init__("provider", old)


_encode = msgspec.json.Encoder().encode


def _dump(value: Any) -> str | None:
    return None if value is None else _encode(value).decode()


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the journal's settings (autocommit: transactions are explicit)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Journal:
    """The journal of the run in ``folder``: async methods, one writer thread.

    >>> journal = Journal(Path("out/journal.sqlite3")); journal.start()   # doctest: +SKIP
    >>> await journal.mark_submitting("cat-1")                            # doctest: +SKIP
    >>> journal.close()                                                    # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        #: Transactions committed and operations run (for measurements).
        self.commits = 0
        self.operations = 0

    # -- the writer thread -------------------------------------------------------------

    def start(self) -> None:
        """Open (creating if needed) the file and its schema in the writer thread."""
        self._thread = threading.Thread(target=self._serve, name="qwen-edit-journal", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def close(self) -> None:
        """Finish the queued operations and close the file."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        try:
            conn = connect(self.path)
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        stop = False
        try:
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if None in batch:
                    stop = True
                    batch = [op for op in batch if op is not None]
                if batch:
                    self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[Callable[[sqlite3.Connection], Any], Callable[[Any, Any], None]]],
    ) -> None:
        answers: list[tuple[Callable[[Any, Any], None], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, reply in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = operation(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    answers.append((reply, None, exc))
                else:
                    conn.execute("RELEASE op")
                    answers.append((reply, value, None))
            conn.execute("COMMIT")
            self.commits += 1
            self.operations += len(batch)
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            answers = [(reply, None, exc) for _, reply in batch]
        for reply, value, error in answers:
            reply(value, error)

    async def call(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation(conn)`` in its own savepoint; return once it is committed.

        A cancelled caller does not cancel the write: it is committed all the same.
        """
        if self._thread is None:
            raise RuntimeError("the journal is not started")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def reply(value: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(settle, value, error)

        self._queue.put((operation, reply))
        return await future

    # -- the run -----------------------------------------------------------------------

    async def begin_run(self, meta: dict[str, str]) -> tuple[int, int, dict[str, str]]:
        """Start a run: record ``meta``, mark jobs left in ``submitting`` as uncertain.

        Returns the run number, the count of jobs newly marked uncertain, and the metadata
        the journal held before. Raises :class:`ProviderMismatch` (and changes nothing)
        when the journal's jobs belong to another provider: their task ids mean nothing here;
        :class:`SettingMismatch` for another ``base_url``: the key goes only where the user
        says, never where a journal (perhaps copied from elsewhere) says.
        """

        def operation(conn: sqlite3.Connection) -> tuple[int, int, dict[str, str]]:
            old = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if old.get("provider", meta["provider"]) != meta["provider"]:
                raise ProviderMismatch(old["provider"])
            new_url = meta.get("base_url")
            if new_url is not None and old.get("base_url", new_url) != new_url:
                raise SettingMismatch("base_url", old["base_url"])
            run = int(old.get("runs", "0")) + 1
            values = {**meta, "runs": str(run)}
            values.setdefault("created_at", old.get("created_at", str(time.time())))
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())
            return run, _sweep(conn), old

        return await self.call(operation)

    async def sweep_submitting(self) -> int:
        """Mark jobs still in ``submitting`` as uncertain (after an interrupted run)."""
        return await self.call(_sweep)

    async def admit(
        self,
        entries: Sequence[Entry],
        run: int,
        *,
        retry_uncertain: bool,
        retry_failed: Callable[[str | None], bool] | None = None,
    ) -> list[Admission]:
        """Record a batch of manifest lines and say what to do with each, in order.

        New lines are inserted as ``queued``. A line whose id an earlier line of this run
        already used is recorded as a failed reject (duplicate id). Lines that cannot be
        read are recorded as rejects with their error. A failed job whose error type
        ``retry_failed`` accepts is queued again (its attempts keep counting).
        """

        def operation(conn: sqlite3.Connection) -> list[Admission]:
            return [admit_one(conn, entry, run, retry_uncertain, retry_failed) for entry in entries]

        return await self.call(operation)

    async def requeue(self, job_id: str, error: BaseException) -> None:
        """The job was not sent (or was refused by a run-wide error): queued again."""
        error_type, message = error_fields(error)
        columns = {
            **dict.fromkeys(("task_id", "request_id", "urls", "files")),
            "error_type": error_type,
            "error_message": message,
        }
        await self.call(_update(job_id, EntryState.QUEUED, columns))

    async def mark_submitting(self, job_id: str) -> None:
        """Committed before the job's create is sent."""
        await self.call(_update(job_id, EntryState.SUBMITTING, _CLEARED, "attempts=attempts+1, "))

    async def mark_submitted(self, job_id: str, task_id: str, request_id: str | None) -> None:
        """Committed the moment the provider has accepted the job."""
        await self.call(_update(job_id, EntryState.SUBMITTED, _ids(task_id, request_id)))

    async def mark_downloading(
        self, job_id: str, *, task_id: str | None, request_id: str | None, urls: list[str | None]
    ) -> None:
        """The result is known (its URLs expire): committed before downloading it."""
        columns = {**_ids(task_id, request_id), "urls": _dump(urls), **_NO_ERROR}
        await self.call(_update(job_id, EntryState.DOWNLOADING, columns))

    async def succeed(
        self,
        job_id: str,
        *,
        task_id: str | None,
        request_id: str | None,
        urls: list[str | None],
        files: list[str],
        usage: dict[str, Any] | None = None,
    ) -> None:
        """The job's images are saved (or downloads are off)."""
        columns = {
            **_ids(task_id, request_id),
            "urls": _dump(urls),
            "files": _dump(files),
            "usage": _dump(usage),
        }
        await self.call(_update(job_id, EntryState.SUCCEEDED, {**columns, **_NO_ERROR}))

    async def end(
        self,
        job_id: str,
        status: EntryState,
        error: BaseException,
        *,
        task_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """The job ended ``failed`` or ``uncertain`` with ``error``."""
        assert status in (EntryState.FAILED, EntryState.UNCERTAIN)
        error_type, message = error_fields(error)
        columns = {**_ids(task_id, request_id), "error_type": error_type, "error_message": message}
        await self.call(_update(job_id, status, columns))

    async def counts(self) -> dict[str, int]:
        """Jobs per status, plus ``rejected`` lines and ``images`` saved."""
        return await self.call(count_jobs)

    async def prune_rejects(self, last_line: int) -> None:
        """Forget rejects past the manifest's end (a complete pass over a shorter file)."""
        await self.call(lambda conn: conn.execute("DELETE FROM rejects WHERE line>?", (last_line,)))

    async def export_results(self, folder: Path, run: int) -> Path:
        """Write ``folder/results.jsonl`` atomically: the jobs run ``run`` read, by line."""
        return await self.call(lambda conn: write_results(conn, folder, run))


# -- operations (run in the writer thread) -----------------------------------------------

#: Columns added since the first schema: a journal written by an older version gains them.
_ADDED_COLUMNS = {"folder": "TEXT", "usage": "TEXT", "line_hash": "TEXT"}


def _migrate(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
    # No two jobs ever share an image folder (NULL: not assigned yet, in an old journal).
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_folder ON jobs (folder)")


_NO_ERROR: dict[str, Any] = {"error_type": None, "error_message": None}
_CLEARED: dict[str, Any] = dict.fromkeys(("task_id", "request_id", "urls", "files"), None)
_CLEARED.update(_NO_ERROR)


def _ids(task_id: str | None, request_id: str | None) -> dict[str, Any]:
    """The ids that are known (a later step never erases one an earlier step recorded)."""
    ids = {"task_id": task_id, "request_id": request_id}
    return {name: value for name, value in ids.items() if value is not None}


def _update(
    job_id: str, status: EntryState, columns: dict[str, Any], extra: str = ""
) -> Callable[[sqlite3.Connection], Any]:
    """An operation that moves ``job_id`` to ``status`` and sets ``columns``."""
    assignments = "".join(f"{name}=?, " for name in columns)
    sql = f"UPDATE jobs SET status=?, {assignments}{extra}updated_at=? WHERE id=?"
    values = (status, *columns.values(), time.time(), job_id)
    return lambda conn: conn.execute(sql, values)


def _sweep(conn: sqlite3.Connection) -> int:
    cursor = conn.execute(
        "UPDATE jobs SET status=?, error_type=?, error_message=?, updated_at=? WHERE status=?",
        (
            EntryState.UNCERTAIN,
            SubmitUncertainError.__name__,
            _UNCERTAIN_MESSAGE,
            time.time(),
            EntryState.SUBMITTING,
        ),
    )
    return cursor.rowcount
