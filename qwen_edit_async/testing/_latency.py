"""How long a fake job takes: a fixed number of seconds or a distribution."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Union

__all__ = ["Latency", "LatencyLike", "as_latency"]


class Latency:
    """A job duration drawn per job from the fake's seeded random generator.

    Build one with a class method; a plain ``float`` (fixed seconds) or any callable
    ``rng -> seconds`` is accepted wherever a ``Latency`` is.

    Example::

        FakeProvider(latency=Latency.lognormal(median=0.5, sigma=0.3))
        FakeProvider(latency=Latency.uniform(0.2, 0.8))
        FakeProvider(latency=0.05)
    """

    __slots__ = ("_sample", "description", "typical")

    def __init__(
        self, sample: Callable[[random.Random], float], *, typical: float, description: str
    ) -> None:
        self._sample = sample
        #: A representative duration (the median): the base of Evolink's ``estimated_time``.
        self.typical = typical
        self.description = description

    def __call__(self, rng: random.Random) -> float:
        return max(0.0, float(self._sample(rng)))

    def __repr__(self) -> str:
        return f"Latency.{self.description}"

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        """Every job takes exactly ``seconds``."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"latency must be a finite number >= 0, got {seconds!r}")
        return cls(lambda _rng: seconds, typical=seconds, description=f"fixed({seconds!r})")

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> Latency:
        """Log-normal durations: half the jobs take less than ``median`` seconds.

        ``sigma`` is the standard deviation of the logarithm (0.3 is a moderate spread).
        """
        if median <= 0 or sigma < 0:
            raise ValueError("lognormal latency needs median > 0 and sigma >= 0")
        mu = math.log(median)
        return cls(
            lambda rng: rng.lognormvariate(mu, sigma),
            typical=median,
            description=f"lognormal(median={median!r}, sigma={sigma!r})",
        )

    @classmethod
    def uniform(cls, low: float, high: float) -> Latency:
        """Durations spread evenly between ``low`` and ``high`` seconds."""
        if not 0 <= low <= high:
            raise ValueError("uniform latency needs 0 <= low <= high")
        return cls(
            lambda rng: rng.uniform(low, high),
            typical=(low + high) / 2,
            description=f"uniform({low!r}, {high!r})",
        )


LatencyLike = Union[float, int, Latency, Callable[[random.Random], float]]


def as_latency(value: LatencyLike) -> Latency:
    """Normalise what users pass as ``latency=`` into a :class:`Latency`."""
    if isinstance(value, Latency):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Latency.fixed(float(value))
    if callable(value):
        # A bare callable has no declared median: estimate it from a private generator so
        # the fake's own random sequence is not disturbed.
        probe = random.Random(0)
        samples = sorted(max(0.0, float(value(probe))) for _ in range(31))
        return Latency(value, typical=samples[15], description=f"custom({value!r})")
    raise TypeError(f"latency must be seconds, a Latency or a callable, got {value!r}")
