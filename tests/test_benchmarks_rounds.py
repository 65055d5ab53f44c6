"""The benchmark runner's rounds: several interleaved runs of each peer, the median reported."""

from __future__ import annotations

import pytest

from benchmarks.report import markdown
from benchmarks.run import _median_round, main
from benchmarks.scenarios import select


def _run(jobs_per_s: float, cpu: float) -> dict[str, object]:
    return {"jobs_per_s": jobs_per_s, "cpu_ms_per_job": cpu, "lag_p50_ms": jobs_per_s / 100}


def test_one_round_is_reported_as_it_is() -> None:
    run = _run(100.0, 0.2)
    assert _median_round([run]) is run


def test_the_median_round_is_reported_with_the_median_cpu_and_every_round_kept() -> None:
    runs = [_run(4000.0, 0.30), _run(9000.0, 0.10), _run(5000.0, 0.20)]
    out = _median_round(runs)
    assert out["jobs_per_s"] == 5000.0
    assert out["lag_p50_ms"] == 50.0  # the other fields come from the median round
    assert out["cpu_ms_per_job"] == 0.20
    assert [r["jobs_per_s"] for r in out["rounds"]] == [4000.0, 9000.0, 5000.0]


def test_the_cpu_median_is_taken_across_rounds_not_from_the_median_round() -> None:
    runs = [_run(1000.0, 0.9), _run(2000.0, 0.1), _run(3000.0, 0.2)]
    assert _median_round(runs)["cpu_ms_per_job"] == 0.2


def test_wake_ups_per_job_are_the_medians_of_the_rounds_and_kept_per_round() -> None:
    runs = [_run(1000.0, 0.9), _run(2000.0, 0.1), _run(3000.0, 0.2)]
    for run, client, fake in zip(runs, (0.30, 0.05, 0.10), (0.9, 0.2, 0.4), strict=True):
        run["wakeups_per_job"] = client
        run["fake_wakeups_per_job"] = fake
    out = _median_round(runs)
    assert out["wakeups_per_job"] == 0.10
    assert out["fake_wakeups_per_job"] == 0.4
    assert [r["wakeups_per_job"] for r in out["rounds"]] == [0.30, 0.05, 0.10]
    assert [r["fake_wakeups_per_job"] for r in out["rounds"]] == [0.9, 0.2, 0.4]


def test_each_task_round_lists_its_share_of_perfect_and_status_requests() -> None:
    """Rounds keep % of perfect and status requests per job, and the report's round lines show
    them for a task scenario (a synchronous one, with no status requests, shows neither)."""
    runs = [_run(270.0, 2.0), _run(280.0, 2.1), _run(290.0, 1.9)]
    for run, perfect in zip(runs, (82.5, 85.5, 88.0), strict=True):
        run.update(pct_ideal_makespan=perfect, status_per_job=1.88, wakeups_per_job=0.5)
    sync = [_run(360.0, 0.6), _run(370.0, 0.7)]
    for run in sync:
        run.update(pct_ideal_makespan=91.0, status_per_job=0.0, wakeups_per_job=0.1)
    table = {
        "jobs": 2000,
        "in_flight": 200,
        "pct_ideal": 70.0,
        "status_per_job": 1.88,
        "peak_rss_mb": 45.0,
        "lag_p50_ms": 80.0,
        "lag_p99_ms": 400.0,
        "errors": 0,
    }
    report = {
        "scenarios": {
            name: {"kind": "throughput", "peers": {"library": {**table, **_median_round(r)}}}
            for name, r in (("task-lognormal", runs), ("sync", sync))
        }
    }
    assert [r["pct_ideal_makespan"] for r in _median_round(runs)["rounds"]] == [82.5, 85.5, 88.0]
    lines = {line.split(":")[0]: line for line in markdown(report).splitlines() if ": " in line}
    task = lines["- task-lognormal library"]
    assert "82.5% of perfect at 1.88 status/job" in task
    assert "88.0% of perfect" in task
    assert "of perfect" not in lines["- sync library"]


def test_a_failed_round_does_not_become_the_median() -> None:
    failed: dict[str, object] = {"failed": "timed out", "jobs_per_s": None}
    out = _median_round([failed, _run(10.0, 1.0), _run(30.0, 3.0)])
    assert out["jobs_per_s"] == 10.0
    assert out["rounds"][0]["jobs_per_s"] is None


def test_the_cpu_and_sync_scenarios_run_three_rounds_and_rounds_overrides_it() -> None:
    (cpu,) = select(["cpu"], quick=False)
    assert cpu.rounds == 3
    (cpu,) = select(["cpu"], quick=True, rounds=1)
    assert cpu.rounds == 1
    (sync,) = select(["sync"], quick=False)
    assert sync.rounds == 3
    (lognormal,) = select(["task-lognormal"], quick=False)
    assert lognormal.rounds == 1


def test_rounds_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--rounds", "0", "--scenario", "cpu"])
    assert exc.value.code == 2
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
