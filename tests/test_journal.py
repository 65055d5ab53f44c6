"""The SQLite journal: settings, crash atomicity, what a resumed run does with each job,
results.jsonl, and that group commit keeps it well ahead of 500 jobs/s."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qwen_edit_async import EditRequest, JobTimeoutError, SubmitUncertainError
from qwen_edit_async.bulk._journal import Action, Journal, ProviderMismatch
from qwen_edit_async.bulk._manifest import Entry, ManifestError
from tests._bulk_support import cli_env

META = {"provider": "vtrix", "base_url": "http://127.0.0.1:1", "model": "m"}
REQUEST = EditRequest(images=["https://example.com/a.png"], prompt="x", n=2)


def entry(line: int, job_id: str) -> Entry:
    return Entry(line, job_id, REQUEST)


async def opened(path: Path) -> Journal:
    journal = Journal(path)
    await asyncio.to_thread(journal.start)
    return journal


async def test_journal_uses_wal_with_full_sync(tmp_path: Path) -> None:
    """The file is in WAL mode, and the writer commits with synchronous=FULL (2), so a power
    loss cannot roll back a 'submitting' row."""
    journal = await opened(tmp_path / "j.sqlite3")
    try:
        mode = await journal.call(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await journal.call(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        journal.close()
    assert (mode, sync) == ("wal", 2)


async def test_resume_decisions_follow_the_journal(tmp_path: Path) -> None:
    """What a resumed run does with each job: finished ones skipped, submitted ones attached
    (not resubmitted), results not saved downloaded, timed-out tasks attached again, jobs
    caught mid-submission marked uncertain and resubmitted only when asked."""
    journal = await opened(tmp_path / "j.sqlite3")
    try:
        run, swept, _ = await journal.begin_run(META)
        ids = ["new", "sent", "result", "done", "timeout", "caught", "lost"]
        first = await journal.admit(
            [entry(i + 1, x) for i, x in enumerate(ids)], run, retry_uncertain=False
        )
        assert [a.action for a in first] == [Action.FRESH] * len(ids)
        for job_id in ids[1:]:
            await journal.mark_submitting(job_id)
        await journal.mark_submitted("sent", "task-1", None)
        await journal.mark_downloading("result", task_id="task-2", request_id="r", urls=["u1"])
        await journal.succeed("done", task_id="task-3", request_id=None, urls=["u"], files=["f"])
        await journal.end("timeout", "failed", JobTimeoutError("late"), task_id="task-4")
        await journal.end("lost", "uncertain", SubmitUncertainError("lost"))

        run2, swept, old = await journal.begin_run(META)
        assert (run2, swept, old["provider"]) == (2, 1, "vtrix")  # "caught" was submitting
        second = await journal.admit(
            [entry(i + 1, x) for i, x in enumerate(ids)], run2, retry_uncertain=False
        )
        got = {x: (a.action, a.status, a.task_id) for x, a in zip(ids, second, strict=True)}
        assert got == {
            "new": (Action.FRESH, "queued", None),
            "sent": (Action.ATTACH, "submitted", "task-1"),
            "result": (Action.DOWNLOAD, "downloading", "task-2"),
            "done": (Action.SKIP, "succeeded", "task-3"),
            "timeout": (Action.ATTACH, "failed", "task-4"),
            "caught": (Action.SKIP, "uncertain", None),
            "lost": (Action.SKIP, "uncertain", None),
        }
        assert second[2].urls == ["u1"]

        run3, _, _ = await journal.begin_run(META)
        third = await journal.admit(
            [entry(6, "caught"), entry(7, "lost")], run3, retry_uncertain=True
        )
        assert [a.action for a in third] == [Action.FRESH, Action.FRESH]
    finally:
        journal.close()
    row = (
        sqlite3.connect(tmp_path / "j.sqlite3")
        .execute("SELECT error_type, attempts FROM jobs WHERE id='sent'")
        .fetchone()
    )
    assert row == (None, 1)


async def test_duplicate_ids_and_bad_lines_become_rejects(tmp_path: Path) -> None:
    """A second line with an id already read in this run is refused (duplicate id), and so is
    an unreadable line; the next run reads the same manifest the same way, not as duplicates
    of its previous pass."""
    journal = await opened(tmp_path / "j.sqlite3")
    try:
        lines = [
            entry(1, "a"),
            entry(2, "b"),
            entry(3, "a"),
            Entry(4, None, error=ManifestError("line 4: not valid JSON")),
        ]
        for expected_run in (1, 2):
            run, _, _ = await journal.begin_run(META)
            assert run == expected_run
            admissions = await journal.admit(lines, run, retry_uncertain=False)
            assert [a.action for a in admissions] == [
                Action.FRESH,
                Action.FRESH,
                Action.SKIP,
                Action.SKIP,
            ]
            assert "duplicate id 'a' (line 1 has it)" in (admissions[2].note or "")
            assert "line 4" in (admissions[3].note or "")
        await journal.export_results(tmp_path, 2)
    finally:
        journal.close()
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["error"] and r["error"]["type"]) for r in rows] == [
        ("a", "NotRun"),
        ("b", "NotRun"),  # admitted, never submitted
        ("a", "ManifestError"),
        ("line 4", "ManifestError"),  # never "id": null
    ]


async def test_results_jsonl_contract(tmp_path: Path) -> None:
    """results.jsonl has its documented fields plus urls and usage in manifest order, error as
    {type, message} or null, files relative to the folder, and is replaced atomically (no
    temporary left)."""
    journal = await opened(tmp_path / "j.sqlite3")
    try:
        run, _, _ = await journal.begin_run(META)
        await journal.admit([entry(1, "ok"), entry(2, "bad")], run, retry_uncertain=False)
        await journal.succeed(
            "ok",
            task_id="t1",
            request_id="r1",
            urls=["u"],
            files=["images/ok/0.png"],
            usage={"image_count": 1},
        )
        await journal.end("bad", "failed", JobTimeoutError("too slow", task_id="t2"), task_id="t2")
        path = await journal.export_results(tmp_path, run)
    finally:
        journal.close()
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows == [
        {
            "id": "ok",
            "status": "succeeded",
            "task_id": "t1",
            "request_id": "r1",
            "files": ["images/ok/0.png"],
            "error": None,
            "urls": ["u"],
            "usage": {"image_count": 1},
        },
        {
            "id": "bad",
            "status": "failed",
            "task_id": "t2",
            "request_id": None,
            "files": [],
            "error": {"type": "JobTimeoutError", "message": "too slow (task_id=t2)"},
            "urls": [],
            "usage": None,
        },
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


async def test_another_provider_cannot_resume_and_changes_nothing(tmp_path: Path) -> None:
    """Resuming with another provider is refused before anything is written (task ids of
    one provider mean nothing to another)."""
    journal = await opened(tmp_path / "j.sqlite3")
    try:
        await journal.begin_run(META)
        with pytest.raises(ProviderMismatch):
            await journal.begin_run({**META, "provider": "evolink"})
        meta = dict(await journal.call(lambda c: c.execute("SELECT * FROM meta").fetchall()))
    finally:
        journal.close()
    assert (meta["provider"], meta["runs"]) == ("vtrix", "1")


async def test_group_commit_keeps_the_journal_far_from_the_bottleneck(tmp_path: Path) -> None:
    """3,000 jobs through every step (admitted in batches, then submitting, submitted,
    downloading, succeeded: 4 commits each) by 256 concurrent jobs: well over 500 jobs/s
    with fsync on every commit, because concurrent steps share one commit."""
    journal = await opened(tmp_path / "j.sqlite3")
    jobs = 3_000
    try:
        run, _, _ = await journal.begin_run(META)
        started = time.perf_counter()
        for first in range(0, jobs, 256):
            batch = [entry(i + 1, f"job-{i}") for i in range(first, min(jobs, first + 256))]
            await journal.admit(batch, run, retry_uncertain=False)
        queue = iter(range(jobs))

        async def worker() -> None:
            for i in queue:
                job_id = f"job-{i}"
                await journal.mark_submitting(job_id)
                await journal.mark_submitted(job_id, f"task-{i}", None)
                await journal.mark_downloading(
                    job_id, task_id=None, request_id=None, urls=["u0", "u1"]
                )
                await journal.succeed(
                    job_id,
                    task_id=None,
                    request_id=None,
                    urls=["u0", "u1"],
                    files=[f"images/{job_id}/0.png", f"images/{job_id}/1.png"],
                )

        await asyncio.gather(*(worker() for _ in range(256)))
        rate = jobs / (time.perf_counter() - started)
        counts = await journal.counts()
    finally:
        journal.close()
    print(
        f"journal: {rate:.0f} jobs/s, {journal.operations} operations in {journal.commits} commits"
    )
    assert counts["succeeded"] == jobs and counts["images"] == 2 * jobs
    assert journal.commits < journal.operations / 4, "operations were not grouped"
    assert rate > 500


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from qwen_edit_async import EditRequest
    from qwen_edit_async.bulk._journal import Journal
    from qwen_edit_async.bulk._manifest import Entry

    REQUEST = EditRequest(images=["https://example.com/a.png"], prompt="x")

    async def main():
        journal = Journal(Path(sys.argv[1]))
        journal.start()
        run, _, _ = await journal.begin_run({"provider": "vtrix"})
        print("ready", flush=True)
        batch = 0
        async def job(job_id):
            await journal.mark_submitting(job_id)
            await journal.mark_submitted(job_id, "task-" + job_id, None)
            await journal.mark_downloading(job_id, task_id=None, request_id=None, urls=["u"])
            await journal.succeed(job_id, task_id=None, request_id=None, urls=["u"],
                                  files=["images/" + job_id + "/0.png"])
        while True:
            ids = [f"{run}-{batch}-{i}" for i in range(50)]
            await journal.admit([Entry(i, x, REQUEST) for i, x in enumerate(ids)], run,
                                retry_uncertain=False)
            await asyncio.gather(*(job(x) for x in ids))
            batch += 1

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_kill_9_at_random_instants_leaves_every_write_whole(tmp_path: Path) -> None:
    """A writer killed with SIGKILL at 5 random instants: the file is intact, every batch of
    admitted lines is there whole or not at all (50 rows per admit), and every row's fields
    match its status: each write is one transaction."""
    path = tmp_path / "j.sqlite3"
    rng = random.Random(3)
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)],
            env=cli_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            total = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
            assert total % 50 == 0 and total > 0
            for job_id, status, task_id, urls, files in conn.execute(
                "SELECT id, status, task_id, urls, files FROM jobs"
            ):
                if status in ("submitted", "downloading", "succeeded"):
                    assert task_id == f"task-{job_id}"
                if status in ("downloading", "succeeded"):
                    assert urls == '["u"]'
                assert (files is not None) == (status == "succeeded")
                assert status != "queued" or task_id is None
        finally:
            conn.close()


async def test_a_task_lost_to_transport_errors_is_attached_again(tmp_path: Path) -> None:
    """A job accepted as a task whose status requests then failed (TransportError) keeps its
    task id; a resume attaches to the task again instead of resubmitting or giving up."""
    from qwen_edit_async._errors import TransportError

    journal = await opened(tmp_path / "j.sqlite3")
    try:
        run, _, _ = await journal.begin_run(META)
        await journal.admit([entry(1, "a")], run, retry_uncertain=False)
        await journal.mark_submitting("a")
        await journal.mark_submitted("a", "task-1", None)
        await journal.end("a", "failed", TransportError("status: refused"), task_id="task-1")
        run, _, _ = await journal.begin_run(META)
        (admission,) = await journal.admit([entry(1, "a")], run, retry_uncertain=False)
    finally:
        journal.close()
    assert admission.action is Action.ATTACH and admission.task_id == "task-1"
