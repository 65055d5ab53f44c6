"""Smoke test of the callback benchmarks: a tiny ``callbacks-drop30`` run, both peers.

Not a performance test: it checks that the callbacks peer really ran with callbacks (most
jobs ended by callback, the lost ones by a poll, all of them ok) beside the polling peer,
and that the report carries the figures the targets read. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("psutil")


@pytest.mark.slow
def test_callbacks_scenario_runs_both_peers(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--scenario", "callbacks-drop30"]
    command += ["--peer", "library", "--peer", "library_callbacks"]
    command += ["--jobs", "40", "--in-flight", "20", "--latency", "0.2", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    section = json.loads(out.read_text())["scenarios"]["callbacks-drop30"]
    peers = section["peers"]
    assert set(peers) == {"library", "library_callbacks"}
    polling, pushed = peers["library"], peers["library_callbacks"]
    assert polling["ok"] == pushed["ok"] == 40
    assert polling["completed_by_callback"] == 0 and polling["completed_by_poll"] == 40
    assert pushed["completed_by_callback"] + pushed["completed_by_poll"] == 40
    assert pushed["completed_by_callback"] == pushed["callbacks_delivered"] > 0
    assert pushed["completed_by_poll"] >= 1  # the fake dropped about 30% of the callbacks
    for key in ("lag_p50_ms", "lag_p99_ms", "pct_ideal_makespan", "status_per_job"):
        assert pushed[key] is not None, key
    assert {t["target"] for t in section["targets"]} == {
        "every job completes",
        "status requests/job <= 1.0",
    }
