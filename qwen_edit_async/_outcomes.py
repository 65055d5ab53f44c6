"""What an exchange with a server came to: an :class:`Answer`, or why there is none
(:class:`NotSent`, :class:`Lost`). The pipe (:mod:`._http`) and its lean path for status
requests (:mod:`._lean`) both give these."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["RESET_ERRNOS", "Answer", "Lost", "NotSent", "too_large"]

#: A connection ended by these was reset by the peer (RST): the request was not taken.
RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class NotSent(Exception):
    """The request certainly did not reach the provider's application.

    ``final``: the URL cannot be requested at all (sending it again cannot help).
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class Lost(Exception):
    """The request was written but no complete answer came back (a job may exist).

    ``final``: the answer is larger than the cap (asking again gives the same answer).
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class Answer(NamedTuple):
    """An answer as it arrived: status, headers and body (capped: see
    :meth:`~._http.HttpPipe.send`)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def too_large(cap: int, size: str) -> str:
    return (
        f"the answer ({size}) is larger than max_response_bytes={cap}; it was not read "
        "(raise max_response_bytes in ClientConfig if such answers are expected)"
    )
