"""A resume runs the manifest the run started with: find the lines that differ.

The journal keeps a digest of each job's line. On ``--resume``, a known id whose line now
differs (an edited prompt, another image) would silently keep its old result, and an id the
journal has never seen, at a line the run had already read, means another manifest: both are
refused, naming the first difference, unless the user accepts them. Lines the run refused
(bad lines, duplicate ids) may be fixed and resumed freely.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread

from ._journal import Journal
from ._manifest import Entry, read_manifest

__all__ = ["ManifestChanges", "compare_manifest"]

_BATCH = 512
_SHOWN = 5


@dataclasses.dataclass
class ManifestChanges:
    """How the manifest differs from the one the journaled run read."""

    changed: int = 0
    new: int = 0
    #: The first differences, each ``"line N: ..."``, in manifest order.
    examples: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.new)


def _last_line(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT max(line) FROM (SELECT line FROM jobs UNION ALL SELECT line FROM rejects)"
    ).fetchone()
    return int(row[0] or 0)


def _compare(
    conn: sqlite3.Connection, entries: Sequence[Entry], last_line: int, changes: ManifestChanges
) -> None:
    for entry in entries:
        if entry.id is None or entry.digest is None:
            continue
        if conn.execute("SELECT 1 FROM rejects WHERE line=?", (entry.line,)).fetchone():
            continue  # a line the run refused: fixing it is what a resume is for
        row = conn.execute("SELECT line_hash, line FROM jobs WHERE id=?", (entry.id,)).fetchone()
        if row is not None:
            if row[0] is None or row[0] == entry.digest:
                continue
            changes.changed += 1
            note = (
                f"line {entry.line}: the edit of id {entry.id!r} differs from the one the "
                f"run journaled (line {row[1]})"
            )
        elif entry.line <= last_line:
            changes.new += 1
            note = (
                f"line {entry.line}: id {entry.id!r} is not in the journaled run, which had "
                "read past this line (another manifest?)"
            )
        else:
            continue  # past where the run had read: the rest of the same manifest
        if len(changes.examples) < _SHOWN:
            changes.examples.append(note)


async def compare_manifest(
    journal: Journal, manifest: Path, *, stop_at_first: bool
) -> ManifestChanges:
    """Compare every line of ``manifest`` with the journal (read-only)."""
    last_line = await journal.call(_last_line)
    changes = ManifestChanges()
    entries = read_manifest(manifest)
    try:
        while True:
            batch = await anyio.to_thread.run_sync(lambda: list(itertools.islice(entries, _BATCH)))
            if not batch:
                return changes
            compare = functools.partial(
                _compare, entries=batch, last_line=last_line, changes=changes
            )
            await journal.call(compare)
            if stop_at_first and changes:
                return changes
    finally:
        entries.close()
