"""``Size``: an output size in pixels, checked and snapped as the provider does."""

from __future__ import annotations

import re
from typing import Union

import msgspec

from ._errors import ValidationError

__all__ = ["MAX_SIDE", "MIN_SIDE", "SIZE_STEP", "Size", "SizeLike"]

MIN_SIDE = 512
MAX_SIDE = 2048
SIZE_STEP = 16

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$", re.ASCII)
#: More digits than any side can have; a longer number is out of range without parsing it
#: (int() refuses strings over 4300 digits with a bare ValueError).
_MAX_SIDE_DIGITS = 6


def _snap(side: int) -> int:
    """Nearest multiple of 16, ties going down (as the provider documents: 1032 -> 1024)."""
    return (side + SIZE_STEP // 2 - 1) // SIZE_STEP * SIZE_STEP


class Size(msgspec.Struct, frozen=True):
    """An output size in pixels, each side 512–2048, snapped to a multiple of 16.

    >>> Size(1033, 1032)
    Size(width=1040, height=1024)
    >>> Size.parse("1024x1536") == Size.parse((1024, 1536)) == Size(1024, 1536)
    True
    """

    width: int
    height: int

    def __post_init__(self) -> None:
        snapped = []
        for name, value in (("width", self.width), ("height", self.height)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(
                    f"size.{name}: {value!r} is not an integer; give pixels as whole numbers",
                    field="size",
                )
            if not MIN_SIDE <= value <= MAX_SIDE:
                raise ValidationError(
                    f"size.{name}: {value} is out of range; each side must be "
                    f"{MIN_SIDE} to {MAX_SIDE} pixels",
                    field="size",
                )
            snapped.append(_snap(value))
        msgspec.structs.force_setattr(self, "width", snapped[0])
        msgspec.structs.force_setattr(self, "height", snapped[1])

    @classmethod
    def parse(cls, value: SizeLike) -> Size:
        """Read ``"1024*1536"``, ``"1024x1536"``, ``(1024, 1536)`` or a :class:`Size`."""
        if isinstance(value, Size):
            return value
        if isinstance(value, str):
            match = _SIZE_RE.match(value)
            if not match:
                raise ValidationError(
                    f"size: {value!r} is not a size; write it as 'W*H' or 'WxH', "
                    "for example '1024*1536'",
                    field="size",
                )
            width, height = match.group(1), match.group(2)
            for name, digits in (("width", width), ("height", height)):
                if len(digits.lstrip("0")) > _MAX_SIDE_DIGITS:
                    raise ValidationError(
                        f"size.{name}: {_show_number(digits)} is out of range; each side must "
                        f"be {MIN_SIDE} to {MAX_SIDE} pixels",
                        field="size",
                    )
            return cls(int(width), int(height))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(value[0], value[1])
        raise ValidationError(
            f"size: {value!r} ({type(value).__name__}) is not a size; give 'W*H', 'WxH', "
            "a (width, height) pair or a Size",
            field="size",
        )

    def format(self, separator: str = "*") -> str:
        """``"1024*1536"`` (or with another separator, e.g. ``"x"``)."""
        return f"{self.width}{separator}{self.height}"

    def __str__(self) -> str:
        return self.format()


def _show_number(digits: str) -> str:
    return digits if len(digits) <= 12 else f"a number of {len(digits)} digits"


SizeLike = Union[Size, str, tuple[int, int]]
