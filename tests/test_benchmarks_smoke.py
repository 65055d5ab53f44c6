"""Smoke test of the benchmark runner: tiny sizes, every peer, the JSON it writes.

Not a performance test: it asserts that the report has the fields the README documents and
that the values are sane (every job succeeded, counts add up), never a timing threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("dashscope")
pytest.importorskip("psutil")

# The quick benchmark run these tests read takes 15-25 s on 2 cores.
pytestmark = pytest.mark.slow

THROUGHPUT_FIELDS = {
    "jobs",
    "in_flight",
    "ok",
    "errors",
    "jobs_created",
    "status_requests",
    "status_per_job",
    "wall_s",
    "jobs_per_s",
    "mean_latency_s",
    "ideal_jobs_per_s",
    "pct_ideal",
    "ideal_makespan_s",
    "pct_ideal_makespan",
    "cpu_ms_per_job",
    "peak_rss_mb",
    "lag_p50_ms",
    "lag_p99_ms",
    "fake_cpu_ms_per_job",
    "wakeups_per_job",
    "fake_wakeups_per_job",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One tiny run of a sync and a task scenario (about 10 s), read back from its JSON."""
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    command = [sys.executable, "-m", "benchmarks", "--quick"]
    command += ["--scenario", "sync", "--scenario", "task-lognormal"]
    command += ["--jobs", "40", "--in-flight", "20", "--latency", "0.2", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| scenario | peer |" in done.stdout  # the markdown table is printed
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_report_names_the_machine(report: dict[str, object]) -> None:
    """The report says where it ran: CPU count and model, Python version."""
    machine = report["machine"]
    assert isinstance(machine, dict)
    assert machine["nproc"] >= 1
    assert machine["cpu"]
    assert machine["python"].count(".") == 2


@pytest.mark.parametrize(
    ("scenario", "peers"),
    [
        ("sync", {"library", "baseline", "dashscope_sdk"}),
        ("task-lognormal", {"library", "baseline"}),
    ],
)
def test_every_peer_ran_every_job(
    report: dict[str, object], scenario: str, peers: set[str]
) -> None:
    """Each peer of the scenario finished all its jobs without errors, and the fake saw them."""
    section = report["scenarios"][scenario]  # type: ignore[index]
    assert set(section["peers"]) == peers
    for name, metrics in section["peers"].items():
        missing = THROUGHPUT_FIELDS - set(metrics)
        assert not missing, f"{name}: missing {sorted(missing)}"
        assert metrics["failed"] is None, f"{name}: {metrics['failed']}"
        assert metrics["ok"] == metrics["jobs"] == 40, name
        assert metrics["errors"] == 0, f"{name}: {metrics['first_error']}"
        assert metrics["jobs_created"] == 40, name
        assert metrics["lag_samples"] == 40, name  # every result matched to a fake job


@pytest.mark.parametrize("scenario", ["sync", "task-lognormal"])
def test_values_are_sane(report: dict[str, object], scenario: str) -> None:
    """Rates, shares, CPU, memory and lags are positive and consistent with each other."""
    section = report["scenarios"][scenario]  # type: ignore[index]
    for name, m in section["peers"].items():
        assert m["jobs_per_s"] > 0
        assert m["jobs_per_s"] == pytest.approx(m["ok"] / m["wall_s"])
        assert m["pct_ideal"] == pytest.approx(100 * m["jobs_per_s"] / m["ideal_jobs_per_s"])
        # Nobody beats a client with zero detection lag (small slack for clock granularity).
        assert 0 < m["pct_ideal_makespan"] <= 102, name
        assert m["cpu_ms_per_job"] > 0
        # Both processes wait for each other's answers: each slept and was woken.
        assert m["wakeups_per_job"] > 0, name
        assert m["fake_wakeups_per_job"] > 0, name
        assert m["peak_rss_mb"] > 10
        assert 0 <= m["lag_p50_ms"] <= m["lag_p99_ms"], name
        if scenario == "sync":
            assert m["status_requests"] == 0
        else:
            assert m["status_per_job"] >= 1.0  # at least the one that saw it finished


def test_targets_are_checked(report: dict[str, object]) -> None:
    """Each scenario lists its targets with a verdict and the measured numbers."""
    for section in report["scenarios"].values():  # type: ignore[attr-defined]
        assert section["targets"], section["title"]
        for target in section["targets"]:
            assert target["met"] in (True, False)
            assert target["measured"]


def test_the_bulk_scenario_runs_the_cli_with_and_without_downloads(tmp_path: Path) -> None:
    """The ``bulk`` scenario, tiny: both CLI runs finish every job, the ratio is theirs."""
    out = tmp_path / "bulk.json"
    command = [sys.executable, "-m", "benchmarks", "--scenario", "bulk", "--peer", "cli"]
    command += ["--jobs", "30", "--in-flight", "10", "--latency", "0.05", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| qwen-edit run --no-download | 30 |" in done.stdout
    section = json.loads(out.read_text())["scenarios"]["bulk"]
    with_, without = section["peers"]["cli"], section["peers"]["cli_no_download"]
    for m in (with_, without):
        assert m["failed"] is None, m["failed"]
        assert m["ok"] == m["jobs"] == m["jobs_created"] == 30
        assert m["errors"] == 0
        assert m["jobs_per_s"] == pytest.approx(m["ok"] / m["wall_s"])
    assert with_["images"] == 30 and without["images"] == 0
    share = 100 * with_["jobs_per_s"] / without["jobs_per_s"]
    assert with_["pct_of_no_download"] == pytest.approx(share)
    assert section["targets"][0]["met"] in (True, False)


def test_the_memory_scenario_runs_the_library_beside_the_hand_written_pattern(
    tmp_path: Path,
) -> None:
    """``memory``, tiny: the library and the hand-written pattern each send every job's own
    local file, report peak and sampled RSS, and the RSS target compares the two."""
    out = tmp_path / "memory.json"
    command = [sys.executable, "-m", "benchmarks", "--scenario", "memory"]
    command += ["--peer", "library", "--peer", "baseline", "--jobs", "24", "--in-flight", "8"]
    command += ["--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    section = json.loads(out.read_text())["scenarios"]["memory"]
    assert set(section["peers"]) == {"library@24", "baseline@24"}
    for name, m in section["peers"].items():
        assert m["failed"] is None, f"{name}: {m['failed']}"
        assert m["ok"] == m["jobs"] == m["jobs_created"] == 24, name
        assert m["errors"] == 0, f"{name}: {m['first_error']}"
        assert m["distinct_images"] == 24
        assert m["peak_rss_mb"] >= m["rss_idle_mb"] > 10, name
        assert m["jobs_per_s"] == pytest.approx(m["ok"] / m["wall_s"])
    targets = {t["target"]: t for t in section["targets"]}
    rss = targets["peak RSS <= hand-written (distinct inputs)"]
    assert rss["met"] in (True, False)
    assert "at 24 jobs" in rss["measured"]
