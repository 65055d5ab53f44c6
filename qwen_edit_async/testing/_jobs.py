"""One accepted (billed) job and its timeline, computed from the clock at query time.

No timer runs per job: a job knows when it was created and how long it takes, and its
status is derived from ``time.monotonic()`` whenever someone asks.
"""

from __future__ import annotations

import math
import time
from typing import Literal

__all__ = ["Job", "Phase"]

Phase = Literal["pending", "running", "succeeded", "failed"]

#: The first part of a job's duration reported as queued (Evolink ``pending``).
PENDING_FRACTION = 0.1


class Job:
    """A job the fake accepted: its request, its fate, and what was observed of it."""

    __slots__ = (
        "callback_delivered_at",
        "callback_url",
        "created_at",
        "created_mono",
        "dialect",
        "fail_code",
        "first_seen_completed_at",
        "height",
        "id",
        "latency",
        "model",
        "n",
        "outcome",
        "polls",
        "prompt",
        "request_id",
        "revised_prompt",
        "serial",
        "sync",
        "sync_finished_at",
        "width",
    )

    def __init__(
        self,
        *,
        id: str,
        serial: int,
        dialect: str,
        model: str,
        n: int,
        width: int,
        height: int,
        prompt: str,
        revised_prompt: str | None,
        latency: float,
        outcome: str,
        fail_code: str | None,
        request_id: str,
        sync: bool = False,
    ) -> None:
        self.id = id
        self.serial = serial
        self.dialect = dialect
        self.model = model
        self.n = n
        self.width = width
        self.height = height
        self.prompt = prompt
        self.revised_prompt = revised_prompt
        self.latency = latency
        #: ``ok``, ``fail``, ``content_filter``, ``quota`` or ``stuck``.
        self.outcome = outcome
        self.fail_code = fail_code
        self.request_id = request_id
        #: Whether the dialect answers the create with the result (no task to poll).
        self.sync = sync
        self.created_at = time.time()
        self.created_mono = time.monotonic()
        self.polls = 0
        #: Wall-clock time of the first status answer that reported the job finished.
        self.first_seen_completed_at: float | None = None
        #: Where the task's completion is POSTed (Evolink ``callback_url``), if anywhere.
        self.callback_url: str | None = None
        #: Wall-clock time a completion callback was first answered 2xx.
        self.callback_delivered_at: float | None = None
        #: Wall-clock time a sync answer was sent (sync dialects only).
        self.sync_finished_at: float | None = None

    @property
    def end_mono(self) -> float:
        """Monotonic time the job finishes; infinity when it is stuck."""
        if self.outcome == "stuck":
            return math.inf
        return self.created_mono + self.latency

    @property
    def completed_at(self) -> float | None:
        """Wall-clock time the job reached its final state (``None`` while unfinished).

        For task dialects that is creation plus latency, whether or not anyone polled; for
        sync dialects it is the moment the answer was sent.
        """
        if self.sync_finished_at is not None:
            return self.sync_finished_at
        if self.outcome == "stuck" or self.sync:
            return None
        end = self.created_at + self.latency
        return end if end <= time.time() else None

    def phase(self, now: float) -> Phase:
        """Where the job stands at monotonic time ``now``."""
        elapsed = now - self.created_mono
        if self.outcome != "stuck" and elapsed >= self.latency:
            return "succeeded" if self.outcome == "ok" else "failed"
        if elapsed < PENDING_FRACTION * self.latency:
            return "pending"
        return "running"

    def progress(self, now: float) -> float:
        """Fraction done in [0, 1): linear in elapsed time; a stuck job creeps towards 0.95."""
        elapsed = max(0.0, now - self.created_mono)
        if self.outcome == "stuck":
            scale = self.latency if self.latency > 0 else 1.0
            return 0.95 * (1.0 - math.exp(-elapsed / scale))
        if self.latency <= 0:
            return 0.0
        return min(0.99, elapsed / self.latency)
