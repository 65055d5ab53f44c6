"""The one vocabulary of a bulk job's life, shared by the journal, results, progress and runner.

::

    QUEUED ──► SUBMITTING ──► SUBMITTED ──► DOWNLOADING ──► SUCCEEDED
                   ├──► UNCERTAIN   (the create's answer was lost)
                   └──► FAILED      (from any step)

The values are the strings journals have always stored, so a journal written by an older
version reads the same; being ``str``, a member compares equal to its value.
"""

from __future__ import annotations

import enum

__all__ = ["ENDED", "PENDING", "EntryState", "sql_states"]


class EntryState(str, enum.Enum):
    """Where a job of a bulk run stands, as its journal records it.

    >>> EntryState("submitted") is EntryState.SUBMITTED
    True
    >>> f"{EntryState.FAILED}", EntryState.FAILED == "failed"
    ('failed', True)
    """

    QUEUED = "queued"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNCERTAIN = "uncertain"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        # A str-mixin member formats as its value on every supported Python.
        return format(self.value, spec)

    @property
    def ended(self) -> bool:
        """Whether the job has ended (succeeded, failed or uncertain)."""
        return self in ENDED


#: States of a job that has ended, in the order counts are shown.
ENDED = (EntryState.SUCCEEDED, EntryState.FAILED, EntryState.UNCERTAIN)
#: States of a job that has not ended yet.
PENDING = (
    EntryState.QUEUED,
    EntryState.SUBMITTING,
    EntryState.SUBMITTED,
    EntryState.DOWNLOADING,
)


def sql_states(*states: EntryState) -> str:
    """An SQL list of ``states``' values for ``status IN ...`` (constants, never input).

    >>> sql_states(EntryState.FAILED, EntryState.UNCERTAIN)
    "('failed', 'uncertain')"
    """
    return "(" + ", ".join(f"'{state.value}'" for state in states) + ")"
