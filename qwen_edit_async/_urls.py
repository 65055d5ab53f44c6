"""The one test of "is this an http(s) URL", shared by every place that asks.

Schemes are case-insensitive (RFC 3986): ``HTTPS://example.com/a.png`` is a URL wherever
``https://example.com/a.png`` is. Callers that need a host, or refuse some hosts, check that
after this test, in their own words.
"""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_http_url"]

_PREFIXES = ("http://", "https://")


def is_http_url(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string starting with ``http://`` or ``https://`` (any case).

    >>> is_http_url("HTTPS://example.com/a.png"), is_http_url("oss://bucket/a.png")
    (True, False)
    """
    # Lower-case schemes, nearly all URLs, need no copy of the scheme to decide.
    return isinstance(value, str) and (
        value.startswith(_PREFIXES) or value[:8].lower().startswith(_PREFIXES)
    )
