"""``qwen-edit report DIR``: one self-contained HTML page to review a bulk run by eye.

The page is ``DIR/report.html``. It needs no network: styles and script are inline, images
are linked by paths relative to DIR (outputs under ``images/``, inputs wherever the manifest
named them) and scaled by the browser. A Content-Security-Policy with a per-page nonce blocks
any other script and any connection, should something slip through.

Everything that comes from a manifest or a provider (ids, prompts, file names, error
messages) is untrusted text: the jobs travel as JSON inside a ``<script
type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, and the script puts
them on the page with ``textContent`` only, never as markup. The parts written here in Python
go through :func:`html.escape`.

At 10,000 jobs the page stays quick: it draws one page of cards at a time, images load
lazily, and filtering is a pass over an in-memory array.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import io
import json
import os
import re
import secrets
import sqlite3
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .._atomic import atomic_write
from .._errors import QwenEditError
from .._images import image_kind
from ._journal import JOURNAL_NAME
from ._manifest import Entry, read_manifest
from ._progress import format_seconds
from ._report_assets import PAGE_CSS, PAGE_SCRIPT
from ._results import count_jobs
from ._state import EntryState, sql_states

__all__ = ["REPORT_NAME", "ReportData", "render_report", "write_report"]

REPORT_NAME = "report.html"

#: How the page groups the journal's states.
_STATE = {
    EntryState.SUCCEEDED: "succeeded",
    EntryState.FAILED: "failed",
    EntryState.UNCERTAIN: "uncertain",
    EntryState.QUEUED: "queued",
    EntryState.SUBMITTING: "running",
    EntryState.SUBMITTED: "running",
    EntryState.DOWNLOADING: "running",
}
_STATES = ("succeeded", "failed", "uncertain", "queued", "running")
_MESSAGES_PER_TYPE = 20
_PER_JOB_IDS = re.compile(r"\b(?:request_id|task_id)=[^,)\s]*(?:, )?")
_IDS_PER_MESSAGE = 5
_LINK_CACHE = 4096


@dataclasses.dataclass(slots=True)
class ReportData:
    """A run held in memory (for small runs and tests; a run's folder is streamed instead).

    A job record is a list ``[id, state, prompt, size, n, inputs, outputs, error_type,
    error_message, line]``; ``inputs`` and ``outputs`` are ``[kind, text]`` pairs where kind
    is ``"img"`` (``text`` a relative URL), ``"url"`` (a remote URL, not loaded) or
    ``"inline"``.
    """

    meta: dict[str, str]
    jobs: list[list[Any]]
    images: int
    #: Seconds from the run's first start to its last recorded step.
    elapsed: float | None


@dataclasses.dataclass(slots=True)
class _Summary:
    meta: dict[str, str]
    counts: Counter[str]
    images: int
    elapsed: float | None


def _href(path: str) -> str:
    return urllib.parse.quote(path.replace(os.sep, "/"), safe="/")


def _inputs(entry: Entry | None, out: Path, links: dict[Any, str]) -> list[list[str]]:
    if entry is None or entry.request is None:
        return []
    pairs = []
    for image in entry.request.images:
        kind = image_kind(image)
        if isinstance(image, Path):  # kind "file"
            link = links.get(image)
            if link is None:  # inputs are shared by many jobs: compute each link once
                if len(links) >= _LINK_CACHE:
                    links.clear()
                link = links[image] = _href(os.path.relpath(image, out))
            pairs.append(["img", link])
        elif kind in ("url", "oss"):
            pairs.append(["url", str(image)])
        else:
            pairs.append(["inline", ""])
    return pairs


def _entries(meta: dict[str, str]) -> Iterator[Entry]:
    """The run's manifest lines in order; none when it is gone or unreadable (the page then
    shows the journal's side only)."""
    path = meta.get("manifest")
    if not path or not os.path.isfile(path):
        return
    try:
        yield from read_manifest(path)
    except (OSError, QwenEditError):
        return


_ROWS = (
    "SELECT line, id, status, n, files, error_type, error_message FROM jobs UNION ALL "
    f"SELECT line, id, '{EntryState.FAILED}', 1, NULL, error_type, error_message FROM rejects "
    "ORDER BY line"
)
_FAILURES = (
    "SELECT id, line, error_type, error_message FROM jobs WHERE status IN "
    f"{sql_states(EntryState.FAILED, EntryState.UNCERTAIN)} "
    "UNION ALL SELECT id, line, error_type, error_message FROM rejects"
)


def _records(conn: sqlite3.Connection, meta: dict[str, str], root: Path) -> Iterator[list[Any]]:
    """One record per journaled job and refused line, in manifest order, each joined with
    its manifest line (both are read in line order: memory stays flat at any size)."""
    entries = _entries(meta)
    entry = next(entries, None)
    links: dict[Any, str] = {}
    for line, job_id, status, n, files, error_type, message in conn.execute(_ROWS):
        while entry is not None and entry.line < line:
            entry = next(entries, None)
        same = entry is not None and entry.line == line and entry.id == job_id
        request = entry.request if same and entry is not None else None
        size = request.size if request is not None else None
        yield [
            job_id or f"line {line}",
            _STATE.get(status, status),
            request.prompt if request is not None else "",
            str(size) if size is not None else "",
            n,
            _inputs(entry if same else None, root, links),
            [["img", _href(name)] for name in (json.loads(files) if files else [])],
            error_type or "",
            message or "",
            line,
        ]


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its ``<script>`` element or open a comment inside it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _message_key(message: str) -> str:
    """A message without the ids that make every occurrence unique, for grouping."""
    key = _PER_JOB_IDS.sub("", message)
    return key.replace(", )", ")").replace("(, ", "(").replace(" ()", "")


def _failure_groups(failures: Iterable[tuple[str, str, str]]) -> str:
    """Failed and uncertain jobs, as ``(id, error type, message)``, grouped by error type
    then by message, most common first (request and task ids left out of the message so
    that alike failures group)."""
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for job_id, raw_type, raw_message in failures:
        error_type, message = raw_type or "Unknown", _message_key(raw_message)
        groups[error_type][message] += 1
        ids = examples[(error_type, message)]
        if len(ids) < _IDS_PER_MESSAGE:
            ids.append(job_id)
    if not groups:
        return '<p class="none">No failures.</p>'
    parts = []
    ordered = sorted(groups.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    for rank, (error_type, messages) in enumerate(ordered):
        total = sum(messages.values())
        items = []
        for message, count in messages.most_common(_MESSAGES_PER_TYPE):
            shown = ", ".join(html.escape(i) for i in examples[(error_type, message)])
            more = " …" if count > _IDS_PER_MESSAGE else ""
            items.append(
                f'<li><span class="count">{count}×</span> <span class="msg">'
                f"{html.escape(message) or '(no message)'}</span>"
                f'<div class="ids">e.g. {shown}{more}</div></li>'
            )
        hidden = len(messages) - _MESSAGES_PER_TYPE
        if hidden > 0:
            items.append(f'<li class="more">and {hidden} other message(s)</li>')
        parts.append(
            f'<details class="group"{" open" if rank < 3 else ""}><summary>'
            f'<span class="etype">{html.escape(error_type)}'
            f'</span> <span class="count">{total} job(s)</span> <button type="button" '
            f'class="show-type" data-error-type="{html.escape(error_type, quote=True)}">'
            f"show in grid</button></summary><ul>{''.join(items)}</ul></details>"
        )
    return "".join(parts)


def _write_page(
    handle: IO[str], summary: _Summary, failures: str, jobs: Iterable[list[Any]], title: str
) -> None:
    """The page, streamed: the job records are written one by one."""
    counts, meta, elapsed = summary.counts, summary.meta, summary.elapsed
    total = sum(counts.values())
    finished = counts["succeeded"] + counts["failed"] + counts["uncertain"]
    rate = f"{finished / elapsed:.2f}" if elapsed and finished else "–"
    nonce = secrets.token_urlsafe(18)
    esc = html.escape
    tiles = "".join(
        f'<div class="tile {state}{"" if counts[state] else " zero"}">'
        f"<strong>{counts[state]}</strong><span>{state}</span></div>"
        for state in _STATES
        if state != "running" or counts[state]
    )
    tiles += f'<div class="tile images"><strong>{summary.images}</strong><span>images</span></div>'
    facts = [
        ("jobs", str(total)),
        ("duration", format_seconds(elapsed) if elapsed is not None else "–"),
        ("jobs/s", rate),
        ("provider", meta.get("provider", "?")),
        ("model", meta.get("model", "?")),
        ("runs", meta.get("runs", "?")),
        ("manifest", os.path.basename(meta.get("manifest", "")) or "?"),
    ]
    fact_html = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    csp = (
        f"default-src 'none'; img-src 'self' file: data:; style-src 'nonce-{nonce}'; "
        f"script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'"
    )
    handle.write(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{esc(title)}: {counts["succeeded"]}/{total} succeeded</title>
<style nonce="{nonce}">{PAGE_CSS}</style></head>
<body>
<header><h1>{esc(title)}</h1><p class="sub">report written {esc(generated)}</p></header>
<section class="summary"><div class="tiles">{tiles}</div><dl class="facts">{fact_html}</dl>
</section>
<section class="failures"><h2>Failures by error type</h2>{failures}</section>
<section class="jobs"><h2>Jobs</h2>
<div class="controls"><div class="filters" role="group" aria-label="status filter"></div>
<input type="search" id="search" placeholder="search id, prompt, error…" aria-label="search">
<span class="error-filter" hidden></span></div>
<div class="pager" data-where="top"></div><div id="grid" class="grid"></div>
<div class="pager" data-where="bottom"></div>
<noscript><p>The job grid needs JavaScript; results.jsonl has every job.</p></noscript>
</section>
<script type="application/json" id="report-data">[""")
    for index, job in enumerate(jobs):
        handle.write(("," if index else "") + _json_for_script(job) + "\n")
    handle.write(f"""]</script>
<script nonce="{nonce}">{PAGE_SCRIPT}</script>
</body></html>
""")


def render_report(data: ReportData, *, title: str = "qwen-edit run") -> str:
    """The page for ``data``, as one HTML string."""
    summary = _Summary(data.meta, Counter(job[1] for job in data.jobs), data.images, data.elapsed)
    failures = _failure_groups(
        (str(job[0]), job[7], job[8]) for job in data.jobs if job[1] in ("failed", "uncertain")
    )
    page = io.StringIO()
    _write_page(page, summary, failures, data.jobs, title)
    return page.getvalue()


def _summary(conn: sqlite3.Connection) -> _Summary:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    journal = count_jobs(conn)
    counts: Counter[str] = Counter()
    for state, shown_as in _STATE.items():
        counts[shown_as] += journal.get(state, 0)
    counts["failed"] += journal.get("rejected", 0)
    last = conn.execute("SELECT max(updated_at) FROM jobs").fetchone()[0]
    started = _float(meta.get("created_at"))
    elapsed = None if started is None or last is None else max(0.0, last - started)
    return _Summary(meta, counts, journal.get("images", 0), elapsed)


def write_report(out: Path) -> Path:
    """Write ``out/report.html`` (atomically) for the run in ``out``; return its path.

    The journal is read without writing to it, so a run may be going on. Raises
    :class:`FileNotFoundError` when ``out`` holds no run.

    >>> write_report(Path("results"))   # doctest: +SKIP
    PosixPath('results/report.html')
    """
    path = out / JOURNAL_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no run journal in {out} ({path} not found)")
    target = out / REPORT_NAME
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        summary = _summary(conn)
        failures = _failure_groups(
            (job_id or f"line {line}", error_type, message or "")
            for job_id, line, error_type, message in conn.execute(_FAILURES)
        )
        # Not fsynced: a report lost to a power cut is written again by `qwen-edit report`.
        with atomic_write(target, durable=False, encoding="utf-8") as handle:
            records = _records(conn, summary.meta, out.resolve())
            _write_page(handle, summary, failures, records, f"qwen-edit run: {out.resolve().name}")
    finally:
        conn.close()
    return target
