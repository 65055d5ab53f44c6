"""Helpers for the CLI and bulk tests: the fake provider in another process, the CLI as a
real subprocess, manifests, and checks of a run's folder against its journal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests._imagegen import make_image

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-cli-test"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: the repo importable, a key, no provider keys."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["QWEN_EDIT_API_KEY"] = API_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class FakeServer:
    """``python -m qwen_edit_async.testing --port 0`` in another process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qwen_edit_async.testing", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("serving on "), line
        self.url = line.split("serving on ", 1)[1].strip()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self, jobs: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/_fake/stats?jobs={int(jobs)}")
        return result

    def reset(self, **config: Any) -> None:
        """Forget jobs and counters; apply ``config`` (latency, url_lifetime...); no faults."""
        self.post("/_fake/reset", {})
        self.post("/_fake/faults", {})
        self.post("/_fake/config", {"latency": 0.05, "url_lifetime": 3600.0, **config})

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: The fake's latency for the CLI tests: short, but long enough to overlap jobs.
LATENCY = 0.05


@pytest.fixture(scope="module", name="server")
def server_fixture() -> Iterator[FakeServer]:
    """``server``: one fake provider process shared by a test module's tests.

    A module takes it (and ``fake``) with
    ``from tests._bulk_support import fake_fixture, server_fixture`` (``# noqa: F401``).
    """
    server = FakeServer("--latency", str(LATENCY))
    yield server
    server.close()


@pytest.fixture(name="fake")
def fake_fixture(server: FakeServer) -> FakeServer:
    """``fake``: the module's fake, reset for each test (no jobs, no faults, its latency).

    It stands in for the suite-wide async ``fake`` in the modules that import it.
    """
    server.reset(latency=LATENCY)
    return server


def run_args(
    manifest: Path, out: Path, fake: FakeServer | str, *extra: str, provider: str = "vtrix"
) -> list[str]:
    """``qwen-edit run`` of ``manifest`` into ``out`` against the fake (or a URL), no progress
    output, then ``extra``."""
    url = fake if isinstance(fake, str) else fake.url
    return [
        "run", str(manifest), "--out", str(out), "--provider", provider,
        "--base-url", url, "--progress", "none", *extra,
    ]  # fmt: skip


def qwen_edit(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "qwen_edit_async", *map(str, args)]


def run_cli(
    *args: str | Path,
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``qwen-edit ARGS`` to its end; stdout and stderr captured."""
    return subprocess.run(
        qwen_edit(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env or cli_env(),
    )


def start_cli(*args: str | Path) -> subprocess.Popen[str]:
    """Start ``qwen-edit ARGS`` (output to pipes)."""
    return subprocess.Popen(
        qwen_edit(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    )


def write_images(folder: Path) -> list[str]:
    """Two real PNG inputs in ``folder/in``; their paths relative to ``folder``."""
    (folder / "in").mkdir(parents=True, exist_ok=True)
    (folder / "in" / "a.png").write_bytes(make_image("png", 512, 512))
    (folder / "in" / "b.png").write_bytes(make_image("png", 640, 480))
    return ["in/a.png", "in/b.png"]


def write_manifest(path: Path, lines: Iterable[dict[str, Any] | str]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def edits(
    count: int, *, prefix: str = "job", n_cycle: Sequence[int] = (1, 2)
) -> list[dict[str, Any]]:
    """``count`` edits of the images written by :func:`write_images`, small outputs."""
    return [
        {
            "id": f"{prefix}-{i:04d}",
            "images": ["in/a.png"] if i % 3 else ["in/a.png", "in/b.png"],
            "prompt": f"edit number {i}",
            "n": n_cycle[i % len(n_cycle)],
            "size": "512*512",
        }
        for i in range(count)
    ]


def read_results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def journal_rows(out: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(out / "journal.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return {row["id"]: dict(row) for row in conn.execute("SELECT * FROM jobs")}
    finally:
        conn.close()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, chunks' CRCs and pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"{path}: bad CRC in {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert zlib.decompress(idat), f"{path}: no pixels"
    return size


def check_folder(out: Path, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Check that the images on disk match results.jsonl and the journal; return results.

    Every job is succeeded, failed or uncertain; a succeeded job has its ``n`` files, all
    valid PNGs, and nothing else in its folder; a failed or uncertain one has an error.
    """
    results = {row["id"]: row for row in read_results(out)}
    journal = journal_rows(out)
    assert set(ids) <= set(results), "a manifest job is missing from results.jsonl"
    for job_id, row in results.items():
        assert set(row) == {
            "id",
            "status",
            "task_id",
            "request_id",
            "files",
            "error",
            "urls",
            "usage",
        }
        assert isinstance(row["id"], str), row
        assert row["status"] in ("succeeded", "failed", "uncertain"), row
        if row["status"] == "succeeded":
            assert row["error"] is None
            assert len(row["files"]) == journal[job_id]["n"], row
            for name in row["files"]:
                assert png_size(out / name)[0] >= 512
            folder = out / "images" / journal[job_id]["folder"]
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                Path(name).name for name in row["files"]
            ), f"{folder} holds files the journal does not list"
        else:
            assert row["error"] and row["error"]["type"] and row["error"]["message"], row
            assert row["files"] == []
        if job_id in journal:
            assert journal[job_id]["status"] == row["status"]
    return results


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
