"""One retry policy for creates, status requests and downloads, and the switch for tests.

Every retry of the library asks the same two questions of one :class:`RetryPolicy`, built
once from the client's :class:`~._config.ClientConfig`:

- :meth:`RetryPolicy.should_retry`: may this failure be sent again? An answer the provider
  calls transient (429, 408, 5xx) or a request that certainly did not arrive, yes. A create
  whose answer was lost (it may have created and billed a job) only with
  ``retry_uncertain``; a status request or a download (``idempotent``) always.
- :meth:`RetryPolicy.delay`: how long to wait first? The ``Retry-After`` the provider asked
  for (more than ``retry_after_max`` ends the retries), else a full-jitter exponential wait:
  uniform between 0 and ``backoff_base * 2**(attempt - 1)``, at most ``backoff_max``.
  Full jitter spreads clients that failed together (AWS, "Exponential Backoff And
  Jitter"); the ceilings come from ``backoff``'s wait generator, used only here.

:func:`set_testing` turns every wait of the library to zero (retries, cooldown sleeps,
learning a provider's rate): retries still happen, in order, without the time. It returns
a context manager that puts the previous setting back::

    >>> with set_testing(True):
    ...     RetryPolicy(backoff_base=0.5, backoff_max=30.0).delay(3)
    0.0
    >>> testing_enabled()
    False
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import backoff

from ._errors import QwenEditError, SubmitUncertainError
from .providers._base import ProtocolError

if TYPE_CHECKING:
    from ._config import ClientConfig

__all__ = ["RetryPolicy", "TestingSwitch", "set_testing", "testing_enabled"]

_testing = False

#: Ceilings kept before the cap is reached (``2**64`` times the base is past any cap).
_MAX_DOUBLINGS = 64


class TestingSwitch:
    """What :func:`set_testing` returns: used as a context manager, it restores the setting
    that was in force before the call when the block ends."""

    __slots__ = ("_previous",)
    __test__ = False  # not a test class, whatever its name says to pytest

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _testing
        _testing = self._previous


def set_testing(enabled: bool = True) -> TestingSwitch:
    """Make every wait of the library zero (for test suites); retries still happen.

    Takes effect at once. Used as a context manager, the previous setting comes back when
    the block ends::

        with qe.set_testing(True):
            ...  # retried 429s and 5xx do not wait

    Called on its own (``qe.set_testing(True)``), it stays until changed.
    """
    global _testing
    previous, _testing = _testing, bool(enabled)
    return TestingSwitch(previous)


def testing_enabled() -> bool:
    """Whether :func:`set_testing` switched waits off."""
    return _testing


def pause(seconds: float) -> float:
    """``seconds``, or 0 while testing: every wait that is not a retry's goes through here
    (a cooldown, a pause between a job's submissions)."""
    return 0.0 if _testing else seconds


class RetryPolicy:
    """When to send a failed request again, and after how long (see the module docstring).

    >>> policy = RetryPolicy(backoff_base=0.5, backoff_max=30.0, retry_after_max=120.0)
    >>> policy.ceiling(1), policy.ceiling(3), policy.ceiling(20)
    (0.5, 2.0, 30.0)
    >>> policy.delay(1, retry_after=200.0) is None   # asked for more than retry_after_max
    True
    """

    __slots__ = ("_ceilings", "retry_after_max", "retry_uncertain")

    def __init__(
        self,
        *,
        backoff_base: float,
        backoff_max: float,
        retry_after_max: float = 120.0,
        retry_uncertain: bool = False,
    ) -> None:
        self.retry_after_max = retry_after_max
        self.retry_uncertain = retry_uncertain
        waits = backoff.expo(factor=backoff_base, max_value=backoff_max)
        next(waits)  # prime the generator, as backoff itself does
        ceilings: list[float] = []
        for wait in waits:
            ceilings.append(float(wait))
            if wait >= backoff_max or len(ceilings) >= _MAX_DOUBLINGS:
                break
        self._ceilings = tuple(ceilings)

    @classmethod
    def from_config(cls, config: ClientConfig) -> RetryPolicy:
        """The policy of a client configured with ``config``."""
        return cls(
            backoff_base=config.backoff_base,
            backoff_max=config.backoff_max,
            retry_after_max=config.retry_after_max,
            retry_uncertain=config.retry_uncertain,
        )

    def ceiling(self, attempt: int) -> float:
        """The longest wait after the ``attempt``-th failure in a row (1 for the first)."""
        return self._ceilings[min(max(attempt, 1), len(self._ceilings)) - 1]

    def should_retry(self, error: BaseException, idempotent: bool) -> bool:
        """Whether a request that failed with ``error`` may be sent again.

        ``idempotent``: sending it twice does no harm (a status request, a download), so a
        lost answer or an unreadable one is retried too. A create is not: its lost answer
        (:class:`SubmitUncertainError`) is retried only with ``retry_uncertain``.
        """
        if isinstance(error, SubmitUncertainError):
            return idempotent or self.retry_uncertain
        if isinstance(error, ProtocolError):
            return idempotent  # the next answer to a GET may be readable
        return isinstance(error, QwenEditError) and error.retryable

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after the ``attempt``-th failure in a row, or ``None`` to give
        up: the provider asked (``retry_after``) for more than ``retry_after_max``."""
        if retry_after is not None:
            if retry_after > self.retry_after_max:
                return None
            return pause(max(0.0, retry_after))
        if _testing:
            return 0.0
        return float(backoff.full_jitter(self.ceiling(attempt)))
