"""What ``qwen-edit run`` is asked to do (:class:`RunOptions`) and how it ended
(:class:`RunReport`), and the refusal that stops it before it starts.

>>> RunReport(succeeded=3, failed=0, uncertain=0, total=3, images=4, wall=1.0,
...           interrupted=False, results=None).exit_code
0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ._progress import ProgressMode

__all__ = ["RunOptions", "RunRefused", "RunReport"]


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
