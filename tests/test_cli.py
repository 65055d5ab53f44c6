"""``qwen-edit`` as a real subprocess against the fake provider in another process."""

from __future__ import annotations

import json
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._bulk_support import (
    FakeServer,
    check_folder,
    cli_env,
    edits,
    fake_fixture,  # noqa: F401  (a pytest fixture)
    journal_rows,
    qwen_edit,
    read_results,
    run_args,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    start_cli,
    wait_for,
    write_images,
    write_manifest,
)

pytestmark = pytest.mark.timeout(60)


def test_help_explains_every_option_with_examples() -> None:
    """`qwen-edit --help` lists the four commands; `qwen-edit run --help` documents every
    option and shows examples and the exit statuses."""
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ("run", "status", "demo", "serve-fake"):
        assert command in top.stdout
    helped = run_cli("run", "--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    for option in (
        "--out",
        "--provider",
        "--base-url",
        "--model",
        "--concurrency",
        "--resume",
        "--retry-uncertain",
        "--no-download",
        "--job-timeout",
        "--upload-url",
        "--progress",
        "--grace",
    ):
        assert re.search(re.escape(option) + r"\b.*?[a-z]{4}", text), option
    assert "Examples:" in helped.stdout and "qwen-edit run edits.jsonl --out" in helped.stdout
    assert "QWEN_EDIT_API_KEY" in text and "Exit status" in text


@pytest.mark.slow
def test_run_downloads_every_image_and_writes_results(fake: FakeServer, tmp_path: Path) -> None:
    """A task-provider run: exit 0, every job's n images saved as valid PNGs under
    images/<id>/, results.jsonl in manifest order with its documented fields, a summary on
    stdout, and plain progress lines on stderr (not a terminal)."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(20))
    out = tmp_path / "out"
    args = run_args(manifest, out, fake)
    args[args.index("none")] = "auto"
    done = run_cli(*args, "--progress-interval", "0.2", "--concurrency", "8")
    assert done.returncode == 0, done.stderr
    results = check_folder(out, [f"job-{i:04d}" for i in range(20)])
    assert list(results) == [f"job-{i:04d}" for i in range(20)]
    assert {r["status"] for r in results.values()} == {"succeeded"}
    assert "20 succeeded, 0 failed, 0 uncertain (of 20 jobs)" in done.stdout
    assert "images saved: 30" in done.stdout and "results.jsonl" in done.stdout
    assert re.search(
        r"\d+/20 done \(ok \d+, failed 0, uncertain 0\), \d+ in flight, "
        r"[\d.]+ jobs/s, ETA",
        done.stderr,
    )
    assert fake.stats()["jobs_created"] == 20


@pytest.mark.slow
def test_existing_journal_without_resume_is_refused(fake: FakeServer, tmp_path: Path) -> None:
    """A second run into the same folder without --resume exits 2, says to use --resume,
    and creates nothing; --resume without --provider continues with the journal's."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(3))
    assert run_cli(*run_args(manifest, tmp_path / "out", fake)).returncode == 0
    again = run_cli(*run_args(manifest, tmp_path / "out", fake))
    assert again.returncode == 2
    assert "--resume" in again.stderr
    bare = run_cli(  # the journal's provider; the base URL only from the command line
        "run", manifest, "--out", tmp_path / "out", "--resume", "--base-url", fake.url
    )
    assert bare.returncode == 0, bare.stderr
    assert "3 succeeded" in bare.stdout
    assert fake.stats()["jobs_created"] == 3


@pytest.mark.slow
def test_resume_attaches_to_submitted_tasks_instead_of_resubmitting(
    fake: FakeServer, tmp_path: Path
) -> None:
    """Killed (kill -9) while every task was submitted and running: --resume polls those
    tasks (attach) and saves their images; the provider created no new job."""
    fake.reset(latency=1.5)
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(6))
    out = tmp_path / "out"
    proc = start_cli(*run_args(manifest, out, fake))

    def all_submitted() -> bool:
        try:
            rows = journal_rows(out)
        except sqlite3.Error:
            return False
        return len(rows) == 6 and all(r["status"] == "submitted" for r in rows.values())

    wait_for(all_submitted)
    proc.kill()
    proc.wait()
    assert fake.stats()["jobs_created"] == 6
    resumed = run_cli(*run_args(manifest, out, fake), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    stats = fake.stats()
    assert stats["jobs_created"] == 6 and stats["polls"] >= 6
    results = check_folder(out, [f"job-{i:04d}" for i in range(6)])
    assert {r["status"] for r in results.values()} == {"succeeded"}


@pytest.mark.slow
def test_uncertain_jobs_are_resubmitted_only_with_retry_uncertain(
    fake: FakeServer, tmp_path: Path
) -> None:
    """A create whose answer is lost (the fake accepts the job, then drops the connection) is
    recorded uncertain (exit 1); --resume does not resubmit it; --resume --retry-uncertain
    does, once, and the run then succeeds."""
    fake.post("/_fake/script", ["drop_after_accept"])
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(4))
    out = tmp_path / "out"
    first = run_cli(*run_args(manifest, out, fake), "--concurrency", "1")
    assert first.returncode == 1
    results = read_results(out)
    uncertain = [r for r in results if r["status"] == "uncertain"]
    assert len(uncertain) == 1 and uncertain[0]["error"]["type"] == "SubmitUncertainError"
    assert "--retry-uncertain" in first.stdout
    assert fake.stats()["jobs_created"] == 4

    again = run_cli(*run_args(manifest, out, fake), "--resume")
    assert again.returncode == 1
    assert fake.stats()["jobs_created"] == 4
    assert [r["status"] for r in read_results(out)].count("uncertain") == 1

    retried = run_cli(*run_args(manifest, out, fake), "--resume", "--retry-uncertain")
    assert retried.returncode == 0, retried.stderr
    assert fake.stats()["jobs_created"] == 5
    check_folder(out, [f"job-{i:04d}" for i in range(4)])
    assert journal_rows(out)[uncertain[0]["id"]]["attempts"] == 2


@pytest.mark.slow  # over 2.5 s on 2 cores (pyproject's rule for the marker)
def test_bad_lines_and_duplicate_ids_fail_with_line_numbers(
    fake: FakeServer, tmp_path: Path
) -> None:
    """Bad JSON, an unknown field, a duplicate id and a missing image are reported on stderr
    with their line numbers and recorded as failed in results.jsonl and by `qwen-edit
    status`; the valid lines run (exit 1: not everything succeeded)."""
    write_images(tmp_path)
    good = edits(3)
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [
            good[0],
            good[1],
            "{oops",
            {**good[2], "colour": "red"},
            good[2],
            {**good[0], "prompt": "same id again"},
            {**good[1], "id": "x", "images": ["in/no.png"]},
        ],
    )
    out = tmp_path / "out"
    done = run_cli(*run_args(manifest, out, fake))
    assert done.returncode == 1
    for line in (3, 4, 6, 7):
        assert f"manifest line {line}: " in done.stderr, done.stderr
    assert "duplicate id 'job-0000' (line 1 has it)" in done.stderr
    results = read_results(out)
    assert [(r["id"], r["status"]) for r in results] == [
        ("job-0000", "succeeded"),
        ("job-0001", "succeeded"),
        ("line 3", "failed"),  # not JSON: named by its line, never null
        ("job-0002", "failed"),
        ("job-0002", "succeeded"),
        ("job-0000", "failed"),
        ("x", "failed"),
    ]
    assert [r["error"]["type"] for r in results if r["error"]] == [
        "ManifestError",
        "ValidationError",
        "ManifestError",
        "ValidationError",
    ]
    status = subprocess.run(qwen_edit("status", out), capture_output=True, text=True, env=cli_env())
    assert status.returncode == 0
    assert "succeeded 3, failed 0, uncertain 0, refused lines 4" in status.stdout
    assert "job-0000\tManifestError\tline 6: duplicate id" in status.stdout


@pytest.mark.slow
def test_expired_urls_are_failed_with_a_download_error_on_resume(
    fake: FakeServer, tmp_path: Path
) -> None:
    """A run that stopped between a result and its download (the journal holds the URLs,
    no files) resumed after the URLs expired: the job fails with a DownloadError saying so."""
    fake.reset(latency=0.05, url_lifetime=1.0)
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(2))
    out = tmp_path / "out"
    assert run_cli(*run_args(manifest, out, fake)).returncode == 0
    conn = sqlite3.connect(out / "journal.sqlite3")
    with conn:
        conn.execute("UPDATE jobs SET status='downloading', files=NULL")
    conn.close()
    for folder in (out / "images").iterdir():
        for image in folder.iterdir():
            image.unlink()
    # Past every Expires the fake gave (at most 2 s ahead), on the fake's clock only: later
    # tests of this module sign URLs for an hour, far beyond these 5 s.
    assert fake.post("/_fake/clock", {"advance": 5})["skipped"] >= 5
    resumed = run_cli(*run_args(manifest, out, fake), "--resume")
    assert resumed.returncode == 1
    for row in read_results(out):
        assert row["status"] == "failed" and row["error"]["type"] == "DownloadError"
        assert "expired" in row["error"]["message"]
    assert fake.stats()["jobs_created"] == 2


@pytest.mark.slow
def test_ctrl_c_records_where_everything_stands_and_resume_finishes(
    fake: FakeServer, tmp_path: Path
) -> None:
    """SIGINT mid-run: exit 130 within seconds, no job left 'submitting', and a resume
    command printed which, run as printed, finishes without creating any job twice."""
    fake.reset(latency=1.5)
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(24))
    out = tmp_path / "out"
    proc = start_cli(*run_args(manifest, out, fake), "--concurrency", "8")
    wait_for(lambda: fake.stats()["jobs_created"] >= 8)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 10
    hint = re.search(r"^interrupted; to resume: (qwen-edit run .* --resume)$", stdout, re.M)
    assert hint, stdout
    assert all(r["status"] != "submitting" for r in journal_rows(out).values())
    fake.post("/_fake/config", {"latency": 0.05})
    resumed = run_cli(*shlex.split(hint.group(1))[1:])  # the printed command, as is
    results = check_folder(out, [f"job-{i:04d}" for i in range(24)])
    uncertain = [r for r in results.values() if r["status"] == "uncertain"]
    assert resumed.returncode == (1 if uncertain else 0)
    assert fake.stats()["jobs_created"] <= 24


@pytest.mark.slow
def test_timed_out_jobs_keep_their_task_and_are_attached_again_on_resume(
    fake: FakeServer, tmp_path: Path
) -> None:
    """A task that never ends fails with JobTimeoutError after --job-timeout, keeping its
    task id; --resume attaches to it again rather than resubmitting (it times out again)."""
    fake.post("/_fake/script", ["stuck"])
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(2))
    out = tmp_path / "out"
    args = [*run_args(manifest, out, fake), "--job-timeout", "1", "--concurrency", "1"]
    args[args.index("none")] = "bar"  # the rich bar, even into a pipe
    first = run_cli(*args)
    assert first.returncode == 1
    failed = [r for r in read_results(out) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["type"] == "JobTimeoutError"
    assert failed[0]["task_id"] in {job["id"] for job in fake.stats(jobs=True)["jobs"]}
    again = run_cli(*args, "--resume")
    assert again.returncode == 1
    assert fake.stats()["jobs_created"] == 2
    assert [r for r in read_results(out) if r["status"] == "failed"] == failed


def test_evolink_with_local_images_uploads_through_the_fake(
    fake: FakeServer, tmp_path: Path
) -> None:
    """A URL-only provider with local images and the fake's upload route as --upload-url
    uploads each distinct image once and runs."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(4, n_cycle=(1,)))
    args = run_args(manifest, tmp_path / "out", fake, provider="evolink")
    done = run_cli(*args, "--upload-url", f"{fake.url}/_fake/upload")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fake.stats()["uploads"] == 2


def test_a_fake_base_url_is_not_probed_for_an_upload_route(
    fake: FakeServer, tmp_path: Path
) -> None:
    """The run never guesses an upload endpoint: a URL-only provider with local images and
    no --upload-url is refused even when --base-url is the fake on this machine; nothing is
    uploaded or created."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(2))
    done = run_cli(*run_args(manifest, tmp_path / "out", fake, provider="evolink"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "takes only public URLs" in done.stderr and "--upload-url" in done.stderr
    stats = fake.stats()
    assert stats["uploads"] == 0 and stats["creates"] == 0


def test_url_only_provider_without_uploader_fails_fast(tmp_path: Path) -> None:
    """Evolink, local images, no --upload-url and no fake: exit 2 at once with the
    ConfigurationError's advice, before any journal is written."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(2))
    done = run_cli(
        "run",
        manifest,
        "--out",
        tmp_path / "out",
        "--provider",
        "evolink",
        "--base-url",
        "http://127.0.0.1:9",
    )
    assert done.returncode == 2
    assert "takes only public URLs" in done.stderr and "--upload-url" in done.stderr
    assert not (tmp_path / "out" / "journal.sqlite3").exists()


def test_missing_api_key_fails_fast(tmp_path: Path) -> None:
    """No key in the environment: exit 2 naming the variables to set; nothing written."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(1))
    env = cli_env()
    del env["QWEN_EDIT_API_KEY"]
    done = run_cli("run", manifest, "--out", tmp_path / "out", "--provider", "vtrix", env=env)
    assert done.returncode == 2
    assert "QWEN_EDIT_API_KEY" in done.stderr and "VTRIX_API_KEY" in done.stderr
    assert not (tmp_path / "out" / "journal.sqlite3").exists()


def test_no_download_keeps_urls_in_the_journal(fake: FakeServer, tmp_path: Path) -> None:
    """--no-download: jobs succeed with no files, their URLs are in the journal."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(3))
    out = tmp_path / "out"
    assert run_cli(*run_args(manifest, out, fake), "--no-download").returncode == 0
    assert all(r["files"] == [] for r in read_results(out))
    assert all(json.loads(r["urls"]) for r in journal_rows(out).values())
    assert not (out / "images").exists() and fake.stats()["downloads"] == 0


def test_status_without_a_journal_exits_2(tmp_path: Path) -> None:
    """`qwen-edit status` on a folder with no run says so and exits 2."""
    done = run_cli("status", tmp_path)
    assert done.returncode == 2 and "no run journal" in done.stderr


@pytest.mark.slow
def test_demo_runs_anywhere_without_key_or_network(tmp_path: Path) -> None:
    """`qwen-edit demo` in an empty working directory, with no API key: exit 0, its outputs
    present; run again, it uses a new subfolder."""
    env = cli_env()
    del env["QWEN_EDIT_API_KEY"]
    for number, jobs in ((1, 12), (2, 3)):
        done = run_cli("demo", "--jobs", str(jobs), cwd=tmp_path, env=env, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        out = tmp_path / "qwen-edit-demo" / f"run-{number}" / "out"
        results = check_folder(out, [f"demo-{i:03d}" for i in range(1, jobs + 1)])
        assert {r["status"] for r in results.values()} == {"succeeded"}
        assert str(out / "images") in done.stdout


def test_serve_fake_delegates_to_the_fake_provider() -> None:
    """`qwen-edit serve-fake --port 0` prints its URL, answers, and stops on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen_edit_async", "serve-fake", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:")
        url = line.split("serving on ", 1)[1].strip()
        import urllib.request

        with urllib.request.urlopen(url + "/_fake/stats?jobs=0", timeout=5) as response:
            assert json.loads(response.read())["jobs_created"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
