"""``qwen-edit status DIR``: the counts and failures of a run, read from its journal."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from .._text import printable
from ._journal import JOURNAL_NAME
from ._results import read_summary
from ._state import ENDED, PENDING

__all__ = ["cmd_status"]


def cmd_status(args: argparse.Namespace) -> int:
    """Print the run's counts and failures; exit 2 when there is no readable journal."""
    path = Path(args.out) / JOURNAL_NAME
    if not path.is_file():
        print(
            printable(f"qwen-edit: no run journal in {args.out} ({path} not found)"),
            file=sys.stderr,
        )
        return 2
    try:
        summary = read_summary(path, limit=args.limit or None)
    except sqlite3.Error as exc:
        text = " ".join(str(exc).split())
        print(
            printable(
                f"qwen-edit: {path} is damaged or not a run journal ({type(exc).__name__}: {text})"
            ),
            file=sys.stderr,
        )
        return 2
    counts, meta = summary.counts, summary.meta
    pending = sum(counts.get(s, 0) for s in PENDING)
    if getattr(args, "json", False):
        states = (*PENDING, *ENDED)
        document = {
            "dir": str(args.out),
            "provider": meta.get("provider"),
            "base_url": meta.get("base_url"),
            "model": meta.get("model"),
            "runs": int(meta.get("runs", "0")),
            "counts": {state.value: counts.get(state, 0) for state in states},
            "refused_lines": counts.get("rejected", 0),
            "images": counts.get("images", 0),
            "failures_by_type": summary.by_type,
        }
        # ensure_ascii: provider text never reaches the terminal as control characters.
        print(json.dumps(document, ensure_ascii=True))
        return 0
    print(
        printable(
            f"{args.out}: provider {meta.get('provider', '?')} ({meta.get('base_url', '?')}), "
            f"model {meta.get('model', '?')}, {meta.get('runs', '0')} run(s)"
        )
    )
    print(
        f"  succeeded {counts.get('succeeded', 0)}, failed {counts.get('failed', 0)}, "
        f"uncertain {counts.get('uncertain', 0)}, refused lines {counts.get('rejected', 0)}, "
        f"not finished {pending}; images saved {counts.get('images', 0)}"
    )
    if summary.failures:
        print("failures (id, error type, message):")
        for job_id, error_type, message in summary.failures:
            print(f"  {printable(job_id)}\t{printable(error_type)}\t{printable(message)}")
    if pending:
        print(f"  {pending} job(s) not finished: continue with 'qwen-edit run ... --resume'")
    return 0
