"""The bulk run's feeder: the manifest, read lazily, admitted to the journal line by line.

Lines are read and admitted in batches, in order (which is how duplicate ids are found
without holding every id in memory); a line the journal says to act on is handed to the
workers as :class:`Work`, one that has ended is counted as done before this run.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from .._models import EditRequest
from ._journal import Action, Admission, Journal
from ._manifest import count_lines, read_manifest
from ._options import RunOptions
from ._progress import Tracker

__all__ = ["Feeder", "Work"]

_FEED_BATCH = 256
_MAX_LINE_WARNINGS = 20


@dataclasses.dataclass(slots=True)
class Work:
    """One job for a worker: its id, its request (``None`` for a re-attach) and what the
    journal knows of it."""

    id: str
    request: EditRequest | None
    admission: Admission


class Feeder:
    """Feeds one run's workers from its manifest through its journal.

    >>> feeder = Feeder(options, journal, tracker, log)                  # doctest: +SKIP
    >>> await feeder.feed(send, run, scope, stopping=lambda: False)      # doctest: +SKIP
    """

    def __init__(
        self, options: RunOptions, journal: Journal, tracker: Tracker, log: Callable[[str], None]
    ) -> None:
        self._options = options
        self._journal = journal
        self._tracker = tracker
        self._log = log
        #: Whether every line of the manifest was admitted (the pass reached its end).
        self.pass_complete = False
        #: The last line admitted.
        self.last_line = 0
        self._line_warnings = 0

    async def count_total(self) -> None:
        """Count the manifest's lines for the progress's total (in a thread, abandoned when
        the run ends first)."""
        try:
            total = await anyio.to_thread.run_sync(
                count_lines, self._options.manifest, abandon_on_cancel=True
            )
        except OSError:
            return
        self._tracker.total = total

    async def feed(
        self,
        send: MemoryObjectSendStream[Work],
        run: int,
        scope: anyio.CancelScope,
        stopping: Callable[[], bool],
    ) -> None:
        """Admit every line of the manifest to run ``run``; send the ones to act on."""
        o = self._options
        entries = read_manifest(o.manifest)
        try:
            with send, scope:
                if stopping():
                    return
                while True:
                    batch = await anyio.to_thread.run_sync(
                        lambda: list(itertools.islice(entries, _FEED_BATCH))
                    )
                    if not batch:
                        self.pass_complete = True
                        return
                    admissions = await self._journal.admit(
                        batch,
                        run,
                        retry_uncertain=o.retry_uncertain,
                        retry_failed=o.retry_failed,
                    )
                    for entry, admission in zip(batch, admissions, strict=True):
                        self.last_line = entry.line
                        if admission.action is Action.SKIP:
                            self._skip(admission)
                            continue
                        assert entry.id is not None
                        await send.send(Work(entry.id, entry.request, admission))
        finally:
            entries.close()

    def _skip(self, admission: Admission) -> None:
        if admission.note is not None:
            self._warn_line(admission.note)
        self._tracker.finish(admission.status, earlier=True)

    def _warn_line(self, message: str) -> None:
        self._line_warnings += 1
        if self._line_warnings <= _MAX_LINE_WARNINGS:
            self._log(f"manifest {message}")
        elif self._line_warnings == _MAX_LINE_WARNINGS + 1:
            self._log("more manifest lines were refused: see qwen-edit status")
