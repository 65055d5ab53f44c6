"""A blocking script: the sync client, a fail-fast view, results stored as JSON, and the
provider, base URL and log switch read from the environment.

With no settings it runs against the embedded fake provider (no key, no network)::

    python examples/sync_client.py out/

For real, name the provider and the key in the environment::

    QWEN_EDIT_PROVIDER=dashscope-intl DASHSCOPE_API_KEY=sk-... python examples/sync_client.py out/

It edits one image through a view that fails fast on a 429, then a small batch given as
plain dicts, and writes every outcome to ``out/outcomes.jsonl``. This file is also checked
with ``mypy --strict``: it is what a typed user program looks like.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import qwen_edit_async as qe
from qwen_edit_async.testing import fake_in_thread

IMAGE = "https://example.com/cat.png"


@contextlib.contextmanager
def environment() -> Iterator[None]:
    """Use the settings of the environment, or the embedded fake when there are none."""
    if os.environ.get("QWEN_EDIT_PROVIDER"):
        yield
        return
    with fake_in_thread(latency=0.05) as fake:
        os.environ.update(
            QWEN_EDIT_PROVIDER="vtrix", QWEN_EDIT_BASE_URL=fake.url, QWEN_EDIT_API_KEY="demo"
        )
        yield


def main(out: pathlib.Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with environment(), qe.SyncQwenEditClient(max_in_flight=4, poll_initial=0.1) as client:
        print(f"provider: {client.provider.name} at {client.provider.base_url}")
        # A route that must answer quickly: no retries after a 429, a short deadline.
        fast: qe.SyncQwenEditClient = client.with_options(max_attempts=1, job_timeout=120)
        first: qe.EditResult = fast.edit([IMAGE], "Give the cat a red hat", n=1)
        print("first edit:", first.urls)
        paths = client.download(first, out / "images", stem="first")
        print("saved:", [str(p) for p in paths])

        batch: list[dict[str, Any]] = [
            {"images": [IMAGE], "prompt": f"Paint the cat in style {i}", "seed": i}
            for i in range(4)
        ]
        failed = 0
        with (out / "outcomes.jsonl").open("w", encoding="utf-8") as lines:
            for outcome in client.edit_many(batch):
                row: dict[str, Any] = outcome.to_dict()
                lines.write(json.dumps(row) + "\n")
                failed += not outcome.ok
        stats: qe.ClientStatistics = client.statistics()
        print(f"batch: {stats.completed} completed, {stats.failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "sync-out")))
