"""``USE_CLIENT_DEFAULT``: an argument left to the client's configuration."""

from __future__ import annotations

import enum

__all__ = ["USE_CLIENT_DEFAULT", "_Default"]


class _Default(enum.Enum):
    USE_CLIENT_DEFAULT = "USE_CLIENT_DEFAULT"


#: Marks an argument left to the client's configuration (distinct from ``None``, which
#: disables a timeout).
USE_CLIENT_DEFAULT = _Default.USE_CLIENT_DEFAULT
