"""Run the benchmarks: every peer against a fresh fake provider, each in its own process.

    python -m benchmarks                      # every scenario, full size
    python -m benchmarks --quick              # scaled down, for development
    python -m benchmarks --scenario sync --scenario task-lognormal --quick
    python -m benchmarks --scenario scale --peer library --profile py-spy

Prints markdown tables and writes JSON (``benchmarks/results/latest.json`` unless ``--out``).
See ``benchmarks/README.md`` for what each column means.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bulk_run import run_bulk
from benchmarks.processes import (
    PYTHON,
    RESULTS,
    ROOT,
    fake_server,
    log,
    run_peer,
    run_process,
    set_library_path,
)
from benchmarks.report import machine, markdown, summarize_profile, write_report
from benchmarks.scenarios import SCENARIOS, Bulk, Memory, Payload, Scenario, Throughput, select

# -- numbers --------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def ideal_makespan(latencies: list[float], in_flight: int) -> float:
    """Seconds a client with zero detection lag needs for these jobs, started in order."""
    slots = [0.0] * min(in_flight, len(latencies))
    end = 0.0
    for latency in latencies:
        start = heapq.heappop(slots)
        finish = start + latency
        end = max(end, finish)
        heapq.heappush(slots, finish)
    return end


def throughput_metrics(
    scenario: Throughput,
    result: Mapping[str, Any],
    stats: Mapping[str, Any],
    fake_cpu: float,
    fake_wakeups: int,
) -> dict[str, Any]:
    jobs = stats["jobs"]
    latencies = [j["latency"] for j in jobs]
    created = len(jobs)
    out: dict[str, Any] = {
        "jobs": scenario.jobs,
        "in_flight": scenario.in_flight,
        "ok": result.get("ok", 0),
        "errors": result.get("errors"),
        "first_error": result.get("first_error"),
        "failed": result.get("failed"),
        "timed_out": bool(result.get("timed_out")),
        "jobs_created": created,
        "creates": stats["creates"],
        "status_requests": stats["polls"],
        "status_per_job": stats["polls"] / created if created else None,
        "fake_peak_running": stats["peak_running"],
        "fake_cpu_ms_per_job": 1000 * fake_cpu / created if created else None,
        "fake_wakeups_per_job": fake_wakeups / created if created else None,
    }
    if "wall_s" not in result:
        return out
    ok = result["ok"]
    mean_latency = statistics.fmean(latencies) if latencies else scenario.mean_latency
    # Latency 0 (the CPU-bound scenario): no ideal rate; compare with the raw peer instead.
    ideal_rate = scenario.in_flight / mean_latency if mean_latency > 0 else None
    rate = ok / result["wall_s"]
    makespan = ideal_makespan(latencies, scenario.in_flight) if latencies else None
    completed = {j["id"]: j["completed_at"] for j in jobs}
    seen = {j["id"]: j["first_seen_completed_at"] for j in jobs}
    lags = [
        received - completed[key]
        for key, received in result.get("records", ())
        if completed.get(key) is not None
    ]
    fake_lags = [seen[k] - completed[k] for k in completed if seen[k] and completed[k]]
    out.update(
        {
            "wall_s": result["wall_s"],
            "jobs_per_s": rate,
            "mean_latency_s": mean_latency,
            "ideal_jobs_per_s": ideal_rate,
            "pct_ideal": 100 * rate / ideal_rate if ideal_rate else None,
            "ideal_makespan_s": makespan,
            "pct_ideal_makespan": (
                100 * makespan / result["wall_s"] if makespan and makespan > 0 else None
            ),
            "cpu_ms_per_job": 1000 * result["cpu_s"] / ok if ok else None,
            "loop_iterations_per_job": (
                result["loop_iterations"] / ok if ok and result.get("loop_iterations") else None
            ),
            "wakeups_per_job": (
                result["wakeups"] / ok if ok and result.get("wakeups") is not None else None
            ),
            "preempted_per_job": (
                result["preempted"] / ok if ok and result.get("preempted") is not None else None
            ),
            "event_loop": result.get("event_loop"),
            "cpu_s": result["cpu_s"],
            "peak_rss_mb": result["peak_rss_mb"],
            "rss_idle_mb": result["rss_idle_mb"],
            "lag_p50_ms": _ms(_pct(lags, 50)),
            "lag_p99_ms": _ms(_pct(lags, 99)),
            "lag_max_ms": _ms(max(lags) if lags else None),
            "lag_samples": len(lags),
            "fake_seen_lag_p50_ms": _ms(_pct(fake_lags, 50)),
            "fake_seen_lag_p99_ms": _ms(_pct(fake_lags, 99)),
        }
    )
    if "completed_by_callback" in result:
        out["completed_by_callback"] = result["completed_by_callback"]
        out["completed_by_poll"] = result["completed_by_poll"]
        out["callbacks_delivered"] = stats.get("callbacks_delivered")
    if "client_status_requests" in result:
        out["client_status_requests"] = result["client_status_requests"]
        out["library_file"] = result.get("library_file")
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


# -- scenarios -----------------------------------------------------------------------------


def run_throughput(
    scenario: Throughput, peers: Sequence[str], workdir: Path, profile: str | None
) -> dict[str, Any]:
    chosen = [peer for peer in peers if peer in scenario.peers]
    rounds: dict[str, list[dict[str, Any]]] = {peer: [] for peer in chosen}
    for round_no in range(scenario.rounds):
        if scenario.rounds > 1:
            log(f"  round {round_no + 1} of {scenario.rounds}")
        for peer in chosen:
            # Profile one round only: the profiler's own cost must not reach the median.
            profile_here = profile if peer == "library" and round_no == 0 else None
            metrics = _throughput_run(scenario, peer, workdir, profile_here)
            rounds[peer].append(metrics)
            log(f"  {peer:14} {_brief(metrics)}")
    return {peer: _median_round(runs) for peer, runs in rounds.items()}


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's metrics as they are; several: the round with the median jobs/s, its
    client CPU and wake-ups per job replaced by the medians of the rounds, every round's
    figures kept."""
    if len(runs) == 1:
        return runs[0]
    measured = [r for r in runs if r.get("jobs_per_s") is not None]
    if not measured:
        return runs[0]
    measured.sort(key=lambda r: r["jobs_per_s"])
    out = dict(measured[(len(measured) - 1) // 2])
    cpu = [r["cpu_ms_per_job"] for r in measured if r.get("cpu_ms_per_job") is not None]
    if cpu:
        out["cpu_ms_per_job"] = statistics.median(cpu)
    for key in ("wakeups_per_job", "fake_wakeups_per_job"):
        counted = [r[key] for r in measured if r.get(key) is not None]
        if counted:
            out[key] = statistics.median(counted)
    out["rounds"] = [
        {
            key: r.get(key)
            for key in (
                "jobs_per_s",
                "pct_ideal_makespan",
                "status_per_job",
                "cpu_ms_per_job",
                "wakeups_per_job",
                "fake_cpu_ms_per_job",
                "fake_wakeups_per_job",
                "load_before",
            )
        }
        for r in runs
    ]
    return out


def _throughput_run(
    scenario: Throughput, peer: str, workdir: Path, profile: str | None
) -> dict[str, Any]:
    """One peer once, on a fresh fake."""
    # Bounded: three times the ideal duration plus start-up slack.
    timeout = 3 * scenario.ideal_seconds + 30 + scenario.jobs / 100
    spec: dict[str, Any] = {
        "url": "",
        "provider": scenario.provider,
        "jobs": scenario.jobs,
        "in_flight": scenario.in_flight,
        "record": True,
    }
    if profile:
        spec["profile_out"] = str(RESULTS / f"profile-{scenario.name}-{peer}.{profile}")
    load = os.getloadavg()[0]
    with fake_server(scenario.fake_args(), workdir) as fake:
        spec["url"] = fake.url
        cpu0 = fake.cpu_s()
        wakeups0 = fake.wakeups()
        module, loop = _peer_module(peer)
        if loop:
            spec["loop"] = loop
        result = run_peer(module, spec, timeout, profile=profile)
        fake_cpu = fake.cpu_s() - cpu0
        fake_wakeups = fake.wakeups() - wakeups0
        stats = fake.stats(jobs=True)
    metrics = throughput_metrics(scenario, result, stats, fake_cpu, fake_wakeups)
    metrics["load_before"] = load
    if profile and Path(spec["profile_out"]).exists():
        metrics["profile"] = spec["profile_out"]
        metrics["profile_summary"] = summarize_profile(spec["profile_out"]).splitlines()
        log("\n".join(metrics["profile_summary"]))
    return metrics


#: Every peer; ``<peer>_uvloop`` is the same peer on uvloop (the CPU-bound scenario runs both).
ALL_PEERS = (
    "library",
    "library_callbacks",
    "baseline",
    "dashscope_sdk",
    "raw",
    "library_uvloop",
    "raw_uvloop",
    "b64",
    "cli",
)


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def _peer_module(peer: str) -> tuple[str, str | None]:
    """``library_uvloop`` runs ``peers/library.py`` on uvloop; other names as they are."""
    if peer.endswith("_uvloop"):
        return peer[: -len("_uvloop")], "uvloop"
    return peer, None


def _brief(m: Mapping[str, Any]) -> str:
    if m.get("failed"):
        return f"FAILED: {m['failed']}"
    if "input_bytes" in m:
        times = {k: round(1000 * m[k]) for k in ("b64_s", "encode_s", "edit_s") if k in m}
        return f"{times} ms, peak {m['peak_extra_mb']:.0f} MiB above idle"
    if "pct_ideal" in m:
        return (
            f"{m['jobs_per_s']:.0f} jobs/s = {m['pct_ideal'] or 0:.1f}% of ideal, "
            f"{m['status_per_job']:.2f} status/job, {m['cpu_ms_per_job']:.2f} ms CPU/job, "
            f"{m.get('wakeups_per_job') or 0:.2f} wake-ups/job, "
            f"peak RSS {m['peak_rss_mb']:.0f} MiB, errors {m['errors']}"
        )
    return json.dumps({k: v for k, v in m.items() if not isinstance(v, (list, dict))})


def _png_padded(width: int, height: int, size: int, seed: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` (1-bit grey) padded to exactly ``size`` bytes
    with a private ancillary chunk of pseudo-random bytes (decoders skip it)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(bytes((1 + (width + 7) // 8) * height), 9))
    iend = chunk(b"IEND", b"")
    fixed = 8 + len(ihdr) + len(idat) + len(iend) + 12
    filler = random.Random(seed).randbytes(size - fixed)
    data = b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"raNd", filler) + idat + iend
    assert len(data) == size, (len(data), size)
    return data


def run_memory(scenario: Memory, peers: Sequence[str], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # The library and the hand-written pattern on the same files, one count after the other.
    file_peers = [p for p in scenario.peers if p in peers and p != "cli"]
    if file_peers:
        images = workdir / "images"
        images.mkdir(exist_ok=True)
        source = images / "img-0.png"
        source.write_bytes(_png_padded(1024, 1024, scenario.image_bytes, seed=1))
        # Every job its own path (symbolic links to one file; hard links stop at 65,000 on
        # ext4): the library reads and encodes each input anew, as for a batch of distinct
        # photos, without 100 GB of test files.
        for i in range(1, max(scenario.counts)):
            os.symlink(source, images / f"img-{i}.png")
        runs = [
            (peer, f"{peer}@{n}", n, n)
            for n in scenario.counts
            for peer in file_peers
            if peer == "library" or scenario.peer_counts is None or n in scenario.peer_counts
        ]
        # The same image in every request: encoded once, then served from the cache.
        if "library" in file_peers:
            runs += [("library", f"library-shared@{n}", n, 1) for n in scenario.shared_counts]
        for peer, name, count, distinct in runs:
            out[name] = _memory_run(scenario, peer, images, count, distinct, workdir)
            log(f"  {name:20} {_brief_memory(out[name])}")
    script = ROOT / "benchmarks" / "bulk_memory.py"
    if "cli" in peers and script.exists():
        # The CLI engineer's measurement of ``qwen-edit run`` (its own manifest: one shared
        # small image), run at this scenario's largest count and concurrency.
        lines = max(scenario.counts)
        result_path = workdir / "cli.json"
        cmd = [PYTHON, str(script), "--lines", str(lines), "--concurrency"]
        cmd += [str(scenario.in_flight), "--output", str(result_path)]
        code, stdout, stderr = run_process(cmd, timeout=60 + lines / 40)
        if code is None or not result_path.exists():
            why = "timed out" if code is None else f"exit {code}: {(stderr or stdout)[-800:]}"
            out["cli"] = {"failed": why, "jobs": lines}
        else:
            out["cli"] = json.loads(result_path.read_text())
        log(f"  cli                  {_brief(out['cli'])}")
    return out


def _memory_run(
    scenario: Memory, peer: str, images: Path, count: int, distinct: int, workdir: Path
) -> dict[str, Any]:
    spec = {
        "url": "",
        "provider": scenario.provider,
        "jobs": count,
        "in_flight": scenario.in_flight,
        "record": False,
        "files": {"dir": str(images), "distinct": distinct},
        "rss_checkpoints": [c for c in (1000, 10000, 100000) if c <= count],
    }
    load = os.getloadavg()[0]
    with fake_server(["--latency", str(scenario.latency)], workdir) as fake:
        spec["url"] = fake.url
        cpu0 = fake.cpu_s()
        # Bounded: at least 40 jobs/s (measured: about 100-150 on 2 busy cores) plus slack.
        result = run_peer(
            peer, spec, timeout=60 + count / 40 + count * scenario.image_bytes / 2**24
        )
        fake_cpu = fake.cpu_s() - cpu0
        stats = fake.stats(jobs=False)
    metrics = {
        "peer": peer,
        "jobs": count,
        "distinct_images": distinct,
        "in_flight": scenario.in_flight,
        "ok": result.get("ok", 0),
        "errors": result.get("errors"),
        "first_error": result.get("first_error"),
        "failed": result.get("failed"),
        "timed_out": bool(result.get("timed_out")),
        "jobs_created": stats["jobs_created"],
        "fake_cpu_ms_per_job": 1000 * fake_cpu / max(1, stats["jobs_created"]),
        "load_before": load,
    }
    if "wall_s" in result:
        metrics.update(
            {
                "wall_s": result["wall_s"],
                "jobs_per_s": result["ok"] / result["wall_s"],
                "cpu_ms_per_job": 1000 * result["cpu_s"] / max(1, result["ok"]),
                "peak_rss_mb": result["peak_rss_mb"],
                "rss_idle_mb": result["rss_idle_mb"],
                "rss_samples": result.get("rss_samples", []),
                "library_file": result.get("library_file"),
                "load_after": os.getloadavg()[0],
            }
        )
    return metrics


def _brief_memory(m: Mapping[str, Any]) -> str:
    if m.get("failed"):
        return f"FAILED: {m['failed']}"
    return (
        f"{m['jobs_per_s']:.0f} jobs/s, {m['cpu_ms_per_job']:.2f} ms CPU/job, peak RSS "
        f"{m['peak_rss_mb']:.0f} MiB (idle {m['rss_idle_mb']:.0f}), errors {m['errors']}"
    )


def run_payload(scenario: Payload, peers: Sequence[str], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    paths = []
    for i in range(scenario.images):
        path = workdir / f"large-{i}.png"
        path.write_bytes(_png_padded(3000, 2000, scenario.image_bytes, seed=10 + i))
        paths.append(str(path))
    # "b64" is its own peer; "library" and "edit" are the library's two views.
    modes = [m for m in scenario.peers if ("b64" if m == "b64" else "library") in peers]
    for mode in modes:
        spec = {"mode": mode, "paths": paths, "repeat": 3, "url": ""}
        if mode == "edit":
            with fake_server(["--latency", "0"], workdir) as fake:
                spec["url"] = fake.url
                result = run_peer("payload", spec, timeout=120)
        else:
            result = run_peer("payload", spec, timeout=120)
        if "peak_rss_mb" in result:
            extra = result["peak_rss_mb"] - result["rss_idle_mb"]
            result["peak_extra_mb"] = extra
            result["peak_over_input"] = extra / (result["input_bytes"] / 2**20)
        if "encode_s" in result and result.get("b64_s"):
            result["encode_over_b64"] = result["encode_s"] / result["b64_s"]
            result["encode_over_read_b64"] = result["encode_s"] / (
                result["b64_s"] + result["read_s"]
            )
        out[mode] = result
        log(f"  {mode:14} {_brief(result)}")
    return out


# -- output ---------------------------------------------------------------------------------


def _targets(scenario: Scenario, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for target in scenario.targets:
        checked = target.check(results)
        met, measured = (None, "not measured") if checked is None else checked
        out.append({"target": target.text, "met": met, "measured": measured})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        choices=list(ALL_PEERS),
        help="run only this peer (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes")
    parser.add_argument("--jobs", type=int, help="override jobs (throughput scenarios)")
    parser.add_argument("--in-flight", type=int, help="override in flight (throughput)")
    parser.add_argument(
        "--latency", type=float, help="override the latency in seconds, or a lognormal's median"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of every peer, interleaved, the median reported (throughput scenarios; "
        "default: the scenario's, 3 for cpu and 1 elsewhere)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "latest.json",
        help="JSON report path (default benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--profile",
        choices=["py-spy", "cprofile"],
        help="profile the library peer of throughput scenarios",
    )
    parser.add_argument(
        "--library-path",
        type=Path,
        help="import qwen_edit_async from this folder in the peers (to "
        "compare a change: before/after); the fake stays this checkout's",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    package = args.library_path / "qwen_edit_async" if args.library_path else None
    if package is not None and not (package / "__init__.py").exists():
        parser.error(f"--library-path: no qwen_edit_async package in {args.library_path}")
    library_path = set_library_path(args.library_path)

    scenarios = select(
        args.scenario,
        quick=args.quick,
        jobs=args.jobs,
        in_flight=args.in_flight,
        latency=args.latency,
        rounds=args.rounds,
    )
    peers = args.peer or list(ALL_PEERS)
    if any(p.endswith("_uvloop") for p in peers) and not _has_uvloop():
        log("uvloop is not installed (pip install 'qwen-edit-async[speed]'): its peers are skipped")
        peers = [p for p in peers if not p.endswith("_uvloop")]
    report: dict[str, Any] = {
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "library_path": library_path,
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="qwen-bench-") as tmp:
        for scenario in scenarios:
            log(f"== {scenario.name}: {scenario.describe()}")
            workdir = Path(tmp) / scenario.name
            workdir.mkdir()
            started = time.monotonic()
            error = None
            try:
                if isinstance(scenario, Throughput):
                    results = run_throughput(scenario, peers, workdir, args.profile)
                elif isinstance(scenario, Memory):
                    results = run_memory(scenario, peers, workdir)
                elif isinstance(scenario, Bulk):
                    results = run_bulk(scenario, peers, workdir)
                else:
                    results = run_payload(scenario, peers, workdir)
            except Exception as exc:  # one broken scenario must not lose the others
                log(f"  scenario failed: {type(exc).__name__}: {exc}")
                results, error = {}, f"{type(exc).__name__}: {exc}"
            report["scenarios"][scenario.name] = {
                "kind": scenario.kind,
                "title": scenario.title,
                "describe": scenario.describe(),
                "seconds": time.monotonic() - started,
                "error": error,
                "peers": results,
                "targets": _targets(scenario, results),
            }
            shutil.rmtree(workdir, ignore_errors=True)
            write_report(args.out, report)  # after each scenario: a long run keeps what it measured
    report["machine"]["loadavg_end"] = os.getloadavg()
    write_report(args.out, report)
    print(markdown(report))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
