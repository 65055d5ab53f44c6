"""A run's outputs: where images go, ``results.jsonl`` from the journal, and the summary
``qwen-edit status`` shows. Reads only; the journal (``_journal.py``) is the one writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from ._download import safe_stem

__all__ = [
    "ResultLine",
    "Summary",
    "count_jobs",
    "folder_name",
    "read_summary",
    "remove_partials",
    "write_results",
]

TERMINAL = ("succeeded", "failed", "uncertain")

# How a job that has not ended is reported, should results be written before the run's end.
_UNFINISHED = {
    "queued": ("failed", "NotRun", "not submitted yet: resume the run"),
    "submitting": (
        "uncertain",
        "SubmitUncertainError",
        "its create was being sent: the provider may have created (and billed) it",
    ),
    "submitted": ("failed", "NotFinished", "submitted, result not saved yet: resume the run"),
    "downloading": ("failed", "NotFinished", "result known, images not saved yet: resume the run"),
}

_encode = msgspec.json.Encoder().encode
_decode_list = msgspec.json.Decoder(list[str]).decode


class ResultLine(msgspec.Struct, frozen=True):
    """One line of ``results.jsonl`` (DESIGN.md, "Contract details")."""

    id: str | None
    status: str
    task_id: str | None
    request_id: str | None
    #: Paths relative to the run's folder.
    files: list[str]
    #: ``{"type": class name, "message": ...}`` or ``None``.
    error: dict[str, str] | None


def count_jobs(conn: sqlite3.Connection) -> dict[str, int]:
    """Jobs per status, plus ``rejected`` manifest lines and ``images`` saved."""
    counts = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    counts["rejected"] = conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
    counts["images"] = conn.execute(
        "SELECT coalesce(sum(json_array_length(files)), 0) FROM jobs WHERE status='succeeded'"
    ).fetchone()[0]
    return counts


def result_lines(conn: sqlite3.Connection, run: int) -> Iterable[ResultLine]:
    """The jobs run ``run`` read and the lines it refused, in manifest order."""
    cursor = conn.execute(
        "SELECT line, id, status, task_id, request_id, files, error_type, error_message "
        "FROM jobs WHERE seen_run=? UNION ALL "
        "SELECT line, id, 'failed', NULL, NULL, NULL, error_type, error_message FROM rejects "
        "ORDER BY line",
        (run,),
    )
    for _line, job_id, status, task_id, request_id, files, error_type, message in cursor:
        if status not in TERMINAL:  # only when written before the run's end
            status, error_type, message = _UNFINISHED[status]
        error = None if error_type is None else {"type": error_type, "message": message or ""}
        paths = _decode_list(files) if files else []
        yield ResultLine(job_id, status, task_id, request_id, paths, error)


def write_results(conn: sqlite3.Connection, folder: Path, run: int) -> Path:
    """Write ``folder/results.jsonl`` atomically (temporary file, fsync, rename)."""
    target = folder / "results.jsonl"
    temp = folder / ".results.jsonl.part"
    with open(temp, "wb") as handle:
        for line in result_lines(conn, run):
            handle.write(_encode(line) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)
    with contextlib.suppress(OSError):  # make the rename durable where directories sync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


def folder_name(job_id: str) -> str:
    """The image folder of a job: its id when that is a safe file name, else a safe form
    with a hash, so that two ids never share a folder."""
    safe = safe_stem(job_id)
    if safe == job_id:
        return safe
    return f"{safe[:100]}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}"


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


def read_summary(path: Path, *, limit: int | None = 50) -> Summary:
    """Read a journal without writing to it (a run may be going on)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        counts = count_jobs(conn)
        query = (
            "SELECT line, id, error_type, error_message FROM jobs "
            "WHERE status IN ('failed', 'uncertain') UNION ALL "
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
    finally:
        conn.close()
    return Summary(counts, meta, failures)
