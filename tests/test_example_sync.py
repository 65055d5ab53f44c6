"""examples/sync_client.py: the typed user program runs against the fake by itself."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "sync_client.py"


def test_sync_example_runs_and_stores_every_outcome(tmp_path: pathlib.Path) -> None:
    """With no QWEN_EDIT_* settings the example uses the embedded fake, edits through a
    view, and writes one JSON line per outcome of its batch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_EDIT_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "provider: vtrix at http://127.0.0.1:" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "outcomes.jsonl").read_text().splitlines()]
    assert sorted(row["index"] for row in rows) == [0, 1, 2, 3]
    assert all(row["ok"] and row["result"]["usage"]["image_count"] == 1 for row in rows)
    assert (tmp_path / "images" / "first-0.png").read_bytes().startswith(b"\x89PNG")
