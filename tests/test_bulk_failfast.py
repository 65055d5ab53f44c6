"""Fail fast, retry, resume what was never sent: `qwen-edit run` as a real subprocess
against the fake provider in another process."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from qwen_edit_async.bulk._run_cli import resume_hint, retry_filter
from tests._bulk_support import (
    FakeServer,
    check_folder,
    cli_env,
    edits,
    fake_fixture,  # noqa: F401  (a pytest fixture)
    journal_rows,
    read_results,
    run_args,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    start_cli,
    wait_for,
    write_images,
    write_manifest,
)

pytestmark = pytest.mark.timeout(90)

RIGHT_KEY = "sk-the-right-key"


def statuses(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in journal_rows(out).values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


@pytest.mark.slow
def test_a_wrong_key_stops_at_once_and_a_resume_with_the_right_one_finishes(
    tmp_path: Path,
) -> None:
    """With a wrong key the run stops at the first 401: only the creates already in flight
    were sent, every job stays queued (none failed), exit 2 names the cause and the resume
    command. Resumed with the right key, every job is sent once and succeeds."""
    keyed = FakeServer("--latency", "0.05", "--api-key", RIGHT_KEY)
    try:
        write_images(tmp_path)
        manifest = write_manifest(tmp_path / "m.jsonl", edits(60))
        out = tmp_path / "out"
        wrong = run_cli(*run_args(manifest, out, keyed.url, "--concurrency", "4"))
        assert wrong.returncode == 2, wrong.stdout + wrong.stderr
        assert "stopped: AuthenticationError" in wrong.stdout
        assert "60 job(s) not sent stay queued" in wrong.stdout
        stopped = next(x for x in wrong.stdout.splitlines() if x.startswith("stopped: "))
        assert stopped.endswith("--resume"), wrong.stdout
        rows = read_results(out)
        assert len(rows) == 60 and {r["status"] for r in rows} == {"failed"}
        refused = [r for r in rows if r["error"]["type"] == "AuthenticationError"]
        assert 1 <= len(refused) <= 4
        assert all("(not sent: resume the run)" in r["error"]["message"] for r in refused)
        assert {r["error"]["type"] for r in rows} == {"AuthenticationError", "NotRun"}
        assert keyed.stats()["creates"] <= 4
        assert statuses(out) == {"queued": 60}
        right = run_cli(
            *run_args(manifest, out, keyed.url, "--resume", "--concurrency", "8"),
            env=cli_env(QWEN_EDIT_API_KEY=RIGHT_KEY),
        )
        assert right.returncode == 0, right.stdout + right.stderr
        assert "60 succeeded, 0 failed, 0 uncertain" in right.stdout
        assert keyed.stats()["jobs_created"] == 60
        check_folder(out, [f"job-{i:04d}" for i in range(60)])
    finally:
        keyed.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_an_endpoint_that_is_down_trips_the_breaker_then_a_resume_finishes(
    tmp_path: Path,
) -> None:
    """Creates that cannot connect: after a few in a row the run stops (not ~10 s per job),
    every job stays queued, exit 2 with the cause; with the endpoint up, a resume finishes."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(80))
    out = tmp_path / "out"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    down = run_cli(*run_args(manifest, out, url, "--concurrency", "8"), timeout=80)
    elapsed = time.monotonic() - started
    assert down.returncode == 2, down.stdout + down.stderr
    assert "stopped: the endpoint looks down" in down.stdout
    assert "TransportError" in down.stdout
    assert statuses(out) == {"queued": 80}
    assert elapsed < 60  # 80 jobs at ~10 s each, 8 at a time, would take ~100 s
    up = FakeServer("--latency", "0.05", "--port", str(port))
    try:
        assert up.url == url
        done = run_cli(*run_args(manifest, out, url, "--resume", "--concurrency", "16"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "80 succeeded" in done.stdout
        assert up.stats()["jobs_created"] == 80
    finally:
        up.close()


@pytest.mark.slow
def test_retry_failed_requeues_failed_jobs_and_counts_attempts(
    fake: FakeServer, tmp_path: Path
) -> None:
    """Failed jobs are final on a plain --resume; --retry-failed=TYPE requeues only jobs
    failed with that class; --retry-failed resends the rest; the journal counts attempts."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(6))
    out = tmp_path / "out"
    fake.post("/_fake/faults", {"content_filter": 1.0})  # final: never resubmitted
    failed = run_cli(*run_args(manifest, out, fake.url))
    assert failed.returncode == 1
    assert statuses(out) == {"failed": 6}
    error_type = next(iter(journal_rows(out).values()))["error_type"]
    assert error_type == "ContentFilterError"
    created = fake.stats()["jobs_created"]
    fake.post("/_fake/faults", {})
    plain = run_cli(*run_args(manifest, out, fake.url, "--resume"))
    assert plain.returncode == 1 and "0 succeeded, 6 failed" in plain.stdout
    assert fake.stats()["jobs_created"] == created
    other = run_cli(*run_args(manifest, out, fake.url, "--resume", "--retry-failed=ServerError"))
    assert other.returncode == 1 and fake.stats()["jobs_created"] == created
    chosen = run_cli(*run_args(manifest, out, fake.url, "--resume", f"--retry-failed={error_type}"))
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert "6 succeeded, 0 failed" in chosen.stdout
    assert fake.stats()["jobs_created"] == created + 6
    assert {row["attempts"] for row in journal_rows(out).values()} == {2}
    again = run_cli(*run_args(manifest, out, fake.url, "--resume", "--retry-failed"))
    assert again.returncode == 0  # succeeded jobs are final
    assert fake.stats()["jobs_created"] == created + 6


def test_retry_failed_filter_by_class_and_the_resume_command() -> None:
    """The default leaves validation failures alone; a class covers its subclasses; an
    unknown name is refused; the printed resume command drops one-off flags and values."""
    default = retry_filter("")
    assert default("ServerError") and default("DownloadError") and not default("ValidationError")
    api = retry_filter("APIError,JobFailedError")
    assert api("AuthenticationError") and api("JobFailedError") and not api("DownloadError")
    with pytest.raises(ValueError, match="unknown error type"):
        retry_filter("NoSuchError")
    hint = resume_hint(
        ["run", "m.jsonl", "--out", "o", "--resume", "--retry-failed", "ServerError", "-v"]
    )
    assert hint == "qwen-edit run m.jsonl --out o -v --resume"
    assert resume_hint(["run", "m.jsonl", "--retry-failed=X", "--out", "o"]).endswith(
        "--out o --resume"
    )


@pytest.mark.slow
def test_jobs_waiting_to_be_sent_when_killed_are_queued_not_uncertain(
    fake: FakeServer, tmp_path: Path
) -> None:
    """`kill -9` while jobs wait for --submit-rate: those were never written, so the journal
    keeps them queued; every job not queued was created at the provider; a plain resume
    (no --retry-uncertain) finishes all of them without creating any twice."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(6))
    out = tmp_path / "out"
    fake.reset(latency=3.0)
    proc = start_cli(*run_args(manifest, out, fake.url, "--submit-rate", "0.5"))
    try:
        wait_for(lambda: fake.stats()["jobs_created"] >= 1)
        wait_for(lambda: (out / "journal.sqlite3").exists())
        wait_for(lambda: statuses(out).get("submitted", 0) >= 1)
    finally:
        proc.kill()
        proc.communicate()
    counts = statuses(out)
    created = fake.stats()["jobs_created"]
    assert counts.get("uncertain", 0) == 0
    assert counts.get("submitting", 0) + counts.get("submitted", 0) == created, counts
    assert counts.get("queued", 0) == 6 - created >= 3, counts
    fake.post("/_fake/config", {"latency": 0.05})
    done = run_cli(*run_args(manifest, out, fake.url, "--resume"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 succeeded, 0 failed, 0 uncertain" in done.stdout
    assert fake.stats()["jobs_created"] == 6


@pytest.mark.slow
def test_version_verbose_and_log_file_never_show_the_key(fake: FakeServer, tmp_path: Path) -> None:
    """`qwen-edit --version`; -vv prints the library's log lines on stderr and --log-file
    writes them to a file; neither ever holds the API key."""
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("qwen-edit ")
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(3))
    verbose = run_cli(*run_args(manifest, tmp_path / "o1", fake.url, "-vv"))
    assert verbose.returncode == 0, verbose.stderr
    assert " DEBUG qwen_edit_async" in verbose.stderr
    log = tmp_path / "run.log"
    logged = run_cli(
        *run_args(
            manifest, tmp_path / "o2", fake.url, "--log-file", str(log), "--log-level", "debug"
        )
    )
    assert logged.returncode == 0, logged.stderr
    text = log.read_text()
    assert " DEBUG qwen_edit_async" in text
    assert " DEBUG " not in logged.stderr
    env_key = cli_env()["QWEN_EDIT_API_KEY"]
    for output in (text, verbose.stderr, verbose.stdout):
        assert env_key not in output


def test_log_lines_mask_keys_and_bearer_tokens() -> None:
    """A log record quoting the key or a Bearer token is written masked and escaped."""
    import logging

    from qwen_edit_async._logs import KeyMask

    mask = KeyMask(["sk-secret-123"])
    record = logging.LogRecord(
        "qwen_edit_async",
        logging.INFO,
        __file__,
        1,
        "answer %s",
        ("Bearer abc.def sk-secret-123\x1b[2J",),
        None,
    )
    assert mask.filter(record)
    assert record.getMessage() == "answer Bearer *** ***\\x1b[2J"


def test_request_sent_says_whether_the_create_went_out(tmp_path: Path) -> None:
    """`Job.request_sent` is False for a job that failed before its create was written (an
    input file that vanished) and True once it was written."""
    import anyio

    import qwen_edit_async as qe
    from qwen_edit_async.testing import FakeProvider

    write_images(tmp_path)
    doomed = tmp_path / "doomed.png"
    doomed.write_bytes((tmp_path / "in" / "a.png").read_bytes())

    async def scenario() -> tuple[qe.Job, qe.Job]:
        async with (
            FakeProvider() as fake,
            qe.QwenEditClient("vtrix", api_key="k", base_url=fake.url) as client,
        ):
            sent = client._new_job(
                qe.EditRequest(images=[tmp_path / "in" / "a.png"], prompt="x"), None
            )
            await client._run(sent, None, None)
            unsent = client._new_job(qe.EditRequest(images=[doomed], prompt="x"), None)
            doomed.unlink()
            await client._run(unsent, None, None)
            return sent, unsent

    sent, unsent = anyio.run(scenario)
    assert sent.exception() is None and sent.request_sent is True
    assert unsent.exception() is not None and unsent.request_sent is False
