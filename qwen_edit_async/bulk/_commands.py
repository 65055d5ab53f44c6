"""The ``qwen-edit`` subcommands: their options (one function per command, and per group of
``run``'s options, each a declarative table of ``add_argument`` calls) and their handlers.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="qwen-edit")
>>> add_commands(parser.add_subparsers(dest="command", required=True))
>>> parser.parse_args(["status", "out/"]).out
'out/'
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import QwenEditError
from .._logs import add_logging_options
from ..providers import PROVIDERS, get_provider
from ._demo import run_demo
from ._report import write_report
from ._run_cli import cmd_run
from ._status import cmd_status
from ._validate_manifest import check_manifest, print_check

__all__ = ["add_commands"]

_Commands = Any  # argparse's _SubParsersAction (private in typeshed's spelling)

_RUN_EPILOG = """\
The manifest is JSONL, one edit per line; keys other than "id" are EditRequest fields:
  {"id": "cat-1", "images": ["cats/1.png"], "prompt": "Give the cat a red hat", "n": 2}
  {"images": ["https://example.com/sofa.jpg"], "prompt": "Make it blue", "size": "1024*1536"}
Relative image paths are read from the manifest's folder. A line without "id" gets a stable
id from its content. Bad lines are reported with their line number and recorded as failed.

Output in DIR: journal.sqlite3 (every job's state, committed before each step),
images/<id>/0.png, 1.png..., results.jsonl (one line per job: id, status, task_id,
request_id, files, error). The API key comes from QWEN_EDIT_API_KEY, else the provider's
own variable (DASHSCOPE_API_KEY, EVOLINK_API_KEY, ...).

One run at a time per DIR: a second one exits 2 naming the pid that holds it.

Exit status: 0 every job succeeded; 1 some failed or are uncertain; 2 the run could not
start, or stopped on a run-wide error (a wrong key, no quota, the endpoint down, a full
disk, the journal): jobs not sent stay queued and the command to resume is printed;
130 interrupted (Ctrl-C: resume with --resume).

Examples:
  qwen-edit run edits.jsonl --out results/ --provider dashscope-intl --concurrency 8
  qwen-edit run edits.jsonl --out results/ --provider dashscope-intl --resume
  qwen-edit run edits.jsonl --out results/ --provider evolink \\
      --upload-url https://uploads.example.com/put
"""


def add_commands(commands: _Commands) -> None:
    """Add ``run``, ``status``, ``validate``, ``report`` and ``demo`` to ``commands``."""
    _add_run(commands)
    _add_status(commands)
    _add_validate(commands)
    _add_report(commands)
    _add_demo(commands)


def _add_run(commands: _Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run every edit of a JSONL manifest, journaled in DIR",
        description="Run every edit of MANIFEST, download the images into DIR, write\n"
        "DIR/results.jsonl. Safe to kill at any moment: --resume continues without paying twice.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_RUN_EPILOG,
    )
    _run_inputs(run)
    _run_limits(run)
    _run_resume(run)
    _run_requests(run)
    _run_progress(run)
    run.set_defaults(handler=_cmd_run)


def _run_inputs(run: argparse.ArgumentParser) -> None:
    """What to run and against whom."""
    run.add_argument("manifest", metavar="MANIFEST", help="JSONL file, one edit per line")
    run.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (journal, images, results)"
    )
    run.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        help="who runs the edits (default: $QWEN_EDIT_PROVIDER, else dashscope; with --resume, "
        "the journal's provider and model), e.g. --provider evolink",
    )
    run.add_argument(
        "--base-url",
        metavar="URL",
        help="the provider's root URL (default: $QWEN_EDIT_BASE_URL when no --provider is "
        "given either, else the provider's), e.g. --base-url http://127.0.0.1:8000 (a fake)",
    )
    run.add_argument("--model", metavar="M", help="e.g. --model qwen-image-edit-max")


def _run_limits(run: argparse.ArgumentParser) -> None:
    """How much at once."""
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="most edits in flight at once (default: 16); the client learns your "
        "provider's concurrent-task quota below it, e.g. --concurrency 64",
    )
    run.add_argument(
        "--shared",
        metavar="URL",
        help="share the key's limits (jobs in flight, creates per second, 429 pauses) with "
        "every run and process using this Redis, e.g. --shared redis://10.0.0.5:6379/0 "
        "(needs the redis extra)",
    )


def _run_resume(run: argparse.ArgumentParser) -> None:
    """Continuing a run journaled in DIR."""
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run journaled in DIR: finished jobs are skipped, submitted tasks "
        "re-attached (not resubmitted), results not yet saved downloaded",
    )
    run.add_argument(
        "--retry-uncertain",
        action="store_true",
        help="with --resume: resubmit jobs whose submission is uncertain (they may already "
        "exist and be billed at the provider; without this flag they are only reported)",
    )
    run.add_argument(
        "--retry-failed",
        nargs="?",
        const="",
        metavar="TYPE,...",
        help="with --resume: submit failed jobs again (all but ValidationError failures), "
        "or only those whose error is one of TYPE (a class and its subclasses), e.g. "
        "--retry-failed=AuthenticationError,ServerError; without it a failed job is final",
    )
    run.add_argument(
        "--allow-changed-manifest",
        action="store_true",
        help="with --resume: accept a manifest that differs from the one the run started "
        "with (new ids are added; lines changed since keep their journaled state and are "
        "reported); without it such a resume is refused, naming the first difference",
    )


def _run_requests(run: argparse.ArgumentParser) -> None:
    """How edits are sent and their results saved."""
    run.add_argument(
        "--submit-rate",
        type=_positive_float,
        metavar="R",
        help="creates per second at most (default: no cap), e.g. --submit-rate 2 for a "
        "provider that allows 120 submissions a minute",
    )
    run.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="do not save images (their URLs, valid about 24 h, stay in the journal)",
    )
    run.add_argument(
        "--job-timeout",
        type=_non_negative_float,
        metavar="S",
        help="seconds per job from its start to its result (default: 600; 0: no limit); a "
        "job past it is failed but keeps its task id, and --resume attaches to it again",
    )
    run.add_argument(
        "--upload-url",
        metavar="URL",
        help="URL-only providers (evolink) with local images: POST each image's bytes here "
        'and use the {"url": ...} it answers; for the fake provider: --upload-url '
        "http://127.0.0.1:PORT/_fake/upload",
    )
    run.add_argument(
        "--callback-url",
        metavar="URL",
        help="Evolink: have each task POST its end to URL/<token> (a public https URL that "
        "reaches --callback-listen); jobs end at once, polling only catches lost callbacks",
    )
    run.add_argument(
        "--callback-listen",
        type=_host_port,
        metavar="HOST:PORT",
        help="where the callback receiver listens, behind the proxy or tunnel serving "
        "--callback-url (default: 127.0.0.1:8080)",
    )


def _run_progress(run: argparse.ArgumentParser) -> None:
    """Progress, budget, stopping and logs."""
    run.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="auto (default): a live bar on a terminal, plain lines otherwise",
    )
    run.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="seconds between plain progress lines (default: 5)",
    )
    run.add_argument(
        "--max-images",
        type=_positive_int,
        metavar="N",
        help="a budget: never send a job that would take the images this invocation asks "
        "for (the sum of n) past N; such jobs stay queued for a later --resume, e.g. "
        "--max-images 500",
    )
    run.add_argument(
        "--grace",
        type=_non_negative_float,
        default=10.0,
        metavar="S",
        help="after Ctrl-C, seconds that creates and downloads in flight get to be recorded "
        "(default: 10)",
    )
    add_logging_options(run)


def _add_status(commands: _Commands) -> None:
    status = commands.add_parser(
        "status",
        help="counts and failures of the run journaled in DIR",
        description="Show the counts per status and the failures of the run in DIR.",
    )
    status.add_argument("out", metavar="DIR", help="the --out folder of a run")
    status.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="failures to list (default: 50; 0: all)",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: the run's settings, the jobs per state and the "
        "failures per error type",
    )
    status.set_defaults(handler=_cmd_status)


def _add_validate(commands: _Commands) -> None:
    validate = commands.add_parser(
        "validate",
        help="check every line of a manifest against a provider's rules; sends nothing",
        description="Read every line of MANIFEST and every local image it names, and check "
        "them as PROVIDER would take them. Prints the number of jobs, the images they would "
        "generate, every invalid line with its reason, and a cost estimate. Nothing is sent: "
        "no request, no upload. Exit status: 0 every line is valid; 1 some are not; 2 the "
        "manifest cannot be read.",
    )
    validate.add_argument("manifest", metavar="MANIFEST", help="the JSONL file of a run")
    validate.add_argument(
        "--provider", required=True, choices=sorted(PROVIDERS), help="e.g. --provider evolink"
    )
    validate.add_argument("--model", metavar="M", help="e.g. --model qwen-image-edit")
    validate.add_argument(
        "--upload-url",
        metavar="URL",
        help="the run will upload local images here (URL-only providers); not contacted",
    )
    validate.add_argument(
        "--price-per-image",
        type=_non_negative_float,
        metavar="X",
        help="print a cost estimate: images x X, e.g. --price-per-image 0.03",
    )
    validate.set_defaults(handler=_cmd_validate)


def _add_report(commands: _Commands) -> None:
    report = commands.add_parser(
        "report",
        help="write DIR/report.html: the run's edits side by side, for review",
        description="Write DIR/report.html: one self-contained page (no network) with the "
        "run's summary, its failures grouped by error type, and a grid of jobs (input "
        "thumbnails, output thumbnails, prompt, size, status) filtered by status. 'run' "
        "writes it too when it ends.",
    )
    report.add_argument("out", metavar="DIR", help="the --out folder of a run")
    report.set_defaults(handler=_cmd_report)


def _add_demo(commands: _Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="a small bulk run against a built-in fake provider (no key, no network)",
        description="Start the fake provider in this process, make a few input images, and "
        "run a few dozen edits through 'qwen-edit run' with its progress bar.",
    )
    demo.add_argument(
        "--out",
        default="qwen-edit-demo",
        metavar="DIR",
        help="folder for the demo (default: ./qwen-edit-demo); each demo uses a new "
        "subfolder of it",
    )
    demo.add_argument("--jobs", type=_positive_int, default=36, help="edits to run (36)")
    demo.add_argument(
        "--progress", choices=("auto", "bar", "lines", "none"), default="auto", help="as for run"
    )
    demo.set_defaults(handler=_cmd_demo)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]"), int(port)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


# -- handlers: ``handler(args, argv) -> exit status`` --------------------------------------


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    return cmd_run(args, argv)


def _cmd_status(args: argparse.Namespace, argv: Sequence[str]) -> int:
    return cmd_status(args)


def _cmd_demo(args: argparse.Namespace, argv: Sequence[str]) -> int:
    return run_demo(Path(args.out), jobs=args.jobs, progress=args.progress)


def _cmd_validate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    try:
        provider = get_provider(args.provider, model=args.model)
        check = check_manifest(
            args.manifest, provider, model=args.model, has_uploader=args.upload_url is not None
        )
    except (OSError, QwenEditError) as exc:
        print(f"qwen-edit: cannot read manifest {args.manifest}: {exc}", file=sys.stderr)
        return 2
    print_check(check, args.manifest, sys.stdout, price_per_image=args.price_per_image)
    return 0 if check.ok else 1


def _cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    try:
        path = write_report(Path(args.out))
    except FileNotFoundError as exc:
        print(f"qwen-edit: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"qwen-edit: report not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
