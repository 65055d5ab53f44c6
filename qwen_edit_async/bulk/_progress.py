"""Progress of a bulk run: a live bar on a terminal, plain periodic lines otherwise.

The runner updates a :class:`Tracker` (plain counters, no I/O); a reporter reads it a few
times a second. The bar uses rich when it is installed (``pip install qwen-edit-async[cli]``).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import IO, Literal, Protocol

from .._text import printable
from ._state import EntryState

__all__ = ["BarReporter", "LineReporter", "Reporter", "Tracker", "make_reporter"]

ProgressMode = Literal["auto", "bar", "lines", "none"]


class Tracker:
    """Counters of a run: jobs done (ok, failed, uncertain), in flight, rate and ETA.

    Jobs that had ended before this run (``--resume``) count as done but not in the rate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        #: Non-blank manifest lines, once counted (``None`` until then).
        self.total: int | None = None
        self.succeeded = 0
        self.failed = 0
        self.uncertain = 0
        self.in_flight = 0
        self.images = 0
        self._finished_now = 0
        # (time, jobs finished by this run) samples for a rate over the last seconds.
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.uncertain

    def finish(self, status: EntryState, *, earlier: bool = False, images: int = 0) -> None:
        """Count one job that ended ``succeeded``, ``failed`` or ``uncertain``."""
        if status is EntryState.SUCCEEDED:
            self.succeeded += 1
        elif status is EntryState.UNCERTAIN:
            self.uncertain += 1
        else:
            self.failed += 1
        self.images += images
        if not earlier:
            self._finished_now += 1

    def retract(self, status: EntryState, count: int) -> None:
        """Uncount ``count`` jobs counted as ``status`` by this run (they were requeued)."""
        if status is EntryState.SUCCEEDED:
            self.succeeded -= count
        elif status is EntryState.UNCERTAIN:
            self.uncertain -= count
        else:
            self.failed -= count
        self._finished_now -= count

    def rate(self, window: float = 10.0) -> float:
        """Jobs per second finished by this run, over about the last ``window`` seconds."""
        now = self._clock()
        samples = self._samples
        samples.append((now, self._finished_now))
        while len(samples) > 2 and samples[1][0] < now - window:
            samples.popleft()
        first_time, first_count = samples[0]
        if now - first_time < 0.5:
            elapsed = now - self.started
            return self._finished_now / elapsed if elapsed > 0.5 else 0.0
        return (self._finished_now - first_count) / (now - first_time)

    def eta(self, rate: float) -> float | None:
        """Seconds left at ``rate``, when the total is known and the rate is not zero."""
        if self.total is None or rate <= 0:
            return None
        return max(0, self.total - self.done) / rate

    def elapsed(self) -> float:
        return self._clock() - self.started

    def describe(self) -> str:
        """One line: ``120/300 done (ok 118, failed 2, uncertain 0), 32 in flight, ...``."""
        rate = self.rate()
        total = "?" if self.total is None else str(self.total)
        return (
            f"{self.done}/{total} done (ok {self.succeeded}, failed {self.failed}, "
            f"uncertain {self.uncertain}), {self.in_flight} in flight, {rate:.1f} jobs/s, "
            f"ETA {format_seconds(self.eta(rate))}"
        )


def format_seconds(seconds: float | None) -> str:
    """``"1:02:03"``, ``"4:05"``, ``"7s"``, or ``"?"``."""
    if seconds is None:
        return "?"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    if minutes:
        return f"{minutes}:{secs:02d}"
    return f"{secs}s"


class Reporter(Protocol):
    """Shows a :class:`Tracker`; ``update`` is called a few times a second."""

    def start(self) -> None: ...

    def update(self) -> None: ...

    def stop(self) -> None: ...

    def log(self, message: str) -> None:
        """Print a message (control characters escaped) without breaking the display."""


class NullReporter:
    """Shows no progress (``--progress none``); messages still go to ``stream``."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def start(self) -> None:
        pass

    def log(self, message: str) -> None:
        print(printable(message), file=self.stream, flush=True)

    def update(self) -> None:
        pass

    def stop(self) -> None:
        pass


class LineReporter:
    """A plain line every ``interval`` seconds, for logs and pipes."""

    def __init__(self, tracker: Tracker, stream: IO[str], interval: float = 5.0) -> None:
        self.tracker = tracker
        self.stream = stream
        self.interval = interval
        self._next = 0.0

    def _emit(self) -> None:
        elapsed = self.tracker.elapsed()
        print(f"[{elapsed:7.1f}s] {self.tracker.describe()}", file=self.stream, flush=True)

    def start(self) -> None:
        self._next = self.tracker.elapsed() + self.interval

    def update(self) -> None:
        if self.tracker.elapsed() >= self._next:
            self._next += self.interval
            self._emit()

    def stop(self) -> None:
        self._emit()

    def log(self, message: str) -> None:
        print(printable(message), file=self.stream, flush=True)


class BarReporter:
    """A live rich progress bar: done/total, ok, failed, uncertain, in flight, rate, ETA."""

    def __init__(self, tracker: Tracker, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.tracker = tracker
        self._progress = Progress(
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(file=stream),
            refresh_per_second=5,
        )
        self._task = self._progress.add_task("run", total=None, detail="")

    def _detail(self) -> str:
        t = self.tracker
        rate = t.rate()
        return (
            f"[green]{t.succeeded} ok[/], [red]{t.failed} failed[/], "
            f"[yellow]{t.uncertain} uncertain[/] | {t.in_flight} in flight | "
            f"{rate:.1f}/s | ETA {format_seconds(t.eta(rate))}"
        )

    def start(self) -> None:
        self._progress.start()

    def update(self) -> None:
        t = self.tracker
        self._progress.update(self._task, total=t.total, completed=t.done, detail=self._detail())

    def stop(self) -> None:
        self.update()
        self._progress.stop()

    def log(self, message: str) -> None:
        self._progress.console.print(printable(message), markup=False, highlight=False)


def make_reporter(
    mode: ProgressMode, tracker: Tracker, stream: IO[str], *, interval: float = 5.0
) -> Reporter:
    """The bar on a terminal when rich is installed (``auto``), else plain lines."""
    if mode == "none":
        return NullReporter(stream)
    if mode in ("auto", "bar"):
        interactive = mode == "bar" or bool(getattr(stream, "isatty", lambda: False)())
        if interactive:
            try:
                return BarReporter(tracker, stream)
            except ImportError:
                pass
    return LineReporter(tracker, stream, interval)
