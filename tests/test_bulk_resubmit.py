"""A bulk run journals every task its jobs were accepted as, resubmissions included."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._bulk_support import (
    FakeServer,
    journal_rows,
    read_results,
    run_cli,
    start_cli,
    wait_for,
    write_images,
    write_manifest,
)

# A run killed at a precise point and resumed: 3.5 s and more.
pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer("--latency", "0.05")
    yield server
    server.close()


def test_a_resubmitted_task_is_journaled_and_attached_on_resume(
    fake: FakeServer, tmp_path: Path
) -> None:
    """A task that failed transiently is submitted again; the journal names the new task
    as soon as it is accepted, so after a kill -9 the resumed run attaches to that task
    instead of calling the job uncertain or attaching to the failed one."""
    fake.post("/_fake/script", ["fail:service_error", "stuck"])
    write_images(tmp_path)
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [{"id": "only", "images": ["in/a.png"], "prompt": "edit", "size": "512*512"}],
    )
    out = tmp_path / "out"
    args = [
        "run", str(manifest), "--out", str(out), "--provider", "evolink",
        "--base-url", fake.url, "--upload-url", f"{fake.url}/_fake/upload",
        "--progress", "none", "--job-timeout", "30",
    ]  # fmt: skip
    proc = start_cli(*args)
    try:

        def journaled_second_task() -> bool:
            jobs = fake.stats(jobs=True)["jobs"]
            rows = {}
            # Never connect before the run made the file (that would create it); it may
            # still be without its tables for a moment.
            if (out / "journal.sqlite3").exists():
                with contextlib.suppress(sqlite3.OperationalError):
                    rows = journal_rows(out)
            row = rows.get("only")
            return (
                len(jobs) == 2
                and row is not None
                and row["status"] == "submitted"
                and row["task_id"] == jobs[1]["id"]
            )

        wait_for(journaled_second_task, timeout=40)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    second = fake.stats(jobs=True)["jobs"][1]["id"]
    resumed = run_cli(*args[:-1], "1", "--resume")  # a short deadline: the task is stuck
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    (row,) = read_results(out)
    assert row["status"] == "failed" and row["error"]["type"] == "JobTimeoutError"
    assert row["task_id"] == second
    assert fake.stats()["jobs_created"] == 2  # attached, not submitted a third time
