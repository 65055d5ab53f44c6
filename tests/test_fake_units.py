"""Pure pieces of the fake: the size rules, the PNG encoder, prompt magic."""

from __future__ import annotations

import io
import math

import imagesize
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwen_edit_async.testing._faults import Decision, prompt_magic
from qwen_edit_async.testing._png import PALETTE, png_bytes
from qwen_edit_async.testing._validate import default_size, snap


@pytest.mark.parametrize(
    ("side", "snapped"),
    [
        (1033, 1040),
        (1032, 1024),
        (1031, 1024),
        (1024, 1024),
        (1040, 1040),
        (520, 512),
        (521, 528),
        (2047, 2048),
        (512, 512),
    ],
)
def test_snap_goes_to_the_nearest_multiple_of_16_ties_down(side: int, snapped: int) -> None:
    """The documented example (1033 -> 1040) and the tie rule (1032 -> 1024) hold."""
    assert snap(side) == snapped


@given(st.integers(min_value=512, max_value=2048))
def test_snap_is_within_8_of_the_input(side: int) -> None:
    """Snapping never moves a side by more than 8 pixels and always lands on 16."""
    out = snap(side)
    assert out % 16 == 0 and abs(out - side) <= 8


@given(st.integers(min_value=384, max_value=3072), st.integers(min_value=384, max_value=3072))
def test_default_size_keeps_ratio_and_about_a_megapixel(width: int, height: int) -> None:
    """Without size: multiples of 16, the input's ratio (within rounding), ~1024*1024 px."""
    out_w, out_h = default_size((width, height))
    assert out_w % 16 == 0 and out_h % 16 == 0
    assert math.isclose(out_w / out_h, width / height, rel_tol=0.05)
    assert abs(out_w * out_h - 1024 * 1024) / (1024 * 1024) < 0.06


def test_default_size_of_unknown_dimensions_is_square() -> None:
    """An input whose size is unknown is treated as 1:1."""
    assert default_size(None) == (1024, 1024)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (17, 3), (512, 2048), (2048, 872)])
def test_png_encoder_writes_the_requested_size(width: int, height: int) -> None:
    """png_bytes produces a PNG that imagesize reads back at the requested size."""
    data = png_bytes(width, height, 5)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert imagesize.get(io.BytesIO(data)) == (width, height)


def test_png_colours_differ_and_encoding_is_cached() -> None:
    """Different palette entries give different bytes; the same key is built once."""
    assert len(PALETTE) >= 16
    assert png_bytes(64, 64, 0) != png_bytes(64, 64, 1)
    assert png_bytes(64, 64, 2) is png_bytes(64, 64, 2)
    with pytest.raises(ValueError):
        png_bytes(0, 10)


@pytest.mark.parametrize(
    ("prompt", "decision"),
    [
        ("a cat", None),
        ("a cat [fail]", Decision("fail")),
        ("[fail:generation_timeout] a cat", Decision("fail", "generation_timeout")),
        ("[filter] a cat", Decision("content_filter")),
        ("a [quota] cat", Decision("quota")),
        ("a cat [stuck]", Decision("stuck")),
        ("a cat [unknown]", None),
    ],
)
def test_prompt_magic_words(prompt: str, decision: Decision | None) -> None:
    """The documented magic words map to outcomes; other brackets are ordinary text."""
    assert prompt_magic(prompt) == decision
