"""The report: markdown tables, the machine it ran on, the JSON file, profile summaries."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from benchmarks.processes import ROOT

__all__ = ["machine", "markdown", "summarize_profile", "write_report"]


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _round_perfect(r: Mapping[str, Any]) -> str:
    """A task round's % of perfect and status requests per job, for the round lines."""
    if not r.get("status_per_job") or r.get("pct_ideal_makespan") is None:
        return ""
    return f"{_f(r['pct_ideal_makespan'])}% of perfect at {_f(r['status_per_job'], 2)} status/job, "


def markdown(report: Mapping[str, Any]) -> str:
    lines: list[str] = []
    through = [(name, s) for name, s in report["scenarios"].items() if s["kind"] == "throughput"]
    if through:
        lines += [
            "| scenario | peer | jobs | in flight | jobs/s | % of ideal | % of perfect "
            "| status req/job | client CPU ms/job | loop it/job | wake-ups/job | peak RSS MiB "
            "| lag p50 ms | lag p99 ms | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in through:
            for peer, m in s["peers"].items():
                if m.get("failed") and "wall_s" not in m:
                    lines.append(
                        f"| {name} | {peer} | {m['jobs']:,} | {m['in_flight']:,} "
                        f"| failed: {str(m['failed'])[:60]} ||||||||||"
                    )
                    continue
                lines.append(
                    f"| {name} | {peer} | {m['jobs']:,} | {m['in_flight']:,} "
                    f"| {_f(m['jobs_per_s'], 0)} | {_f(m['pct_ideal'])} "
                    f"| {_f(m['pct_ideal_makespan'])} "
                    f"| {_f(m['status_per_job'], 2)} | {_f(m['cpu_ms_per_job'], 2)} "
                    f"| {_f(m.get('loop_iterations_per_job'), 2)} "
                    f"| {_f(m.get('wakeups_per_job'), 2)} "
                    f"| {_f(m['peak_rss_mb'], 0)} | {_f(m['lag_p50_ms'], 0)} "
                    f"| {_f(m['lag_p99_ms'], 0)} | {m['errors']} |"
                )
        rounds = [
            f"{name} {peer}: "
            + ", ".join(
                f"{_f(r['jobs_per_s'], 0)} ({_round_perfect(r)}{_f(r['cpu_ms_per_job'], 3)} ms, "
                f"{_f(r.get('wakeups_per_job'), 2)} wake-ups)"
                for r in m["rounds"]
            )
            for name, s in through
            for peer, m in s["peers"].items()
            if m.get("rounds")
        ]
        if rounds:
            lines += [
                "",
                "Rounds, jobs/s (task scenarios: % of perfect, status requests per job; client CPU "
                "and wake-ups per job); the table shows each median:",
                "",
            ]
            lines += [f"- {line}" for line in rounds]
    for name, s in report["scenarios"].items():
        if s["kind"] == "memory":
            lines += [
                "",
                f"**{name}** ({s['describe']})",
                "",
                "| peer | jobs | inputs | jobs/s | client CPU ms/job | idle RSS MiB "
                "| peak RSS MiB | RSS MiB when 1k/10k/100k done | errors |",
                "|---|---:|---|---:|---:|---:|---:|---|---:|",
            ]
            for name, m in s["peers"].items():
                if name == "cli":
                    continue
                inputs = "shared" if name.startswith("library-shared") else "distinct"
                if "wall_s" not in m:
                    lines.append(
                        f"| {name} | {m['jobs']:,} | {inputs} "
                        f"| failed: {str(m.get('failed'))[:60]} |||||"
                    )
                    continue
                samples = ", ".join(f"{c:,}: {r:.0f}" for c, r in m.get("rss_samples", []))
                lines.append(
                    f"| {name.split('@')[0]} | {m['jobs']:,} | {inputs} | {_f(m['jobs_per_s'], 0)} "
                    f"| {_f(m['cpu_ms_per_job'], 2)} | {_f(m['rss_idle_mb'], 0)} "
                    f"| {_f(m['peak_rss_mb'], 0)} | {samples} | {m['errors']} |"
                )
            cli = s["peers"].get("cli")
            if cli is not None:
                lines.append("")
                if cli.get("failed"):
                    lines.append(f"CLI (benchmarks/bulk_memory.py): failed: {cli['failed'][:200]}")
                else:
                    points = ", ".join(
                        f"{c['done']:,}: {c['peak_rss_mb']:.0f}" for c in cli.get("checkpoints", [])
                    )
                    lines.append(
                        f"CLI `qwen-edit run` (benchmarks/bulk_memory.py: {cli['lines']:,} lines, "
                        f"one shared small image, concurrency {cli['concurrency']}): peak RSS MB "
                        f"by jobs done {points}; {cli['jobs_per_s']} jobs/s, exit "
                        f"{cli['exit_code']}"
                    )
        elif s["kind"] == "bulk":
            lines += [
                "",
                f"**{name}** ({s['describe']})",
                "",
                "| run | jobs | jobs/s | % of ideal | % of the no-download rate | images "
                "| CLI CPU ms/job | fake CPU ms/job | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for peer, m in s["peers"].items():
                label = "qwen-edit run" + (" --no-download" if peer == "cli_no_download" else "")
                if "wall_s" not in m:
                    failed = str(m["failed"])[:60]
                    lines.append(f"| {label} | {m['jobs']:,} | failed: {failed} ||||||")
                    continue
                lines.append(
                    f"| {label} | {m['jobs']:,} | {_f(m['jobs_per_s'], 0)} | {_f(m['pct_ideal'])} "
                    f"| {_f(m.get('pct_of_no_download', 100.0))} | {m['images']:,} "
                    f"| {_f(m['cpu_ms_per_job'], 2)} | {_f(m['fake_cpu_ms_per_job'], 2)} "
                    f"| {m['errors']} |"
                )
        elif s["kind"] == "payload":
            p = s["peers"]
            lines += [
                "",
                f"**{name}** ({s['describe']})",
                "",
                "| peer | time ms | vs base64.b64encode | peak RSS above idle MiB "
                "| peak / input size |",
                "|---|---:|---:|---:|---:|",
            ]
            if "b64" in p and "b64_s" in p["b64"]:
                b = p["b64"]
                lines.append(
                    f"| base64.b64encode (read {_f(1000 * b['read_s'], 0)} ms not counted) "
                    f"| {_f(1000 * b['b64_s'], 0)} | 1.00 | {_f(b['peak_extra_mb'], 0)} "
                    f"| {_f(b['peak_over_input'], 2)} |"
                )
            if "library" in p and "encode_s" in p["library"]:
                m = p["library"]
                lines.append(
                    f"| library: validate + header checks + JSON + streamed body "
                    f"({_f(1000 * m['validate_s'], 0)} + {_f(1000 * m['prepare_s'], 0)} + "
                    f"{_f(1000 * m['build_s'], 0)} ms) | {_f(1000 * m['encode_s'], 0)} "
                    f"| {_f(m['encode_over_b64'], 2)} (same process; read+b64: "
                    f"{_f(m['encode_over_read_b64'], 2)}) | {_f(m['peak_extra_mb'], 0)} "
                    f"| {_f(m['peak_over_input'], 2)} |"
                )
            if "edit" in p and "edit_s" in p["edit"]:
                m = p["edit"]
                lines.append(
                    f"| library: client.edit end to end (fake, latency 0) "
                    f"| {_f(1000 * m['edit_s'], 0)} | – | {_f(m['peak_extra_mb'], 0)} "
                    f"| {_f(m['peak_over_input'], 2)} |"
                )
    targets = [(name, t) for name, s in report["scenarios"].items() for t in s.get("targets", [])]
    if targets:
        lines += ["", "| scenario | target | met | measured |", "|---|---|---|---|"]
        for name, t in targets:
            met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
            lines.append(f"| {name} | {t['target']} | {met} | {t['measured']} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit, dirty = None, None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        # Uncommitted library files: the numbers are for the tree as it was, not HEAD alone.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "qwen_edit_async"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "git_head": commit,
        "git_uncommitted": dirty,
        "loadavg_start": os.getloadavg(),
    }


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


def summarize_profile(path: str, top: int = 25) -> str:
    """The hottest functions of a profile: self and inclusive shares of the samples, and
    (py-spy) the share of each package, by the innermost frame that belongs to one."""
    if path.endswith(".cprofile"):
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(path, stream=buf).sort_stats("tottime").print_stats(top)
        return buf.getvalue()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            # Only the event loop's samples: imports and set-up are not the jobs' cost.
            if "BaseEventLoop.run_forever" not in stack:
                continue
            count = int(count_text)
            frames = [f.split(" (")[0] + " (" + _short(f) for f in stack.split(";")]
            total += count
            own[frames[-1]] += count
            # By function (line numbers dropped), once per sample however deep the recursion.
            for frame in {f.rpartition(":")[0] + ")" for f in frames}:
                if "(qwen_edit_async/" in frame:
                    inclusive[frame] += count
            packages[_package(frames)] += count
    if not total:
        return f"profile {path}: no samples in the event loop"
    lines = [f"profile {path}: {total} samples in the event loop", "share  package"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in packages.most_common()]
    lines += ["self %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["incl %  library function (samples with it on the stack)"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _package(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name in ("qwen_edit_async", "aiohttp", "anyio", "msgspec", "yarl", "multidict"):
            if f"({name}/" in frame:
                return "aiohttp" if name in ("yarl", "multidict") else name
    return "asyncio and other"


def _short(frame: str) -> str:
    where = frame.rpartition(" (")[2]
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return where
