"""Masking secrets in what a provider sends back.

Providers quote the key they refused ("Invalid API-key provided: Bearer sk-..."). The
transport masks every answer body as it arrives, before any dialect reads it, so nothing the
library keeps or shows (error messages, ``body``, ``raw``, the journal, ``results.jsonl``, the
terminal) can carry the key.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "Redactor"]

#: What a secret is replaced with.
MASK = "********"

# A bearer token as it appears in text: stops at quotes, backslashes, spaces and commas, so
# a JSON string stays valid JSON after the replacement.
_BEARER = re.compile(rb"(?i)(bearer)(\s+)[^\s\"'\\,;]+")
_BEARER_TEXT = re.compile(r"(?i)(bearer)(\s+)[^\s\"'\\,;]+")


class Redactor:
    """Masks one client's key, and any ``Bearer <token>``, in bytes and in text.

    >>> Redactor("sk-123").text("Invalid API-key provided: Bearer sk-123 (or sk-123)")
    'Invalid API-key provided: Bearer ******** (or ********)'
    """

    __slots__ = ("_key", "_key_bytes")

    def __init__(self, key: str) -> None:
        # Very short keys would mask ordinary words; the bearer rule still covers them.
        self._key = key if len(key) >= 4 else ""
        self._key_bytes = self._key.encode("utf-8", "replace")

    def bytes(self, data: bytes) -> bytes:
        """``data`` with the key and bearer tokens masked (unchanged, not copied, if none)."""
        if self._key_bytes and self._key_bytes in data:
            data = data.replace(self._key_bytes, MASK.encode())
        # The scheme is case-insensitive: "BEARer" too. One lowered copy is cheaper than
        # the regex scan it spares on the usual answer, which has no bearer at all.
        if b"bearer" in data.lower():
            data = _BEARER.sub(rb"\1\2" + MASK.encode(), data)
        return data

    def text(self, text: str) -> str:
        """``text`` with the key and bearer tokens masked."""
        if self._key and self._key in text:
            text = text.replace(self._key, MASK)
        if "bearer" in text.lower():
            text = _BEARER_TEXT.sub(r"\1\2" + MASK, text)
        return text
