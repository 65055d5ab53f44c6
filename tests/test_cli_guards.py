"""``qwen-edit`` guards, as a real subprocess against the fake provider in another process:
one writer per folder, the key only where the user says, manifests as people write them,
control characters escaped, disk and journal errors as one line."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests._bulk_support import (
    FakeServer,
    check_folder,
    cli_env,
    edits,
    fake_fixture,  # noqa: F401  (a pytest fixture)
    qwen_edit,
    run_args,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    start_cli,
    wait_for,
    write_images,
    write_manifest,
)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_exits_2_and_sends_nothing(
    fake: FakeServer, tmp_path: Path
) -> None:
    """While a run holds DIR, a second one (here `--resume`) exits 2 at once naming the
    holder's pid and start time, and creates no job; the first finishes every job once."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(12))
    out = tmp_path / "out"
    fake.reset(latency=1.0)
    first = start_cli(*run_args(manifest, out, fake, "--concurrency", "4"))
    try:
        wait_for(lambda: fake.stats()["jobs_created"] >= 1)
        second = run_cli(*run_args(manifest, out, fake, "--resume"), timeout=20)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid} since " in second.stderr and "UTC" in second.stderr
        assert "in use by another qwen-edit run" in second.stderr
        assert second.stdout == ""
        stdout, stderr = first.communicate(timeout=40)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "12 succeeded" in stdout
    assert fake.stats()["jobs_created"] == 12
    check_folder(out, [f"job-{i:04d}" for i in range(12)])


@pytest.mark.slow
def test_the_lock_is_released_when_the_holder_is_killed(fake: FakeServer, tmp_path: Path) -> None:
    """`kill -9` of the holder frees DIR: a resume right after it runs (no stale lock)."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(6))
    out = tmp_path / "out"
    fake.reset(latency=2.0)
    first = start_cli(*run_args(manifest, out, fake))
    wait_for(lambda: fake.stats()["jobs_created"] >= 1)
    first.kill()
    first.communicate()
    fake.post("/_fake/config", {"latency": 0.05})  # keep its tasks: they are re-attached
    again = run_cli(*run_args(manifest, out, fake, "--resume", "--retry-uncertain"))
    assert again.returncode == 0, again.stderr


@pytest.mark.slow  # three runs of the CLI
def test_resume_never_takes_the_base_url_from_the_journal(fake: FakeServer, tmp_path: Path) -> None:
    """A bare `--resume` of a run on another host is refused naming both URLs and sends
    nothing; given that host with --base-url it continues (provider from the journal)."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(3))
    out = tmp_path / "out"
    assert run_cli(*run_args(manifest, out, fake)).returncode == 0
    bare = run_cli("run", manifest, "--out", out, "--resume", "--progress", "none")
    assert bare.returncode == 2
    assert fake.url in bare.stderr and "https://" in bare.stderr, bare.stderr
    assert f"--base-url {fake.url}" in bare.stderr
    named = run_cli(
        "run", manifest, "--out", out, "--resume", "--base-url", fake.url, "--progress", "none"
    )
    assert named.returncode == 0, named.stderr
    assert "3 succeeded" in named.stdout
    assert fake.stats()["jobs_created"] == 3


def test_a_utf8_bom_is_accepted(fake: FakeServer, tmp_path: Path) -> None:
    """A manifest saved with a UTF-8 BOM runs; line 1 is not refused."""
    write_images(tmp_path)
    manifest = tmp_path / "m.jsonl"
    text = "\n".join(json.dumps(line) for line in edits(2))
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode())
    done = run_cli(*run_args(manifest, tmp_path / "out", fake))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "2 succeeded, 0 failed" in done.stdout


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (json.dumps(edits(3), indent=2), "is a JSON array"),
        ("\ufeff" + json.dumps(edits(3)), "is a JSON array"),
        ('id,prompt,images\ncat-1,"a hat",in/a.png\ncat-2,"a cap",in/a.png\n', "looks like CSV"),
    ],
)
def test_a_json_array_or_csv_gets_one_error_saying_what_a_manifest_is(
    fake: FakeServer, tmp_path: Path, content: str, kind: str
) -> None:
    """One error line (not one per line), exit 2, nothing sent, no DIR created."""
    write_images(tmp_path)
    manifest = tmp_path / "m.txt"
    manifest.write_text(content, encoding="utf-8")
    done = run_cli(*run_args(manifest, tmp_path / "out", fake))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert kind in lines[0] and "a manifest is JSONL: one JSON object per line" in lines[0]
    assert fake.stats()["jobs_created"] == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # over 2.5 s on 2 cores (pyproject's rule for the marker)
def test_control_characters_from_the_provider_are_escaped(fake: FakeServer, tmp_path: Path) -> None:
    """A task error carrying terminal escapes (retitle, clear screen) is printed escaped in
    the run summary and in `status`, never as raw control characters."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(2))
    out = tmp_path / "out"
    hostile = "\x1b]0;owned\x07\x1b[2J\u009b31m"
    fake.post("/_fake/faults", {"fail_task": 1.0, "fail_code": hostile})
    done = run_cli(*run_args(manifest, out, fake))
    assert done.returncode == 1
    status = run_cli("status", out)
    assert status.returncode == 0
    for text in (done.stdout, done.stderr, status.stdout):
        assert not any(ord(ch) < 32 and ch not in "\n\t" for ch in text), repr(text)
        assert "\u009b" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J\\u009b31m" in done.stdout
    assert "\\x1b]0;owned\\x07" in status.stdout


def test_status_on_a_damaged_journal_says_so_in_one_line(tmp_path: Path) -> None:
    """A journal that is not SQLite: exit 2 and one line, no traceback."""
    (tmp_path / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    done = run_cli("status", tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged or not a run journal" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_full_disk_ends_the_run_with_exit_2_and_the_resume_command(
    fake: FakeServer, tmp_path: Path
) -> None:
    """Writes past a size limit fail (as on a full disk): exit 2, the cause in one line
    with the resume command, no traceback; a resume with room finishes every job."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(8))
    out = tmp_path / "out"
    limit = 48 * 1024  # below an output image and the journal's first pages: disk "full"

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(
        qwen_edit(*run_args(manifest, out, fake)),
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        preexec_fn=small_disk,
    )
    assert full.returncode == 2, full.stdout + full.stderr
    assert "Traceback" not in full.stderr and "ExceptionGroup" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert "the run stopped: OSError" in last or "the run stopped:" in last, full.stderr
    assert "File too large" in last or "disk" in last, last
    assert last.endswith("--resume"), last
    again = run_cli(*run_args(manifest, out, fake, "--resume"))
    assert again.returncode == 0, again.stderr
    check_folder(out, [f"job-{i:04d}" for i in range(8)])
    assert os.path.getsize(out / "results.jsonl") > 0


def test_a_journal_that_cannot_be_written_ends_the_run_in_one_line(
    fake: FakeServer, tmp_path: Path
) -> None:
    """A journal error mid-run (the file replaced by a non-database): exit 2, one line."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite3").write_bytes(b"garbage" * 1000)
    done = run_cli(*run_args(manifest, out, fake, "--resume"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "DatabaseError" in done.stderr and "--resume" in done.stderr
    assert fake.stats()["jobs_created"] == 0
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(out / "journal.sqlite3").execute("SELECT * FROM jobs").fetchall()
