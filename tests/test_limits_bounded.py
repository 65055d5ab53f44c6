"""The adaptive limits keep what they measure, never every create of a long run."""

from __future__ import annotations

import pytest

from qwen_edit_async import _limits
from qwen_edit_async._limits import LocalLimits


def test_accepted_creates_are_remembered_for_one_second_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 accepted creates at 100 a second without a refusal: the record the rate is
    measured from holds the last second's (about 100), not one entry per create."""
    clock = [1000.0]
    monkeypatch.setattr(_limits.time, "monotonic", lambda: clock[0])
    limits = LocalLimits(max_in_flight=64, submit_rate=None)
    for _ in range(20_000):
        limits.accepted(object())
        clock[0] += 0.01
    assert len(limits._accepts) <= 101
