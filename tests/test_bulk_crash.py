"""``kill -9`` at random instants, then ``--resume`` until done: nothing lost, nothing paid twice.

The CLI runs as a real subprocess against the fake provider in another process; the fake's
own records (``/_fake/stats``) say how many jobs were created, and with which ids.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests._bulk_support import (
    FakeServer,
    check_folder,
    edits,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    start_cli,
    wait_for,
    write_images,
    write_manifest,
)

# Each test kills and resumes real runs many times (12-25 s on 2 cores).
pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def assert_consistent(journal: Path) -> None:
    """A journal as a killed run left it: intact, and every row's fields fit its status."""
    conn = sqlite3.connect(journal)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for status, task_id, urls, files, error_type in conn.execute(
            "SELECT status, task_id, urls, files, error_type FROM jobs"
        ):
            if status == "submitted":
                assert task_id
            if status == "downloading":
                assert urls
            if status == "succeeded":
                assert files is not None
            if status in ("failed", "uncertain"):
                assert error_type
    finally:
        conn.close()


def runs(out: Path) -> int:
    """How many runs have started in ``out`` (0 before the journal exists)."""
    try:
        conn = sqlite3.connect(f"file:{out / 'journal.sqlite3'}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='runs'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def crash_and_resume(
    server: FakeServer, tmp_path: Path, provider: str, jobs: int, kills: int, seed: int
) -> tuple[dict[str, dict[str, object]], int]:
    """Run, kill -9 ``kills`` times at random instants, resume to the end; check the folder."""
    rng = random.Random(seed)
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(jobs))
    out = tmp_path / "out"
    args = ["run", manifest, "--out", out, "--provider", provider, "--base-url", server.url]
    args += ["--concurrency", "32", "--progress", "none"]
    for attempt in range(kills):
        proc = start_cli(*args, *(["--resume"] if attempt else []))
        wait_for(lambda p=proc, n=attempt: runs(out) > n or p.poll() is not None)
        try:
            proc.wait(timeout=rng.uniform(0.2, 1.2))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert_consistent(out / "journal.sqlite3")
    final = run_cli(*args, "--resume")
    assert final.returncode in (0, 1), final.stderr
    results = check_folder(out, [f"job-{i:04d}" for i in range(jobs)])
    return results, final.returncode


def assert_paid_once(server: FakeServer, results: dict[str, dict[str, object]], key: str) -> None:
    """The fake created one job per job, plus at most one per job reported uncertain."""
    stats = server.stats(jobs=True)
    created = {job["id"] for job in stats["jobs"]}
    recorded = [row[key] for row in results.values() if row[key]]
    uncertain = sum(1 for row in results.values() if row["status"] == "uncertain")
    assert len(recorded) == len(set(recorded)), "two jobs share a task"
    assert set(recorded) <= created, "the journal names a task the provider never created"
    orphans = created - set(recorded)
    assert len(orphans) <= uncertain, f"{len(orphans)} jobs created but not journaled"
    assert stats["jobs_created"] == len(results) - uncertain + len(orphans)


def test_task_provider_survives_kill_9_at_random_points(server: FakeServer, tmp_path: Path) -> None:
    """Vtrix (task + poll): 4 kill -9s, then --resume: every job ends succeeded (n valid
    PNGs on disk, as journaled) or uncertain with a reason, and the provider created each
    job once, plus at most one per uncertain job: no job was paid twice."""
    server.reset(latency_lognormal=[0.2, 0.5])
    results, code = crash_and_resume(server, tmp_path, "vtrix", jobs=300, kills=4, seed=6)
    statuses = [row["status"] for row in results.values()]
    assert set(statuses) <= {"succeeded", "uncertain"}
    assert statuses.count("succeeded") >= 300 - 4 * 32
    assert code == (0 if statuses.count("uncertain") == 0 else 1)
    assert_paid_once(server, results, "task_id")


def test_sync_provider_survives_kill_9(server: FakeServer, tmp_path: Path) -> None:
    """DashScope (synchronous, no task id): a job killed mid-request is uncertain, never
    resubmitted; the others complete after --resume, with their files."""
    server.reset(latency_lognormal=[0.2, 0.5])
    results, _ = crash_and_resume(server, tmp_path, "dashscope", jobs=120, kills=2, seed=7)
    statuses = [row["status"] for row in results.values()]
    assert set(statuses) <= {"succeeded", "uncertain"}
    assert statuses.count("succeeded") >= 120 - 2 * 32
    assert_paid_once(server, results, "request_id")
