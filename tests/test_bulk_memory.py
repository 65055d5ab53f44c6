"""Memory of a bulk run follows concurrency, not the manifest's length (scaled-down benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests._bulk_support import REPO

pytestmark = pytest.mark.timeout(120)


def _benchmark():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "bulk_memory", REPO / "benchmarks" / "bulk_memory.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scaled_down_bulk_run_stays_within_a_generous_rss_bound(tmp_path: Path) -> None:
    """benchmarks/bulk_memory.py on 1,500 lines (one shared image, concurrency 128, tiny
    latency, downloads on): the run succeeds and the CLI's peak RSS stays under 250 MB
    (it is about 55 MB; a runner holding every job would not stay flat at 100k)."""
    result = _benchmark().measure(
        1_500, workdir=tmp_path, concurrency=128, latency=0.005, checkpoints=(1_000,)
    )
    assert result["exit_code"] == 0, result
    assert [c["done"] for c in result["checkpoints"]] == [1_000, 1_500]
    assert result["peak_rss_mb"] < 250, result
