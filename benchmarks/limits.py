"""Hidden provider limits: the library's learned limits against fixed ones, in one run.

```bash
python -m benchmarks.limits            # every scenario (about 8 min on 2 cores)
python -m benchmarks.limits --quick    # scaled down
python -m benchmarks.limits --scenario quota --scenario rate
```

Each scenario starts the fake provider in its own process with limits the clients are not
told (``--max-running``, ``--max-rate``/``--burst``), then runs each peer in its own
process, one after another (the Redis scenario: four at once), against a fresh fake:

- ``library``: ``QwenEditClient`` with its default settings (learned limits) and the
  scenario's ``max_in_flight``;
- ``fixed-64`` and ``hand-tuned``: the same client with ``adaptive_limits=False`` and
  ``max_in_flight`` 64, and the number a user who knew the quota would pick.

It prints a markdown table per scenario and writes ``benchmarks/results/limits.json``.
Targets (from the issue): quota 8, 0.5 s, ``max_in_flight=64``, 400 jobs: >= 90% of
16 jobs/s with <= 5% of creates refused; 5 requests/s with a burst guard: >= 90% of 5 jobs/s,
<= 5% refused; quota 8 -> 16 -> 4: within 10% of the new ideal within 10 s; four processes
sharing Redis against quota 8: peak <= 8, <= 5% refused, >= 85% of ideal, and a process
killed with -9 gives its slots back within the lease TTL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

from benchmarks.processes import PYTHON, RESULTS, ROOT, Fake, log

IMAGE_URL = "https://example.com/photo.png"
LATENCY = 0.5


# -- a peer: one client process ------------------------------------------------------------


async def _peer(spec: dict[str, Any]) -> dict[str, Any]:
    import qwen_edit_async as qe

    options: dict[str, Any] = {"job_timeout": None, **spec.get("options", {})}
    done: list[float] = []
    failed: dict[str, int] = {}
    requests = (qe.EditRequest(images=[IMAGE_URL], prompt="p") for _ in range(spec["jobs"]))
    async with qe.QwenEditClient(
        "vtrix", api_key=spec.get("key", "bench"), base_url=spec["url"], **options
    ) as client:
        start = time.time()
        print(json.dumps({"started": start}), flush=True)
        async for outcome in client.edit_many(requests):
            if outcome.ok:
                done.append(time.time())
            else:
                name = type(outcome.error).__name__
                failed[name] = failed.get(name, 0) + 1
        stats = client.statistics()
    return {
        "start": start,
        "done": done,
        "failed": failed,
        "in_flight_limit": stats.in_flight_limit,
        "submit_rate_limit": stats.submit_rate_limit,
        "rate_limited": stats.rate_limited,
    }


def _start_peer(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1"}
    return subprocess.Popen(
        [PYTHON, "-m", "benchmarks.limits", "--peer", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _finish_peer(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {err.strip()[-800:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- measuring -----------------------------------------------------------------------------


def _post(fake: Fake, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(fake.url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()


def _summary(results: list[dict[str, Any]], stats: dict[str, Any], ideal: float) -> dict[str, Any]:
    done = sorted(t for r in results for t in r.get("done", ()))
    start = min((r["start"] for r in results if "start" in r), default=0.0)
    elapsed = (done[-1] - start) if done else float("nan")
    rate = len(done) / elapsed if done else 0.0
    creates = stats["creates"]
    refused = stats["refused_concurrency"] + stats["refused_rate"]
    failed: dict[str, int] = {}
    for r in results:
        for name, count in r.get("failed", {}).items():
            failed[name] = failed.get(name, 0) + count
    return {
        "ok": len(done),
        "failed": failed,
        "errors": [r["error"] for r in results if "error" in r],
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(rate, 2),
        "pct_ideal": round(100 * rate / ideal, 1),
        "creates": creates,
        "refused": refused,
        "pct_refused": round(100 * refused / creates, 1) if creates else 0.0,
        "peak_running": stats["peak_running"],
        "learned": [(r.get("in_flight_limit"), r.get("submit_rate_limit")) for r in results],
    }


def _table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"### {title}",
        "",
        "| peer | jobs ok | failed | s | jobs/s | % of ideal | creates | 429 | % refused "
        "| peak running | learned (in flight, rate) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if r.get("errors"):
            lines.append(f"| {name} | {r['errors'][0]} |")
            continue
        failed = sum(r["failed"].values())
        lines.append(
            f"| {name} | {r['ok']} | {failed} | {r['seconds']} | {r['jobs_per_s']} | "
            f"{r['pct_ideal']}% | {r['creates']} | {r['refused']} | {r['pct_refused']}% | "
            f"{r['peak_running']} | {r['learned']} |"
        )
    return "\n".join(lines)


PEERS: dict[str, dict[str, Any]] = {
    "library": {"max_in_flight": 64},
    "fixed-64": {"max_in_flight": 64, "adaptive_limits": False},
}


def _one(
    fake_args: list[str], jobs: int, options: dict[str, Any], ideal: float, workdir: Path
) -> dict[str, Any]:
    fake = Fake(fake_args, workdir)
    try:
        proc = _start_peer({"url": fake.url, "jobs": jobs, "options": options})
        result = _finish_peer(proc, timeout=30 + 3 * jobs / ideal)
        return _summary([result], fake.stats(jobs=False), ideal)
    finally:
        fake.stop()


def quota(quick: bool, workdir: Path) -> dict[str, Any]:
    jobs = 120 if quick else 400
    args = ["--latency", str(LATENCY), "--max-running", "8", "--no-estimated-time"]
    peers = {**PEERS, "hand-tuned-8": {"max_in_flight": 8, "adaptive_limits": False}}
    rows = {}
    for name, options in peers.items():
        log(f"quota: {name}")
        rows[name] = _one(args, jobs, options, 8 / LATENCY, workdir)
    return rows


def rate(quick: bool, workdir: Path) -> dict[str, Any]:
    jobs = 60 if quick else 150
    args = ["--latency", str(LATENCY), "--max-rate", "5", "--burst", "2", "--no-estimated-time"]
    peers: dict[str, dict[str, Any]] = {
        **PEERS,
        "hand-tuned-5/s": {"submit_rate": 5.0, "adaptive_limits": False},
    }
    rows = {}
    for name, options in peers.items():
        log(f"rate: {name}")
        rows[name] = _one(args, jobs, options, 5.0, workdir)
    return rows


def change(quick: bool, workdir: Path) -> dict[str, Any]:
    """Quota 8 for 10 s, 16 for 10 s, then 4; the time until the completions of the last
    2 s are within 10% of the new ideal, after each change."""
    phase = 6.0 if quick else 10.0
    plan = [(0.0, 8), (phase, 16), (2 * phase, 4)]
    jobs = int(sum(q / LATENCY * phase for _, q in plan) * 1.05)
    peers = {**PEERS, "hand-tuned-8": {"max_in_flight": 8, "adaptive_limits": False}}
    rows: dict[str, Any] = {}
    for name, options in peers.items():
        log(f"change: {name}")
        fake = Fake(["--latency", str(LATENCY), "--max-running", "8", "--no-estimated-time"],
                    workdir)  # fmt: skip
        try:
            proc = _start_peer({"url": fake.url, "jobs": jobs, "options": options})
            assert proc.stdout is not None
            start = json.loads(proc.stdout.readline())["started"]
            for at, quota_ in plan[1:]:
                time.sleep(max(0.0, start + at - time.time()))
                _post(fake, "/_fake/config", {"max_running": quota_})
            result = _finish_peer(proc, timeout=120)
            stats = fake.stats(jobs=False)
        finally:
            fake.stop()
        row = _summary([result], stats, 8 / LATENCY)
        done = sorted(result.get("done", ()))
        row["recovery_s"] = [
            _recovery(done, start + at, quota_ / LATENCY) for at, quota_ in plan[1:]
        ]
        rows[name] = row
    return rows


def _recovery(done: list[float], since: float, ideal: float) -> float | None:
    """Seconds after ``since`` until the last 2 s of completions are within 10% of ideal."""
    window = 2.0
    t = since + window
    while t < (done[-1] if done else since):
        count = sum(1 for d in done if t - window < d <= t)
        if abs(count / window - ideal) <= 0.1 * ideal:
            return round(t - since, 1)
        t += 0.25
    return None


def shared(quick: bool, workdir: Path) -> dict[str, Any]:
    """Four processes on one key against quota 8; then the same with one killed by -9."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _redis_support import redis_server  # type: ignore[import-not-found]

    per = 30 if quick else 100
    rows: dict[str, Any] = {}
    args = ["--latency", str(LATENCY), "--max-running", "8", "--no-estimated-time"]
    with redis_server() as server:
        variants: dict[str, dict[str, Any]] = {
            "library+shared": {"max_in_flight": 64, "lease_ttl": 3.0},
            "library alone": {"max_in_flight": 64},
            "fixed-64": {"max_in_flight": 64, "adaptive_limits": False},
            "hand-tuned-2": {"max_in_flight": 2, "adaptive_limits": False},
        }
        for name, options in variants.items():
            log(f"shared: {name}")
            fake = Fake(args, workdir)
            try:
                spec = {"url": fake.url, "jobs": per, "options": options}
                if name == "library+shared":
                    spec["options"] = {**options, "shared": server.url}
                procs = [_start_peer(spec) for _ in range(4)]
                deadline = time.monotonic() + 30 + 3 * 4 * per / 16
                results = [_finish_peer(p, max(1.0, deadline - time.monotonic())) for p in procs]
                rows[name] = _summary(results, fake.stats(jobs=False), 8 / LATENCY)
            finally:
                fake.stop()
        log("shared: one of four killed with -9")
        rows["library+shared, one killed"] = _killed(server.url, per, args, workdir)
    return rows


def _killed(redis_url: str, per: int, args: list[str], workdir: Path) -> dict[str, Any]:
    import redis

    ttl = 3.0
    fake = Fake(args, workdir)
    conn = redis.Redis.from_url(redis_url)
    try:
        options = {"max_in_flight": 64, "lease_ttl": ttl, "shared": redis_url}
        spec = {"url": fake.url, "jobs": per, "key": "bench-kill", "options": options}
        procs = [_start_peer(spec) for _ in range(4)]
        victim = procs[0]
        time.sleep(4.0 if per < 50 else 6.0)

        def held(pid: int) -> int:
            seconds, micros = conn.time()
            now = seconds * 1000 + micros // 1000
            keys = [k for k in conn.scan_iter("qwen-edit:*:leases")]
            live = [
                cast(
                    "list[tuple[bytes, float]]", conn.zrangebyscore(k, now, "+inf", withscores=True)
                )
                for k in keys
            ]
            return sum(
                1 for pairs in live for member, _ in pairs if member.decode().startswith(f"{pid}-")
            )

        before = held(victim.pid)
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        returned = None
        while time.monotonic() - killed < ttl + 5:
            if held(victim.pid) == 0:
                returned = round(time.monotonic() - killed, 2)
                break
            time.sleep(0.05)
        results = [_finish_peer(p, timeout=120) for p in procs[1:]]
        row = _summary(results, fake.stats(jobs=False), 8 / LATENCY)
        row.update(victim_leases=before, returned_after_s=returned, lease_ttl=ttl)
        row["others_ok"] = f"{row['ok']} of {3 * per}"
        return row
    finally:
        conn.close()
        fake.stop()


SCENARIOS = {"quota": quota, "rate": rate, "change": change, "shared": shared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        print(json.dumps(asyncio.run(_peer(json.loads(args.peer)))), flush=True)
        return
    report: dict[str, Any] = {"cpus": os.cpu_count(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="qwen-limits-") as tmp:
        for name in args.scenario or list(SCENARIOS):
            rows = SCENARIOS[name](args.quick, Path(tmp))
            report[name] = rows
            print(_table(name, rows) + "\n", flush=True)
            for peer, row in rows.items():
                shown = ("recovery_s", "victim_leases", "returned_after_s", "others_ok")
                extra = {k: row[k] for k in shown if k in row}
                if extra:
                    print(f"- {peer}: {extra}", flush=True)
            print(flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "limits.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
