"""Peak memory of ``qwen-edit run`` over a 100,000-line manifest: it should stay flat.

The fake provider runs in another process (tiny latency); the CLI runs as a real subprocess
with high concurrency; its RSS is sampled with psutil while its plain progress lines say how
many jobs are done. The peak RSS reached by 1k, 10k and 100k finished jobs is reported: a
runner that kept per-job state (ids, requests, results) would grow tenfold between the last
two; this one holds only what is in flight.

Usage::

    python benchmarks/bulk_memory.py                      # 100k lines, writes results/
    python benchmarks/bulk_memory.py --lines 20000 --provider vtrix --no-download

Prints a markdown table and writes ``benchmarks/results/bulk_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
_DONE = re.compile(r"\]\s+(\d+)/(\d+|\?) done")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["QWEN_EDIT_API_KEY"] = "bench-key"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _png(width: int, height: int) -> bytes:
    sys.path.insert(0, str(REPO))
    from qwen_edit_async.testing._png import png_bytes

    return png_bytes(width, height, 5)


def write_manifest(folder: Path, lines: int) -> Path:
    """``lines`` edits of one shared image, without ids (each gets its content hash)."""
    (folder / "shared.png").write_bytes(_png(512, 512))
    manifest = folder / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as handle:
        for i in range(lines):
            handle.write(
                f'{{"images": ["shared.png"], "prompt": "edit number {i}", "size": "512*512"}}\n'
            )
    return manifest


def measure(
    lines: int,
    *,
    workdir: Path,
    provider: str = "dashscope",
    concurrency: int = 256,
    latency: float = 0.005,
    download: bool = True,
    checkpoints: tuple[int, ...] = (1_000, 10_000, 100_000),
) -> dict[str, Any]:
    """Run the CLI over ``lines`` edits; return the peak RSS by each checkpoint reached."""
    fake = subprocess.Popen(
        [sys.executable, "-m", "qwen_edit_async.testing", "--port", "0", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().split("serving on ", 1)[1].strip()
        manifest = write_manifest(workdir, lines)
        command = [sys.executable, "-m", "qwen_edit_async", "run", str(manifest)]
        command += ["--out", str(workdir / "out"), "--provider", provider, "--base-url", url]
        command += ["--concurrency", str(concurrency), "--progress", "lines"]
        command += ["--progress-interval", "0.25"] + ([] if download else ["--no-download"])
        started = time.monotonic()
        cli = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        done = [0]

        def follow() -> None:
            assert cli.stderr is not None
            for text in cli.stderr:
                match = _DONE.search(text)
                if match:
                    done[0] = int(match.group(1))

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        process = psutil.Process(cli.pid)
        peak, startup, reached = 0, None, []
        pending = sorted({c for c in checkpoints if c < lines} | {lines})
        while cli.poll() is None:
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                break
            peak = max(peak, rss)
            if startup is None and time.monotonic() - started > 1.0:
                startup = rss
            while pending and done[0] >= pending[0]:
                reached.append(
                    {
                        "done": pending.pop(0),
                        "peak_rss_mb": round(peak / 2**20, 1),
                        "elapsed_s": round(time.monotonic() - started, 1),
                    }
                )
            time.sleep(0.05)
        stdout, _ = cli.communicate()
        reader.join(timeout=5)
        wall = time.monotonic() - started
        for checkpoint in pending:  # reached between the last sample and the exit
            reached.append(
                {
                    "done": checkpoint,
                    "peak_rss_mb": round(peak / 2**20, 1),
                    "elapsed_s": round(wall, 1),
                }
            )
        return {
            "lines": lines,
            "provider": provider,
            "concurrency": concurrency,
            "latency_s": latency,
            "download": download,
            "exit_code": cli.returncode,
            "wall_s": round(wall, 1),
            "jobs_per_s": round(lines / wall, 1),
            "rss_after_1s_mb": round((startup or peak) / 2**20, 1),
            "peak_rss_mb": round(peak / 2**20, 1),
            "checkpoints": reached,
            "summary": stdout.strip().splitlines()[:1],
        }
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=10)


def markdown(result: dict[str, Any]) -> str:
    rows = ["| jobs done | peak RSS (MB) | elapsed (s) |", "|---:|---:|---:|"]
    rows += [
        f"| {c['done']:,} | {c['peak_rss_mb']} | {c['elapsed_s']} |" for c in result["checkpoints"]
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--provider", default="dashscope")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.005)
    parser.add_argument("--no-download", dest="download", action="store_false")
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "bulk_memory.json"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="qwen-edit-bulk-memory-"))
    try:
        result = measure(
            args.lines,
            workdir=workdir,
            provider=args.provider,
            concurrency=args.concurrency,
            latency=args.latency,
            download=args.download,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"qwen-edit run: {result['lines']:,} lines, {result['provider']}, concurrency "
        f"{result['concurrency']}, fake latency {result['latency_s']} s, downloads "
        f"{'on' if result['download'] else 'off'}: {result['wall_s']} s "
        f"({result['jobs_per_s']} jobs/s), exit {result['exit_code']}\n"
    )
    print(markdown(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
