"""The ``bulk`` scenario: ``qwen-edit run`` with and without downloads, side by side.

Both runs use the real CLI (library defaults, ``--concurrency`` set to the scenario's jobs in
flight) in its own process against a fresh fake in another, on the same manifest of small
edits. The rate is the CLI's own: succeeded jobs ÷ the run's wall time as it prints it
(the interpreter's start and imports are left out, the journal and ``results.jsonl`` are in).
"""

from __future__ import annotations

import re
import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.processes import PYTHON, fake_server, log, run_process

__all__ = ["run_bulk"]

#: ``120 succeeded, 0 failed, 0 uncertain (of 120 jobs) in 2 s (1.9 s)``
_SUMMARY = re.compile(r"(\d+) succeeded, (\d+) failed, (\d+) uncertain .*\(([\d.]+) s\)")


def _manifest(folder: Path, jobs: int) -> Path:
    from qwen_edit_async.testing._png import png_bytes

    (folder / "input.png").write_bytes(png_bytes(512, 512, 5))
    manifest = folder / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as handle:
        for i in range(jobs):
            handle.write(f'{{"images": ["input.png"], "prompt": "edit {i}", "size": "512*512"}}\n')
    return manifest


def _one(scenario: Any, manifest: Path, workdir: Path, download: bool) -> dict[str, Any]:
    name = "download" if download else "no-download"
    out = workdir / f"out-{name}"
    with fake_server(["--latency", str(scenario.latency)], workdir) as fake:
        cmd = [PYTHON, "-m", "qwen_edit_async", "run", str(manifest), "--out", str(out)]
        cmd += ["--provider", scenario.provider, "--base-url", fake.url]
        cmd += ["--concurrency", str(scenario.in_flight), "--progress", "none"]
        cmd += [] if download else ["--no-download"]
        timeout = 60 + scenario.jobs / 20
        # The fake accepts any key; the variable only has to be set.
        key = {"QWEN_EDIT_API_KEY": "bench-key"}
        before, fake_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), fake.cpu_s()
        code, stdout, stderr = run_process(cmd, timeout=timeout, env=key)
        after, fake_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), fake.cpu_s() - fake_cpu
        stats = fake.stats(jobs=False)
    # The CLI's whole process (start-up included), the fake's CPU over the same span.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    metrics: dict[str, Any] = {
        "jobs": scenario.jobs,
        "in_flight": scenario.in_flight,
        "download": download,
        "jobs_created": stats["jobs_created"],
        "ideal_jobs_per_s": scenario.in_flight / scenario.latency,
        "failed": None,
    }
    found = _SUMMARY.search(stdout)
    if code is None:
        metrics["failed"] = f"timed out after {timeout:.0f} s"
    elif code != 0 or found is None:
        metrics["failed"] = f"exit {code}: {(stderr or stdout).strip()[-1500:]}"
    else:
        ok, failed, uncertain, wall = found.groups()
        metrics.update(
            {
                "ok": int(ok),
                "errors": int(failed) + int(uncertain),
                "wall_s": float(wall),
                "jobs_per_s": int(ok) / float(wall),
                "cpu_ms_per_job": 1000 * cpu / max(1, int(ok)),
                "fake_cpu_ms_per_job": 1000 * fake_cpu / max(1, int(ok)),
            }
        )
        metrics["pct_ideal"] = 100 * metrics["jobs_per_s"] / metrics["ideal_jobs_per_s"]
        metrics["images"] = sum(1 for _ in (out / "images").rglob("*.png")) if download else 0
    return metrics


def run_bulk(scenario: Any, peers: Sequence[str], workdir: Path) -> dict[str, Any]:
    """Both runs of a ``Bulk`` scenario (when the ``cli`` peer is selected)."""
    out: dict[str, Any] = {}
    if "cli" not in peers:
        return out
    manifest = _manifest(workdir, scenario.jobs)
    for download in (False, True):
        name = "cli" if download else "cli_no_download"
        out[name] = _one(scenario, manifest, workdir, download)
        log(f"  {name:20} {_brief(out[name])}")
    ratio = _ratio(out)
    if ratio is not None:
        out["cli"]["pct_of_no_download"] = ratio
    return out


def _ratio(results: Mapping[str, Mapping[str, Any]]) -> float | None:
    with_, without = results.get("cli", {}), results.get("cli_no_download", {})
    if "jobs_per_s" not in with_ or "jobs_per_s" not in without:
        return None
    return float(100 * with_["jobs_per_s"] / without["jobs_per_s"])


def _brief(m: Mapping[str, Any]) -> str:
    if m.get("failed"):
        return f"FAILED: {m['failed']}"
    return (
        f"{m['jobs_per_s']:.0f} jobs/s ({m['pct_ideal']:.0f}% of ideal), {m['wall_s']} s, "
        f"{m['cpu_ms_per_job']:.2f} ms CPU/job (fake {m['fake_cpu_ms_per_job']:.2f})"
    )
