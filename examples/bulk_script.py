"""Edit every image of a folder with one prompt, many at a time, with a progress bar.

    python examples/bulk_script.py photos/ --prompt "Make it a watercolour"   # fake provider
    python examples/bulk_script.py photos/ --prompt "..." --provider dashscope-intl \\
        --base-url https://dashscope-intl.aliyuncs.com --concurrency 8 --out edited/

With no base URL (``--base-url`` or ``QWEN_EDIT_BASE_URL``) it runs against an in-process
fake provider, so it works anywhere without a key. The bar is rich's when rich is installed
(and ``--plain`` is not given), else one plain line per tenth of the work. Exit code 0 when
every image was edited (and saved, with ``--out``), 1 otherwise.

``client.edit_many`` does the fan-out: it reads the folder lazily, keeps at most
``--concurrency`` jobs in flight, and yields each outcome as it ends; one failure never
stops the others. For runs that must survive a crash, use the ``qwen-edit run`` CLI (it
journals every job).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Edit every image of a folder.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--prompt", default="Make it a watercolour painting")
    parser.add_argument("--provider", default=os.environ.get("QWEN_EDIT_PROVIDER", "dashscope"))
    parser.add_argument("--base-url", default=os.environ.get("QWEN_EDIT_BASE_URL"))
    parser.add_argument("--concurrency", type=int, default=16, help="jobs in flight (16)")
    parser.add_argument("--out", type=Path, help="save the results here")
    parser.add_argument("--plain", action="store_true", help="plain lines, not a rich bar")
    return parser.parse_args(argv)


def requests(files: list[Path], prompt: str, skipped: list[str]) -> Iterator[qe.EditRequest]:
    """One request per file, built lazily; a file the API would refuse is skipped, not fatal."""
    for path in files:
        try:
            yield qe.EditRequest(images=[path], prompt=prompt)
        except qe.ValidationError as exc:
            skipped.append(f"{path.name}: skipped: {exc}")


class PlainBar:
    """One line per tenth of the work (and at the end): fine in logs and CI."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.step = max(1, total // 10)
        self.start = time.monotonic()

    def __enter__(self) -> PlainBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, ok: bool, in_flight: int) -> None:
        self.done += 1
        self.failed += not ok
        if self.done % self.step == 0 or self.done == self.total:
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            print(
                f"[{self.done:>{len(str(self.total))}}/{self.total}] {self.failed} failed, "
                f"{in_flight} in flight, {rate:.1f}/s",
                flush=True,
            )


class RichBar:
    """rich's progress bar: done/total, failed, in flight, rate and ETA."""

    def __init__(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("editing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed, {task.fields[in_flight]} in flight"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("edit", total=total, failed=0, in_flight=0)
        self.failed = 0

    def __enter__(self) -> RichBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, ok: bool, in_flight: int) -> None:
        self.failed += not ok
        self.progress.update(self.task, advance=1, failed=self.failed, in_flight=in_flight)


def make_bar(total: int, plain: bool) -> PlainBar | RichBar:
    if not plain:
        with contextlib.suppress(ImportError):
            return RichBar(total)
    return PlainBar(total)


async def run(args: argparse.Namespace) -> int:
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        print(f"no images in {args.folder}", file=sys.stderr)
        return 1
    async with contextlib.AsyncExitStack() as stack:
        options: dict[str, Any] = {}
        if args.base_url is None:
            fake = await stack.enter_async_context(FakeProvider(latency=0.1))
            args.base_url = fake.url
            options = {"api_key": "fake-key", "uploader": fake.uploader}  # Evolink takes URLs
            print(f"no --base-url: using a fake provider at {fake.url}")
        client = await stack.enter_async_context(
            qe.QwenEditClient(
                args.provider, base_url=args.base_url, max_in_flight=args.concurrency, **options
            )
        )
        skipped: list[str] = []
        failures: list[str] = []
        edited = 0
        start = time.monotonic()

        async def save(name: str, result: qe.EditResult) -> None:
            try:
                await client.download(result, args.out, stem=Path(name).stem)
            except qe.QwenEditError as exc:
                failures.append(f"{name}: not saved: {type(exc).__name__}: {exc}")

        # aclosing: leaving the loop early (Ctrl-C, an error) cancels the jobs at once.
        outcomes = client.edit_many(requests(files, args.prompt, skipped))
        closing = contextlib.aclosing(outcomes)
        with make_bar(len(files), args.plain) as bar:
            async with anyio.create_task_group() as downloads, closing:
                async for outcome in outcomes:
                    name = Path(str(outcome.request.images[0])).name
                    if outcome.result is not None:
                        edited += 1
                        if args.out is not None:
                            downloads.start_soon(save, name, outcome.result)
                    else:
                        error = outcome.error
                        failures.append(f"{name}: {type(error).__name__}: {error}")
                    bar.update(outcome.ok, client.statistics().in_flight)
            for _ in skipped:
                bar.update(False, 0)
    elapsed = time.monotonic() - start
    for line in skipped + failures:
        print(line)
    print(
        f"{edited} edited, {len(failures)} failed, {len(skipped)} skipped "
        f"of {len(files)} in {elapsed:.1f} s"
    )
    return 0 if not failures and not skipped else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
