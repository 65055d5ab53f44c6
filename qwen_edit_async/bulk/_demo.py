"""``qwen-edit demo``: a small bulk run against the fake provider, in this process."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .._loop import run_async
from ._progress import ProgressMode
from ._run_cli import print_report, run_with_signals
from ._runner import BulkRunner, RunOptions, RunRefused, RunReport

__all__ = ["run_demo", "write_demo_inputs"]

_DEMO_INPUTS = (("cat.png", 640, 480, 3), ("sofa.png", 768, 512, 12), ("hat.png", 512, 512, 20))
_DEMO_PROMPTS = (
    "Give the cat in image 1 a red hat",
    "Put the cat from image 1 on the sofa from image 2",
    "Make image 1 a watercolour painting",
    "Put the hat from image 3 on the cat from image 1",
    "Turn the sofa in image 2 dark green, keep everything else",
    "Replace the background of image 1 with a beach at sunset",
)


def _new_demo_folder(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for number in range(1, 100_000):
        folder = base / f"run-{number}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RunRefused(f"{base} holds too many demo runs; remove some")


def write_demo_inputs(folder: Path, jobs: int) -> Path:
    """Real PNG inputs and a manifest of ``jobs`` edits in ``folder``; return the manifest."""
    from ..testing import png_bytes

    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name, width, height, colour in _DEMO_INPUTS:
        (inputs / name).write_bytes(png_bytes(width, height, colour))
    manifest = folder / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as handle:
        for index in range(jobs):
            prompt = _DEMO_PROMPTS[index % len(_DEMO_PROMPTS)]
            images = ["inputs/cat.png"]
            if "image 2" in prompt:
                images.append("inputs/sofa.png")
            if "image 3" in prompt:
                images += ["inputs/sofa.png", "inputs/hat.png"][-(3 - len(images)) :]
            line: dict[str, Any] = {"id": f"demo-{index + 1:03d}", "images": images}
            line["prompt"] = prompt
            if index % 3 == 0:
                line["n"] = 2
            if index % 4 == 1:
                line["size"] = "768*1024"
            handle.write(json.dumps(line) + "\n")
    return manifest


def run_demo(base: Path, *, jobs: int = 36, progress: ProgressMode = "auto") -> int:
    """``qwen-edit demo``: a bulk run against the fake provider, in this process."""
    from ..testing import FakeProvider, Latency

    try:
        folder = _new_demo_folder(base.resolve())
    except (OSError, RunRefused) as exc:
        print(f"qwen-edit demo: cannot use {base}: {exc}", file=sys.stderr)
        return 2
    manifest = write_demo_inputs(folder, jobs)
    out = folder / "out"
    print(
        f"qwen-edit demo: {jobs} edits of {len(_DEMO_INPUTS)} input images against a fake "
        "provider on 127.0.0.1 (no API key, no network)"
    )
    print(f"manifest: {manifest}")

    async def demo() -> tuple[RunReport, RunOptions]:
        async with FakeProvider(latency=Latency.lognormal(median=0.6, sigma=0.4)) as fake:
            options = RunOptions(
                manifest=manifest,
                out=out,
                provider="vtrix",
                base_url=fake.url,
                upload_url=fake.upload_url,
                api_key="demo-key",
                concurrency=12,
                progress=progress,
                progress_interval=2.0,
                grace=2.0,
                resume_hint=f"qwen-edit run {manifest} --out {out} --provider vtrix "
                f"--base-url {fake.url} --resume (with the fake still running)",
            )
            runner = BulkRunner(options, stderr=sys.stderr)
            return await run_with_signals(runner), options

    try:
        report, options = run_async(demo())
    except RunRefused as exc:
        print(f"qwen-edit demo: {exc}", file=sys.stderr)
        return 2
    print_report(report, options, sys.stdout)
    print(f"outputs: {out / 'images'} (one folder per edit); inputs: {folder / 'inputs'}")
    print(f"see the journal: qwen-edit status {shlex.quote(str(out))}")
    return report.exit_code
