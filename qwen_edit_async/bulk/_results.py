"""A run's outputs, read from the journal: where images go, ``results.jsonl`` and the
summary ``qwen-edit status`` shows. Nothing here writes to the journal (``_journal.py`` is
its one writer); ``results.jsonl`` is written whole from it, and leftovers are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from .._atomic import atomic_write, fsync_path
from .._download import safe_stem
from .._errors import SubmitUncertainError
from ._state import EntryState, sql_states

__all__ = [
    "ResultLine",
    "Summary",
    "count_jobs",
    "folder_name",
    "find_symlink",
    "read_summary",
    "remove_partials",
    "write_results",
]

# How a job that has not ended is reported, should results be written before the run's end.
_UNFINISHED = {
    EntryState.QUEUED: (EntryState.FAILED, "NotRun", "not submitted yet: resume the run"),
    EntryState.SUBMITTING: (
        EntryState.UNCERTAIN,
        SubmitUncertainError.__name__,
        "its create was being sent: the provider may have created (and billed) it",
    ),
    EntryState.SUBMITTED: (
        EntryState.FAILED,
        "NotFinished",
        "submitted, result not saved yet: resume the run",
    ),
    EntryState.DOWNLOADING: (
        EntryState.FAILED,
        "NotFinished",
        "result known, images not saved yet: resume the run",
    ),
}

#: States a job can end in short of success (listed among the failures).
_ENDED_BADLY = sql_states(EntryState.FAILED, EntryState.UNCERTAIN)
_encode = msgspec.json.Encoder().encode
_decode_list = msgspec.json.Decoder(list[str]).decode
_decode_urls = msgspec.json.Decoder(list[str | None]).decode
_decode_usage = msgspec.json.Decoder(dict[str, Any]).decode
#: A folder name used as is: lower case (no two ids differ only by case on a case-
#: insensitive file system) and never of the hashed form below.
_PLAIN = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,99}")
_HASHED = re.compile(r".*-[0-9a-f]{16}")


class ResultLine(msgspec.Struct, frozen=True):
    """One line of ``results.jsonl``; its fields are part of the documented output
    (``docs/bulk.md``)."""

    #: The job's id; for a manifest line that is not JSON, ``"line N"``.
    id: str
    status: EntryState
    task_id: str | None
    request_id: str | None
    #: Paths relative to the run's folder.
    files: list[str]
    #: ``{"type": class name, "message": ...}`` or ``None``.
    error: dict[str, str] | None
    #: The result's image URLs (they expire after about a day; ``None`` for inline data).
    urls: list[str | None]
    #: The provider's usage figures for the job, when it gave them.
    usage: dict[str, Any] | None


def count_jobs(conn: sqlite3.Connection) -> dict[str, int]:
    """Jobs per status, plus ``rejected`` manifest lines and ``images`` saved."""
    counts = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    counts["rejected"] = conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
    counts["images"] = conn.execute(
        "SELECT coalesce(sum(json_array_length(files)), 0) FROM jobs WHERE status=?",
        (EntryState.SUCCEEDED,),
    ).fetchone()[0]
    return counts


def result_lines(conn: sqlite3.Connection) -> Iterable[ResultLine]:
    """Every job of the journal (not only the current manifest's) and the lines the last
    pass refused, in manifest order."""
    cursor = conn.execute(
        "SELECT line, id, status, task_id, request_id, files, error_type, error_message, "
        "urls, usage FROM jobs UNION ALL "
        "SELECT line, id, ?, NULL, NULL, NULL, error_type, error_message, NULL, NULL "
        "FROM rejects ORDER BY line",
        (EntryState.FAILED,),
    )
    for line, job_id, text, task_id, request_id, files, error_type, message, urls, usage in cursor:
        status = EntryState(text)
        if status is EntryState.QUEUED and error_type is not None:  # requeued: run-wide error
            status, message = EntryState.FAILED, f"{message} (not sent: resume the run)"
        elif not status.ended:  # only when written before the run's end
            status, error_type, message = _UNFINISHED[status]
        error = None if error_type is None else {"type": error_type, "message": message or ""}
        paths = _decode_list(files) if files else []
        yield ResultLine(
            f"line {line}" if job_id is None else job_id,
            status,
            task_id,
            request_id,
            paths,
            error,
            _decode_urls(urls) if urls else [],
            _decode_usage(usage) if usage else None,
        )


def write_results(conn: sqlite3.Connection, folder: Path, run: int = 0) -> Path:
    """Write ``folder/results.jsonl`` whole (:func:`~qwen_edit_async._atomic.atomic_write`:
    a new temporary file, fsync, rename, the folder's fsync), first removing what a killed
    earlier write left behind."""
    target = folder / "results.jsonl"
    for leftover in folder.glob(".results.jsonl.*.part"):
        leftover.unlink(missing_ok=True)  # removing a planted link never touches its target
    with atomic_write(target) as handle:
        for line in result_lines(conn):
            handle.write(_encode(line) + b"\n")
    with contextlib.suppress(OSError):  # make the rename durable where directories sync
        fsync_path(folder)
    return target


def folder_name(job_id: str) -> str:
    """The image folder of a job, one-to-one: its id when that is a plain lower-case file
    name, else a safe lower-case form plus 16 hex digits of the id's SHA-256.

    >>> folder_name("cat-1"), folder_name("Cat 1")
    ('cat-1', 'cat_1-178b2f2719af9136')
    """
    if _PLAIN.fullmatch(job_id) and not _HASHED.fullmatch(job_id) and job_id[-1] != ".":
        return job_id
    safe = safe_stem(job_id).lower()[:80]
    return f"{safe}-{hashlib.sha256(job_id.encode()).hexdigest()[:16]}"


def find_symlink(folder: Path) -> Path | None:
    """The first symbolic link inside ``folder`` (not followed), or ``None``.

    A run never writes through a link in its folder: a link planted at an image folder,
    an image or a temporary file could make it write anywhere.
    """
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_symlink():
                return Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return None


def remove_partials(folder: Path) -> None:
    """Temporary files a killed download left behind (finished files are replaced whole)."""
    if folder.is_dir():
        for leftover in folder.glob(".*.part"):
            leftover.unlink(missing_ok=True)


@dataclasses.dataclass
class Summary:
    """What ``qwen-edit status`` shows: counts, the run's settings, failures."""

    counts: dict[str, int]
    meta: dict[str, str]
    #: (id, error type, message) of failed and uncertain jobs and refused lines.
    failures: list[tuple[str | None, str, str]]
    #: Failed and uncertain jobs and refused lines per error type.
    by_type: dict[str, int] = dataclasses.field(default_factory=dict)


def read_summary(path: Path, *, limit: int | None = 50) -> Summary:
    """Read a journal without writing to it (a run may be going on)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        counts = count_jobs(conn)
        query = (
            "SELECT line, id, error_type, error_message FROM jobs "
            f"WHERE status IN {_ENDED_BADLY} UNION ALL "
            "SELECT line, id, error_type, error_message FROM rejects ORDER BY line"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        failures = [
            (job_id, error_type or "", message or "")
            for _line, job_id, error_type, message in conn.execute(query, params)
        ]
        by_type = dict(
            conn.execute(
                "SELECT coalesce(error_type, ''), count(*) FROM (SELECT error_type FROM jobs "
                f"WHERE status IN {_ENDED_BADLY} UNION ALL "
                "SELECT error_type FROM rejects) GROUP BY 1 ORDER BY 2 DESC, 1"
            ).fetchall()
        )
    finally:
        conn.close()
    return Summary(counts, meta, failures, by_type)
