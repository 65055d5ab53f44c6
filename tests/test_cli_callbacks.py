"""``qwen-edit run --callback-url URL --callback-listen HOST:PORT`` as a real subprocess,
against the fake provider in another process that POSTs each task's end back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port

from qwen_edit_async import cli
from tests._bulk_support import (
    FakeServer,
    edits,
    read_results,
    run_cli,
    write_images,
    write_manifest,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer("--latency", "0.05", "--no-estimated-time")
    yield server
    server.close()


def test_run_with_callbacks_ends_jobs_by_callback(fake: FakeServer, tmp_path: Path) -> None:
    """Every Evolink task calls back the run's receiver: all jobs succeed, no status request
    is needed (the safety poll would come seconds later)."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(6, n_cycle=(1,)))
    port = unused_port()
    done = run_cli(
        "run",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--provider",
        "evolink",
        "--base-url",
        fake.url,
        "--upload-url",
        f"{fake.url}/_fake/upload",
        "--progress",
        "none",
        "--callback-url",
        f"http://127.0.0.1:{port}/qe",
        "--callback-listen",
        f"127.0.0.1:{port}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in read_results(tmp_path / "out")] == ["succeeded"] * 6
    stats = fake.stats(jobs=True)
    assert stats["callbacks_delivered"] == 6 and stats["polls"] == 0
    assert all(
        job["callback_url"].startswith(f"http://127.0.0.1:{port}/qe/") for job in stats["jobs"]
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--callback-listen", "127.0.0.1:8080"], "needs --callback-url"),
        (["--callback-url", "https://x.example/qe", "--callback-listen", "nope"], "HOST:PORT"),
        (["--callback-url", "http://example.com/qe"], "public_url"),
    ],
)
def test_callback_flags_are_checked(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    """Bad callback flags exit 2 with a message saying what is wrong, before any job."""
    monkeypatch.setenv("QWEN_EDIT_API_KEY", "sk-test")
    manifest = write_manifest(tmp_path / "m.jsonl", edits(1, n_cycle=(1,)))
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--provider", "evolink"]
    try:
        code = cli.main([*args, *flags])
    except SystemExit as exc:  # argparse refuses the value itself
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err
