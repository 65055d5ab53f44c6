"""Admission: what a run does with a manifest line, given what the journal knows of its id.

Runs in the journal's writer thread, inside the transaction that records the line: a new
id is inserted as queued; a known one is resumed from where it stood (re-attached to its
task, its images downloaded again, skipped because it ended); a line that is not a job is
recorded as a reject with its reason.
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .._errors import (
    DownloadError,
    JobCancelledError,
    JobTimeoutError,
    ManifestError,
    QwenEditError,
    TransportError,
)
from ._manifest import Entry
from ._results import folder_name
from ._state import EntryState

__all__ = [
    "Action",
    "Admission",
    "admit_one",
    "error_classes",
    "error_fields",
    "journaled_error_is",
]

#: A failed job whose task may still finish after one of these: a resumed run attaches again.
_REATTACHABLE: tuple[type[QwenEditError], ...] = (
    JobTimeoutError,
    JobCancelledError,
    TransportError,
)

_decode_list = msgspec.json.Decoder(list[Any]).decode


class Action(enum.Enum):
    """What a run does with a manifest line, given the journal."""

    FRESH = "fresh"  # submit it
    ATTACH = "attach"  # re-attach to its task and wait for the result
    DOWNLOAD = "download"  # its result is known: save the images
    SKIP = "skip"  # it has ended (succeeded, failed or uncertain)


@dataclasses.dataclass(slots=True)
class Admission:
    """The journal's answer for one line: the action and what is known of the job."""

    action: Action
    status: EntryState
    task_id: str | None = None
    request_id: str | None = None
    urls: list[str | None] | None = None
    #: Why a line was refused (bad line, duplicate id), for the run's warnings.
    note: str | None = None
    #: The job's image folder under ``images/`` (journaled with the job).
    folder: str | None = None


def error_fields(error: BaseException | None) -> tuple[str | None, str | None]:
    """The class name and message a journal keeps for ``error``."""
    if error is None:
        return None, None
    return type(error).__name__, str(error) or type(error).__name__


def error_classes() -> dict[str, type[QwenEditError]]:
    """Every error class by name: the tree's own, then subclasses defined elsewhere (the
    tree's win a clash of names)."""
    found: dict[str, type[QwenEditError]] = {}
    pending: list[type[QwenEditError]] = [QwenEditError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.__name__, cls)
        pending += cls.__subclasses__()
    return found


def journaled_error_is(error_type: str | None, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether the error a journal row names is one of ``kinds`` (or a subclass of one).

    A journal keeps an error's class name (it outlives the process); the class it names
    decides, as ``isinstance`` would have on the error itself.

    >>> journaled_error_is("SubmitUncertainError", (TransportError,))
    True
    >>> journaled_error_is("NotRun", (TransportError,))
    False
    """
    cls = error_classes().get(error_type or "")
    return cls is not None and issubclass(cls, kinds)


def _reject(conn: sqlite3.Connection, line: int, job_id: str | None, error: Exception) -> None:
    error_type, message = error_fields(error)
    conn.execute(
        "INSERT OR REPLACE INTO rejects (line, id, error_type, error_message) VALUES (?,?,?,?)",
        (line, job_id, error_type, message),
    )


def _refused(conn: sqlite3.Connection, entry: Entry, error: Exception) -> Admission:
    _reject(conn, entry.line, entry.id, error)
    return Admission(Action.SKIP, EntryState.FAILED, note=str(error))


def admit_one(
    conn: sqlite3.Connection,
    entry: Entry,
    run: int,
    retry_uncertain: bool,
    retry_failed: Callable[[str | None], bool] | None = None,
) -> Admission:
    """Record one manifest line of run ``run`` and say what to do with it."""
    if entry.error is not None or entry.id is None or entry.request is None:
        return _refused(conn, entry, entry.error or ManifestError(f"line {entry.line}: unreadable"))
    row = conn.execute(
        "SELECT status, seen_run, line, task_id, request_id, urls, error_type, folder "
        "FROM jobs WHERE id=?",
        (entry.id,),
    ).fetchone()
    if row is None:
        return _admit_new(conn, entry, run)
    status, seen_run, line, task_id, request_id, urls_text, error_type, folder = row
    if seen_run == run and line != entry.line:
        duplicate = ManifestError(
            f"line {entry.line}: duplicate id {entry.id!r} (line {line} has it); "
            "give each line its own id"
        )
        return _refused(conn, entry, duplicate)
    conn.execute("DELETE FROM rejects WHERE line=?", (entry.line,))
    if folder is None:  # a journal from before folders were recorded
        folder = folder_name(entry.id)
    conn.execute(
        "UPDATE jobs SET seen_run=?, line=?, folder=?, line_hash=coalesce(line_hash, ?) WHERE id=?",
        (run, entry.line, folder, entry.digest, entry.id),
    )
    known = Admission(
        Action.SKIP,
        EntryState(status),
        task_id,
        request_id,
        None if urls_text is None else _decode_list(urls_text),
        folder=folder,
    )
    return _resume(conn, entry.id, known, error_type, retry_uncertain, retry_failed)


def _admit_new(conn: sqlite3.Connection, entry: Entry, run: int) -> Admission:
    """A first sighting of ``entry``'s id: queued, with its own image folder."""
    assert entry.id is not None
    folder = folder_name(entry.id)
    conn.execute("DELETE FROM rejects WHERE line=?", (entry.line,))
    try:
        conn.execute(
            "INSERT INTO jobs (id, line, seen_run, status, n, updated_at, folder, line_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.id, entry.line, run, EntryState.QUEUED, entry.n, time.time(), folder,
             entry.digest),
        )  # fmt: skip
    except sqlite3.IntegrityError:  # two ids, one folder: a 64-bit hash collision
        clash = ManifestError(
            f"line {entry.line}: id {entry.id!r} maps to image folder {folder!r}, which "
            "another id has; give this line another id"
        )
        return _refused(conn, entry, clash)
    return Admission(Action.FRESH, EntryState.QUEUED, folder=folder)


def _requeue(conn: sqlite3.Connection, job_id: str, known: Admission, clear: bool) -> Admission:
    clear_error = "error_type=NULL, error_message=NULL, " if clear else ""
    conn.execute(
        f"UPDATE jobs SET status=?, {clear_error}updated_at=? WHERE id=?",
        (EntryState.QUEUED, time.time(), job_id),
    )
    return Admission(Action.FRESH, EntryState.QUEUED, folder=known.folder)


def _resume(
    conn: sqlite3.Connection,
    job_id: str,
    known: Admission,
    error_type: str | None,
    retry_uncertain: bool,
    retry_failed: Callable[[str | None], bool] | None,
) -> Admission:
    """What a run does with a job the journal knows, from the state it was left in."""
    status, urls = known.status, known.urls
    if status is EntryState.QUEUED:
        return Admission(Action.FRESH, status, folder=known.folder)
    attach = dataclasses.replace(known, action=Action.ATTACH, urls=None)
    download = dataclasses.replace(known, action=Action.DOWNLOAD)
    if status is EntryState.SUBMITTED and known.task_id:
        return attach
    if status is EntryState.DOWNLOADING and urls is not None:
        return download
    if status is EntryState.FAILED:
        if known.task_id and journaled_error_is(error_type, _REATTACHABLE):
            return attach
        if urls and all(urls) and journaled_error_is(error_type, (DownloadError,)):
            return download
        if retry_failed is not None and retry_failed(error_type):
            return _requeue(conn, job_id, known, clear=False)
    pending = status in (EntryState.UNCERTAIN, EntryState.SUBMITTING)
    if pending and retry_uncertain:
        return _requeue(conn, job_id, known, clear=True)
    if status is EntryState.SUBMITTING:  # only when a sweep was skipped: same meaning
        return dataclasses.replace(known, status=EntryState.UNCERTAIN)
    return known
