"""``qwen-edit``: bulk image edits from the command line (also ``python -m qwen_edit_async``).

::

    qwen-edit run edits.jsonl --out results/ --provider evolink     # a crash-safe bulk run
    qwen-edit run edits.jsonl --out results/ --provider evolink --resume
    qwen-edit status results/                                       # counts and failures
    qwen-edit validate edits.jsonl --provider evolink               # check it, send nothing
    qwen-edit report results/                                       # results/report.html
    qwen-edit demo                                                  # no key, no network
    qwen-edit serve-fake --port 8000                                # the fake provider

The commands live in the bulk package; this module only assembles them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__
from .bulk._commands import add_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``qwen-edit`` command line."""
    parser = argparse.ArgumentParser(
        prog="qwen-edit",
        description="Bulk qwen-image-edit-plus edits: crash-safe runs, resume, status, demo.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'qwen-edit COMMAND --help' for a command's options.\n"
        "Try it without a key or network: qwen-edit demo",
    )
    parser.add_argument("--version", action="version", version=f"qwen-edit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(commands)
    commands.add_parser(
        "serve-fake",
        add_help=False,
        help="serve the fake provider on loopback (see 'qwen-edit serve-fake --help')",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``qwen-edit`` entry point; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "serve-fake":
        from .testing import main as serve_fake

        return serve_fake(args_list[1:])
    args = build_parser().parse_args(args_list)
    status: int = args.handler(args, args_list)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
