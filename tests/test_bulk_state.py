"""One vocabulary for a bulk job's life (``EntryState``); re-attachment and ``--retry-failed``'s
default decided by the error tree's classes rather than by lists of class names."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from qwen_edit_async import (
    EditRequest,
    JobTimeoutError,
    ServerError,
    TransportError,
    ValidationError,
)
from qwen_edit_async.bulk._admit import journaled_error_is
from qwen_edit_async.bulk._journal import Action, Journal
from qwen_edit_async.bulk._manifest import Entry
from qwen_edit_async.bulk._run_cli import retry_filter
from qwen_edit_async.bulk._state import ENDED, PENDING, EntryState

META = {"provider": "vtrix", "base_url": "http://127.0.0.1:1", "model": "m"}
REQUEST = EditRequest(images=["https://example.com/a.png"], prompt="x")


class SlowTaskError(JobTimeoutError):
    """A timeout of a kind the journal's code never named: still a timeout."""


def test_the_states_are_the_strings_journals_have_always_stored() -> None:
    """Old journals read the same: every value is the string an older version wrote."""
    assert [state.value for state in EntryState] == [
        "queued", "submitting", "submitted", "downloading", "succeeded", "failed", "uncertain",
    ]  # fmt: skip
    assert set(PENDING) | set(ENDED) == set(EntryState) and not set(PENDING) & set(ENDED)
    assert EntryState("failed") is EntryState.FAILED and EntryState.FAILED == "failed"
    assert f"{EntryState.UNCERTAIN}" == str(EntryState.UNCERTAIN) == "uncertain"
    assert [state.ended for state in EntryState] == [False] * 4 + [True] * 3


async def _journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "j.sqlite3")
    await asyncio.to_thread(journal.start)
    return journal


async def test_the_schema_refuses_a_state_outside_the_vocabulary(tmp_path: Path) -> None:
    """The journal's CHECK constraint is built from the enum: no other word gets in."""
    journal = await _journal(tmp_path)
    try:
        run, _, _ = await journal.begin_run(META)
        await journal.admit([Entry(1, "a", REQUEST)], run, retry_uncertain=False)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            await journal.call(lambda c: c.execute("UPDATE jobs SET status='running'"))
    finally:
        journal.close()


async def test_admissions_carry_the_enum(tmp_path: Path) -> None:
    """What the journal hands the runner is an ``EntryState``, not a bare string."""
    journal = await _journal(tmp_path)
    try:
        run, _, _ = await journal.begin_run(META)
        (first,) = await journal.admit([Entry(1, "a", REQUEST)], run, retry_uncertain=False)
        await journal.mark_submitting("a")
        await journal.mark_submitted("a", "task-1", None)
        run, _, _ = await journal.begin_run(META)
        (again,) = await journal.admit([Entry(1, "a", REQUEST)], run, retry_uncertain=False)
    finally:
        journal.close()
    assert first.status is EntryState.QUEUED
    assert again.status is EntryState.SUBMITTED and again.action is Action.ATTACH


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (JobTimeoutError("late"), Action.ATTACH),
        (SlowTaskError("later"), Action.ATTACH),  # a subclass: the class decides, not a name
        (TransportError("reset"), Action.ATTACH),
        (ServerError("refused"), Action.SKIP),  # the task failed: nothing to wait for
    ],
)
async def test_a_failed_job_is_reattached_when_its_error_says_the_task_may_finish(
    tmp_path: Path, error: Exception, action: Action
) -> None:
    """A failed job with a task id is re-attached on resume when its journaled error is a
    timeout, a cancellation or a transport error, subclasses included."""
    journal = await _journal(tmp_path)
    try:
        run, _, _ = await journal.begin_run(META)
        await journal.admit([Entry(1, "a", REQUEST)], run, retry_uncertain=False)
        await journal.mark_submitting("a")
        await journal.end("a", EntryState.FAILED, error, task_id="task-1")
        run, _, _ = await journal.begin_run(META)
        (admission,) = await journal.admit([Entry(1, "a", REQUEST)], run, retry_uncertain=False)
    finally:
        journal.close()
    assert (admission.action, admission.status) == (action, EntryState.FAILED)


def test_a_journaled_error_name_is_judged_by_its_class() -> None:
    """Names of the tree and of subclasses defined elsewhere resolve; unknown ones do not."""
    assert journaled_error_is("SubmitUncertainError", (TransportError,))
    assert journaled_error_is("SlowTaskError", (JobTimeoutError,))
    assert not journaled_error_is("ServerError", (JobTimeoutError, TransportError))
    assert not journaled_error_is("NotRun", (TransportError,))
    assert not journaled_error_is(None, (TransportError,))


class BadPromptError(ValidationError):
    """A validation failure of a kind the command line never named: still not retried."""


def test_retry_failed_by_default_leaves_every_validation_failure_alone() -> None:
    """``--retry-failed`` without types skips validation and manifest failures by their
    classes, subclasses included; other failures are retried."""
    default = retry_filter("")
    assert not default("ValidationError") and not default("ManifestError")
    assert not default("BadPromptError")
    assert default("ServerError") and default("NotRun") and default(None)
