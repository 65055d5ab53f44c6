"""Shared fixtures: zero retry waits, and a fake provider on loopback."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import qwen_edit_async as qe
from qwen_edit_async._schedule import PollSchedule
from qwen_edit_async.testing import FakeProvider

API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """Retries happen, but without waiting, so the suite stays fast; a test that switches
    waits back on (to measure them) leaves the next test as it found it."""
    with qe.set_testing(True):
        yield


@pytest.fixture
def seeded_poll_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every poll schedule made during the test draws from ``random.Random(0)``: a test that
    counts status requests sees the same scouts and jitter on every run."""
    original = PollSchedule.__init__

    def seeded(self: PollSchedule, *args: Any, **kwargs: Any) -> None:
        kwargs["rng"] = random.Random(0)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PollSchedule, "__init__", seeded)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    """A fake provider on 127.0.0.1 that requires ``API_KEY``, with short latency."""
    async with FakeProvider(api_key=API_KEY, latency=0.02, estimated_time=None) as server:
        yield server


@pytest.fixture
def fake_process() -> Iterator[str]:
    """A fake provider in its own process (latency 0): its root URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen_edit_async.testing", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving on "), line
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
