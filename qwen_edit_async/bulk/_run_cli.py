"""``qwen-edit run`` behind the argument parser: options, signals, errors, the summary."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from .._config import BASE_URL_ENV, resolve_provider
from .._errors import ManifestError, QwenEditError, ValidationError
from .._logs import setup_logging
from .._loop import run_async
from .._text import printable
from ._admit import error_classes, journaled_error_is
from ._journal import JOURNAL_NAME
from ._progress import format_seconds
from ._report import write_report
from ._results import read_summary
from ._runner import BulkRunner, RunOptions, RunRefused, RunReport

__all__ = ["cmd_run", "execute", "print_report", "resume_hint", "run_with_signals"]

#: Flags that apply to one resume only, left out of the resume command printed.
_ONE_OFF = ("--resume", "--retry-uncertain", "--retry-failed")
#: Failed jobs ``--retry-failed`` leaves alone unless named: resending cannot help them.
_NOT_RETRIED: tuple[type[QwenEditError], ...] = (ValidationError, ManifestError)


def resume_hint(argv: Sequence[str]) -> str:
    """The command that resumes a run (its own arguments plus ``--resume``), for a shell."""
    words: list[str] = []
    skip_value = False
    for word in argv:
        if skip_value and not word.startswith("-"):
            skip_value = False
            continue
        skip_value = word == "--retry-failed"
        if word.split("=", 1)[0] not in _ONE_OFF:
            words.append(word)
    return "qwen-edit " + shlex.join([*words, "--resume"])


def retry_filter(text: str) -> Callable[[str | None], bool]:
    """Which failed jobs ``--retry-failed[=TYPE,...]`` requeues, by their error type.

    >>> retry_filter("")("ServerError"), retry_filter("")("ValidationError")
    (True, False)
    >>> retry_filter("APIError")("AuthenticationError")
    True
    """
    classes = error_classes()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        return lambda error_type: not journaled_error_is(error_type, _NOT_RETRIED)
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise ValueError(
            f"--retry-failed: unknown error type(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(classes))}"
        )
    chosen = tuple(classes[name] for name in names)

    def accepts(error_type: str | None) -> bool:
        cls = classes.get(error_type or "")
        return cls is not None and issubclass(cls, chosen)

    return accepts


def _journal_settings(out: str) -> dict[str, str]:
    """The provider and model a run in ``out`` used (empty when there is none)."""
    path = Path(out) / JOURNAL_NAME
    if not path.is_file():
        return {}
    try:
        return read_summary(path, limit=0).meta
    except sqlite3.Error:
        return {}


async def run_with_signals(runner: BulkRunner) -> RunReport:
    """``runner.run()`` with Ctrl-C (and SIGTERM) asking it to stop cleanly."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, runner.request_stop)
            installed.append(sig)
    try:
        return await runner.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def print_report(report: RunReport, options: RunOptions, out: IO[str]) -> None:
    """The summary of a run: counts per outcome, images saved, wall time, what next.

    Provider text (error messages) is printed with its control characters escaped.
    """
    total = "?" if report.total is None else report.total
    print(
        f"{report.succeeded} succeeded, {report.failed} failed, {report.uncertain} uncertain "
        f"(of {total} jobs) in {format_seconds(report.wall)} ({report.wall:.1f} s)",
        file=out,
    )
    where = options.out / "images"
    print(printable(f"images saved: {report.images} in {where}"), file=out)
    if report.results is not None:
        print(printable(f"results: {report.results}"), file=out)
    if report.failed or report.uncertain:
        summary = read_summary(options.out / JOURNAL_NAME, limit=10)
        for job_id, error_type, message in summary.failures:
            print(f"  {printable(job_id)}: {printable(error_type)}: {printable(message)}", file=out)
        print(
            printable(f"all failures: qwen-edit status {shlex.quote(str(options.out))}"), file=out
        )
    if report.uncertain:
        print(
            "uncertain jobs may exist (and be billed) at the provider; to resubmit them: "
            f"{printable(options.resume_hint)} --retry-uncertain",
            file=out,
        )
    if report.over_budget:
        print(
            f"{report.over_budget} job(s) left queued, not sent: they would have taken this "
            f"run past --max-images {options.max_images}; to send them: "
            f"{printable(_without_budget(options.resume_hint))} (add a new --max-images N "
            "to cap them)",
            file=out,
        )
    if report.stopped is not None:
        print(
            f"stopped: {printable(report.stopped)}; {report.queued} job(s) not sent stay "
            f"queued. Fix the cause, then resume: {printable(options.resume_hint)}",
            file=out,
        )
    elif report.interrupted:
        print(f"interrupted; to resume: {printable(options.resume_hint)}", file=out)
    write_report_line(options.out, out)
    out.flush()


def _without_budget(command: str) -> str:
    """``command`` without its ``--max-images`` option."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--max-images":
            skip = True
        elif not word.startswith("--max-images="):
            kept.append(word)
    return shlex.join(kept)


def write_report_line(folder: Path, out: IO[str]) -> None:
    """Write ``folder/report.html`` and say where (a failure is one line, never fatal)."""
    try:
        print(printable(f"report: {write_report(folder)}"), file=out)
    except (OSError, sqlite3.Error) as exc:
        print(printable(f"report not written: {type(exc).__name__}: {exc}"), file=out)


def _fatal_leaf(error: BaseException) -> BaseException | None:
    """The disk or journal error inside ``error`` (task groups wrap it in a group)."""
    if isinstance(error, (OSError, sqlite3.Error)):
        return error
    inner_errors = getattr(error, "exceptions", None)  # an exception group (3.10 has none)
    if isinstance(inner_errors, (list, tuple)):
        for inner in inner_errors:
            found = _fatal_leaf(inner)
            if found is not None:
                return found
    return None


def execute(options: RunOptions, *, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``options`` in a new event loop, print the report; return the exit status."""
    runner = BulkRunner(options, stderr=stderr)
    try:
        report = run_async(run_with_signals(runner))
    except RunRefused as exc:
        print(f"qwen-edit: {printable(exc)}", file=stderr)
        return 2
    except KeyboardInterrupt:  # no signal handlers on this platform
        print(f"interrupted; to resume: {printable(options.resume_hint)}", file=stderr)
        return 130
    except BaseException as exc:
        # A full disk, a read-only folder, a damaged journal: the run cannot go on, and the
        # journal holds every step committed so far, so a resume continues from there.
        cause = _fatal_leaf(exc)
        if cause is None:
            raise
        text = " ".join(str(cause).split())
        print(
            f"qwen-edit: the run stopped: {type(cause).__name__}: {printable(text)}; "
            f"fix it, then resume: {printable(options.resume_hint)}",
            file=stderr,
        )
        return 2
    print_report(report, options, stdout)
    return report.exit_code


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``qwen-edit run``: build the options from ``args`` and run them."""
    if (args.retry_uncertain or args.retry_failed is not None) and not args.resume:
        print(
            "qwen-edit: --retry-uncertain and --retry-failed only apply with --resume",
            file=sys.stderr,
        )
        return 2
    try:
        retry_failed = None if args.retry_failed is None else retry_filter(args.retry_failed)
    except ValueError as exc:
        print(f"qwen-edit: {exc}", file=sys.stderr)
        return 2
    provider, model = args.provider, args.model
    if args.resume and provider is None:
        # The journal's provider and model, so that a bare --resume continues the run; never
        # its base URL: the key goes only where the command line (or the provider) says.
        meta = _journal_settings(args.out)
        provider = meta.get("provider")
        model = model or meta.get("model")
    base_url = args.base_url
    if base_url is None and provider is None:
        base_url = os.environ.get(BASE_URL_ENV) or None  # checked like --base-url
    options = RunOptions(
        manifest=Path(args.manifest),
        out=Path(args.out),
        provider=provider or str(resolve_provider(None)),  # QWEN_EDIT_PROVIDER, else dashscope
        base_url=base_url,
        model=model,
        concurrency=args.concurrency,
        resume=args.resume,
        retry_uncertain=args.retry_uncertain,
        download=args.download,
        job_timeout=args.job_timeout,
        upload_url=args.upload_url,
        shared=args.shared,
        progress=args.progress,
        progress_interval=args.progress_interval,
        grace=args.grace,
        retry_failed=retry_failed,
        submit_rate=args.submit_rate,
        allow_changed_manifest=args.allow_changed_manifest,
        resume_hint=resume_hint(argv),
        max_images=args.max_images,
        callback_url=args.callback_url,
        **({"callback_listen": args.callback_listen} if args.callback_listen else {}),
    )
    if args.callback_listen and not args.callback_url:
        print("qwen-edit: --callback-listen needs --callback-url", file=sys.stderr)
        return 2
    handler = setup_logging(args)
    try:
        return execute(options, stdout=sys.stdout, stderr=sys.stderr)
    finally:
        if handler is not None:
            logging.getLogger("qwen_edit_async").removeHandler(handler)
            handler.close()
