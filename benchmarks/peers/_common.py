"""What every peer shares: the spec it is given, its meter, and the line it prints."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = [
    "IMAGE_URL",
    "MODEL",
    "PROMPT",
    "RESULT_PREFIX",
    "Meter",
    "current_rss_mb",
    "main",
]

RESULT_PREFIX = "BENCH-RESULT "
#: A small URL input: the fake treats any non-local URL as fetchable, so nothing is fetched.
IMAGE_URL = "https://example.com/cat.png"
PROMPT = "Put a red party hat on the cat"
MODEL = "qwen-image-edit-plus"


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the high-water mark of the whole process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _LoopCounter:
    """Counts the passes of an asyncio event loop (``_run_once`` calls): how often the loop
    went round to do the work. uvloop has no such hook: its count is ``None``."""

    def __init__(self) -> None:
        self.count = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        run_once = getattr(loop, "_run_once", None)
        if run_once is None:
            return
        self.loop = loop

        def counted() -> None:
            self.count += 1
            run_once()

        loop._run_once = counted  # type: ignore[attr-defined]


class Meter:
    """Wall time and CPU time (all threads) of this process from ``start()`` to ``stop()``,
    the event loop's passes in between, and how often the process went to sleep and was woken
    (voluntary context switches: each one a wait in ``epoll_wait`` or a lock that ended when
    something came) or was preempted (involuntary ones).

    Peers start it after their imports and set-up, right before the first job, so the
    numbers are the cost of the jobs, not of the interpreter.
    """

    def __init__(self) -> None:
        self.rss_idle_mb = current_rss_mb()
        self._t0 = 0.0
        self._wall0 = 0.0
        self._ru0: resource.struct_rusage | None = None
        self._loop = _LoopCounter()
        self._loop0 = 0

    def start(self) -> None:
        self._loop0 = self._loop.count
        self._ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self._wall0 = time.time()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        ru0 = self._ru0
        assert ru0 is not None, "Meter.start() was not called"
        user = ru1.ru_utime - ru0.ru_utime
        system = ru1.ru_stime - ru0.ru_stime
        # Counted by the kernel for the whole process (all threads), like the CPU time.
        wakeups = ru1.ru_nvcsw - ru0.ru_nvcsw
        preempted = ru1.ru_nivcsw - ru0.ru_nivcsw
        return {
            "wall_s": elapsed,
            "cpu_s": user + system,
            "cpu_user_s": user,
            "cpu_sys_s": system,
            "wakeups": wakeups,
            "preempted": preempted,
            "started_at": self._wall0,
            "peak_rss_mb": _peak_rss_mb(),
            "rss_idle_mb": self.rss_idle_mb,
            "loop_iterations": (
                self._loop.count - self._loop0 if self._loop.loop is not None else None
            ),
            "event_loop": _loop_name(),
        }


def _loop_name() -> str:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "none"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def main(run: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """Read the spec from ``argv[1]``, run the peer on asyncio, report its result: to the
    file ``spec["result_path"]`` when given (a profiler may share stdout), else as one
    ``BENCH-RESULT {json}`` line on stdout."""
    spec = json.loads(sys.argv[1])
    if spec.get("loop") == "uvloop":
        import uvloop

        result = uvloop.run(run(spec))
    else:
        result = asyncio.run(run(spec))
    text = json.dumps(result, separators=(",", ":"))
    if spec.get("result_path"):
        with open(spec["result_path"], "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(RESULT_PREFIX + text + "\n")
        sys.stdout.flush()
