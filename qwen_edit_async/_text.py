"""Text that is safe to print on a terminal.

Provider messages, file names and manifest ids end up in the CLI's output. A control
character in them (``ESC ]0;...BEL`` retitles the terminal, ``ESC [2J`` clears it) must be
shown, not obeyed: each is printed as its escape (``\\x1b``, ``\\n``, ``\\u009b``).
"""

from __future__ import annotations

__all__ = ["printable"]

_ESCAPES: dict[int, str] = {code: f"\\x{code:02x}" for code in range(0x20)}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x7F: "\\x7f"})
_ESCAPES.update({code: f"\\u{code:04x}" for code in range(0x80, 0xA0)})
# Line and paragraph separators, bidi overrides and isolates reorder what a reader sees.
_ESCAPES.update(
    {
        code: f"\\u{code:04x}"
        for code in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
    }
)


def printable(text: object) -> str:
    """``text`` as a string with every control character escaped.

    >>> printable("bad\\x1b]0;owned\\x07 key")
    'bad\\\\x1b]0;owned\\\\x07 key'
    """
    return str(text).translate(_ESCAPES)
