"""What the fake received and did: counters, running jobs, per-job records."""

from __future__ import annotations

import heapq
import time
from typing import Any

from ._jobs import Job

__all__ = ["FakeStats"]

_COUNTERS = (
    "creates",
    "jobs_created",
    "polls",
    "polls_before_completion",
    "downloads",
    "uploads",
    "rate_limited",
    "refused_concurrency",
    "refused_rate",
    "rejected",
    "server_errors",
    "dropped",
    "malformed",
    "callbacks_sent",
    "callbacks_delivered",
    "callbacks_refused",
    "callbacks_failed",
    "callbacks_dropped",
    "callbacks_undeliverable",
)


class FakeStats:
    """Live counters of a :class:`FakeProvider`; ``snapshot()`` gives a plain dict.

    Example::

        async with FakeProvider() as fake:
            ...
            assert fake.stats.jobs_created == 3
            lag = [j["first_seen_completed_at"] - j["completed_at"]
                   for j in fake.stats.snapshot()["jobs"] if j["first_seen_completed_at"]]

    Counters: ``creates`` (create requests received), ``jobs_created`` (jobs accepted and
    billed), ``polls`` (task status requests), ``polls_before_completion`` (status answers
    that said "not finished yet"), ``downloads`` (result images served), ``uploads``,
    ``rate_limited`` (429 answers, injected or from the limits), ``refused_concurrency``
    and ``refused_rate`` (429s from ``max_running``, and from ``max_rate`` or ``burst``),
    ``rejected`` (other 4xx
    answers to creates), ``server_errors`` (5xx answers), ``dropped`` (connections closed
    without an answer), ``malformed`` (invalid JSON bodies sent); completion callbacks:
    ``callbacks_sent`` (POST attempts), ``callbacks_delivered`` (answered 2xx),
    ``callbacks_refused`` (answered otherwise), ``callbacks_failed`` (no answer),
    ``callbacks_dropped`` (by the ``callback_drop`` fault), ``callbacks_undeliverable``
    (a callback URL off loopback: accepted, never called). ``running`` is the number
    of jobs running now, ``peak_running`` its maximum. ``jobs`` maps job id to its record;
    times in records are wall-clock (``time.time()``) so another process can compare them.
    """

    __slots__ = (*_COUNTERS, "_ends", "_stuck", "_sync_open", "jobs", "peak_running")

    def __init__(self) -> None:
        self._sync_open = 0  # live connections: survives reset()
        self.reset()

    def reset(self) -> None:
        """Zero every counter and forget every job (sync requests still open stay counted)."""
        for name in _COUNTERS:
            setattr(self, name, 0)
        self.jobs: dict[str, Job] = {}
        self._ends: list[float] = []  # heap of monotonic end times of running task jobs
        self._stuck = 0
        self.peak_running = self._sync_open

    # Typed views of the counters set in reset() (mypy cannot see setattr).
    creates: int
    jobs_created: int
    polls: int
    polls_before_completion: int
    downloads: int
    uploads: int
    rate_limited: int
    refused_concurrency: int
    refused_rate: int
    rejected: int
    server_errors: int
    dropped: int
    malformed: int
    callbacks_sent: int
    callbacks_delivered: int
    callbacks_refused: int
    callbacks_failed: int
    callbacks_dropped: int
    callbacks_undeliverable: int

    @property
    def running(self) -> int:
        """Jobs started and not yet finished (task jobs by their end time, sync by request)."""
        ends = self._ends
        now = time.monotonic()
        while ends and ends[0] <= now:
            heapq.heappop(ends)
        return len(ends) + self._stuck + self._sync_open

    def task_started(self, job: Job) -> None:
        """Count a task job as running until its end time."""
        end = job.end_mono
        if end == float("inf"):
            self._stuck += 1
        else:
            heapq.heappush(self._ends, end)
        self._note_peak()

    def sync_started(self) -> None:
        """Count an open sync request as a running job."""
        self._sync_open += 1
        self._note_peak()

    def sync_ended(self) -> None:
        """The sync request finished, failed or was abandoned by the client."""
        self._sync_open -= 1

    def _note_peak(self) -> None:
        running = self.running
        if running > self.peak_running:
            self.peak_running = running

    def snapshot(self, *, jobs: bool = True) -> dict[str, Any]:
        """A plain-dict copy: every counter, ``running``, ``peak_running`` and job records."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS}
        out["running"] = self.running
        out["peak_running"] = self.peak_running
        if jobs:
            now = time.monotonic()
            out["jobs"] = [_record(job, now) for job in self.jobs.values()]
        return out

    def __repr__(self) -> str:
        counters = ", ".join(f"{name}={getattr(self, name)}" for name in _COUNTERS)
        return f"FakeStats({counters}, running={self.running}, peak_running={self.peak_running})"


def _record(job: Job, now: float) -> dict[str, Any]:
    return {
        "id": job.id,
        "dialect": job.dialect,
        "model": job.model,
        "outcome": job.outcome,
        "phase": job.phase(now) if job.sync_finished_at is None else job.phase(float("inf")),
        "n": job.n,
        "width": job.width,
        "height": job.height,
        "latency": job.latency,
        "polls": job.polls,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "first_seen_completed_at": job.first_seen_completed_at,
        "callback_url": job.callback_url,
        "callback_delivered_at": job.callback_delivered_at,
        "request_id": job.request_id,
    }
