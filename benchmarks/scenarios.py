"""The benchmark scenarios, their scaled-down ``--quick`` forms, and the targets they check.

Targets are ratios within one run (the machine is noisy): each returns whether it was met
and the measured numbers, or ``None`` when a peer it needs did not run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Union

__all__ = [
    "SCENARIOS",
    "Bulk",
    "Memory",
    "Payload",
    "Scenario",
    "Target",
    "Throughput",
    "select",
]

#: One scenario's results: peer name (or ``"<peer>@<count>"``) -> its metrics.
Results = Mapping[str, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal of the issue, checked against one scenario's results."""

    text: str
    check: Callable[[Results], tuple[bool, str] | None]


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Many jobs through a fake with a given latency; every peer on a fresh fake."""

    name: str
    title: str
    provider: str  # "dashscope" (sync) or "evolink" (task)
    jobs: int
    in_flight: int
    latency: float | tuple[float, float]  # seconds, or (median, sigma) of a lognormal
    peers: tuple[str, ...]
    targets: tuple[Target, ...] = ()
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "throughput"
    #: Fake provider faults (``Faults`` fields), e.g. ``{"callback_drop": 0.3}``.
    faults: Mapping[str, Any] | None = None
    #: Rounds of every peer, interleaved (peer A, B, C, A, B, C, ...); each peer reports its
    #: median round. Used where the machine's speed drifts more than the gap being measured.
    rounds: int = 1

    @property
    def mean_latency(self) -> float:
        """The expected mean of the latency distribution (the fake's draws are reported)."""
        if isinstance(self.latency, tuple):
            median, sigma = self.latency
            return median * math.exp(sigma * sigma / 2)
        return self.latency

    @property
    def ideal_seconds(self) -> float:
        return self.jobs * self.mean_latency / self.in_flight

    def fake_args(self) -> list[str]:
        # No estimated_time hint: the poller must find the latency by itself.
        if isinstance(self.latency, tuple):
            timing = ["--latency-lognormal", f"{self.latency[0]},{self.latency[1]}"]
        else:
            timing = ["--latency", str(self.latency)]
        faults = ["--faults", json.dumps(dict(self.faults))] if self.faults else []
        return [*timing, "--no-estimated-time", *faults]

    def describe(self) -> str:
        if isinstance(self.latency, tuple):
            lat = f"lognormal median {self.latency[0]:g} s sigma {self.latency[1]:g}"
        else:
            lat = f"fixed {self.latency:g} s"
        return f"{self.provider}, {self.jobs} jobs, {self.in_flight} in flight, {lat}"


@dataclasses.dataclass(frozen=True)
class Memory:
    """A bulk run whose requests each reference their own local image; peak RSS per count."""

    name: str
    title: str
    counts: tuple[int, ...]
    #: Runs where every request names the same image (the cache's best case).
    shared_counts: tuple[int, ...]
    in_flight: int
    image_bytes: int
    latency: float
    peers: tuple[str, ...]
    targets: tuple[Target, ...] = ()
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "memory"
    provider: str = "dashscope"
    #: Counts at which the peers other than the library run (``None``: every count).
    peer_counts: tuple[int, ...] | None = None

    def describe(self) -> str:
        counts = "/".join(f"{c:,}" for c in self.counts)
        if self.shared_counts:
            counts += " (shared image: " + "/".join(f"{c:,}" for c in self.shared_counts) + ")"
        return (
            f"{self.provider} (data URIs), {counts} jobs, {self.in_flight} in flight, "
            f"{self.image_bytes / 2**20:g} MiB image each, latency {self.latency:g} s"
        )


@dataclasses.dataclass(frozen=True)
class Payload:
    """One request with several large local images: encoding time and peak memory."""

    name: str
    title: str
    images: int
    image_bytes: int
    peers: tuple[str, ...] = ("b64", "library", "edit")
    targets: tuple[Target, ...] = ()
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "payload"

    def describe(self) -> str:
        return f"{self.images} local images of {self.image_bytes / 2**20:.2f} MiB, DashScope body"


@dataclasses.dataclass(frozen=True)
class Bulk:
    """``qwen-edit run`` over one manifest, with and without downloads, each on a fresh fake."""

    name: str
    title: str
    jobs: int
    in_flight: int
    latency: float
    provider: str = "dashscope"
    peers: tuple[str, ...] = ("cli",)
    targets: tuple[Target, ...] = ()
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "bulk"

    def describe(self) -> str:
        return (
            f"qwen-edit run, {self.provider}, {self.jobs:,} jobs, --concurrency "
            f"{self.in_flight}, fixed {self.latency:g} s, with and without downloads"
        )


Scenario = Union[Throughput, Memory, Payload, Bulk]


# -- targets ---------------------------------------------------------------------------


def _get(results: Results, peer: str, key: str) -> float | None:
    value = results.get(peer, {}).get(key)
    return None if value is None else float(value)


def _at_least_peer(key: str, other: str, label: str) -> Callable[[Results], Any]:
    def check(results: Results) -> tuple[bool, str] | None:
        mine, theirs = _get(results, "library", key), _get(results, other, key)
        if mine is None or theirs is None:
            return None
        return mine >= theirs, f"{mine:.1f}{label} vs {theirs:.1f}{label} ({mine - theirs:+.1f})"

    return check


def _at_most_peer(key: str, other: str, label: str) -> Callable[[Results], Any]:
    def check(results: Results) -> tuple[bool, str] | None:
        mine, theirs = _get(results, "library", key), _get(results, other, key)
        if mine is None or theirs is None:
            return None
        return mine <= theirs, f"{mine:.3f}{label} vs {theirs:.3f}{label} ({mine - theirs:+.3f})"

    return check


def _ratio_to_peer(
    key: str, other: str, at_least: float, peer: str = "library"
) -> Callable[[Results], Any]:
    def check(results: Results) -> tuple[bool, str] | None:
        mine, theirs = _get(results, peer, key), _get(results, other, key)
        if mine is None or not theirs:
            return None
        ratio = mine / theirs
        return ratio >= at_least, f"{mine:,.0f} vs {theirs:,.0f}: {100 * ratio:.0f}%"

    return check


def _bound(
    key: str, limit: float, *, upper: bool, label: str = "", peer: str = "library"
) -> Callable[[Results], Any]:
    def check(results: Results) -> tuple[bool, str] | None:
        mine = _get(results, peer, key)
        if mine is None:
            return None
        met = mine <= limit if upper else mine >= limit
        return met, f"{mine:.2f}{label} ({'<=' if upper else '>='} {limit:g}{label})"

    return check


def _all_ok(results: Results, peer: str = "library") -> tuple[bool, str] | None:
    lib = results.get(peer)
    if lib is None:
        return None
    ok, jobs = lib.get("ok", 0), lib.get("jobs", 0)
    return ok == jobs and not lib.get("timed_out"), f"{ok}/{jobs} ok"


def _download_share(results: Results) -> tuple[bool, str] | None:
    share = _get(results, "cli", "pct_of_no_download")
    if share is None:
        return None
    with_ = _get(results, "cli", "jobs_per_s") or 0.0
    without = _get(results, "cli_no_download", "jobs_per_s") or 0.0
    return share >= 70.0, f"{with_:.0f} vs {without:.0f} jobs/s: {share:.0f}%"


def _flat_rss(results: Results) -> tuple[bool, str] | None:
    runs = sorted((int(k.split("@")[1]), v) for k, v in results.items() if k.startswith("library@"))
    runs = [(count, v) for count, v in runs if v.get("peak_rss_mb") is not None]
    if len(runs) < 2:
        return None
    (low, first), (high, last) = runs[0], runs[-1]
    growth = last["peak_rss_mb"] - first["peak_rss_mb"]
    # "Flat": within 10% (or 10 MiB, for noise) from the smallest count to the largest.
    met = growth <= max(10.0, 0.10 * first["peak_rss_mb"])
    return met, (
        f"{first['peak_rss_mb']:.0f} MiB at {low:,} -> {last['peak_rss_mb']:.0f} MiB at "
        f"{high:,} ({growth:+.0f} MiB)"
    )


def _rss_at_most_peer(other: str) -> Callable[[Results], Any]:
    """Library peak RSS <= ``other``'s at the largest count both ran with distinct inputs."""

    def check(results: Results) -> tuple[bool, str] | None:
        def counts(peer: str) -> set[int]:
            prefix = f"{peer}@"
            return {int(k[len(prefix) :]) for k in results if k.startswith(prefix)}

        common = counts("library") & counts(other)
        for count in sorted(common, reverse=True):
            mine = _get(results, f"library@{count}", "peak_rss_mb")
            theirs = _get(results, f"{other}@{count}", "peak_rss_mb")
            if mine is not None and theirs is not None:
                return mine <= theirs, (
                    f"{mine:.0f} MiB vs {theirs:.0f} MiB at {count:,} jobs ({mine - theirs:+.0f})"
                )
        return None

    return check


# -- the scenarios -----------------------------------------------------------------------

_SYNC_PEERS = ("library", "baseline", "dashscope_sdk")
_TASK_PEERS = ("library", "baseline")
#: The library polling and the library with callbacks, on the same fake, in the same run.
_CALLBACK_PEERS = ("library", "library_callbacks")
_CB = "library_callbacks"


def _cb_all_ok(results: Results) -> tuple[bool, str] | None:
    return _all_ok(results, _CB)


#: The synchronous scenarios' checks against the hand-written pattern.
_AGAINST_BASELINE = (
    Target("% of ideal >= baseline", _at_least_peer("pct_ideal", "baseline", "%")),
    Target("client CPU/job <= baseline", _at_most_peer("cpu_ms_per_job", "baseline", " ms")),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Throughput(
            name="sync",
            title="1. Sync dialect (DashScope)",
            provider="dashscope",
            jobs=2000,
            in_flight=200,
            latency=0.5,
            peers=_SYNC_PEERS,
            targets=_AGAINST_BASELINE,
            quick={"jobs": 400, "in_flight": 100},
            # Client CPU per job swings about 10% between runs of one peer: three rounds.
            rounds=3,
        ),
        Throughput(
            name="sync-10k",
            title="1b. Sync dialect, 10,000 jobs",
            provider="dashscope",
            jobs=10000,
            in_flight=200,
            latency=0.5,
            peers=_SYNC_PEERS,
            targets=(
                Target("% of ideal >= 97 (aim)", _bound("pct_ideal", 97.0, upper=False, label="%")),
                *_AGAINST_BASELINE,
            ),
            quick={"jobs": 1000, "in_flight": 100},
        ),
        Throughput(
            # The same traffic with a latency spread, as a real provider's: answers do not
            # come back in the waves a fixed latency keeps, so neither client batches them.
            name="sync-lognormal",
            title="1c. Sync dialect, lognormal latency",
            provider="dashscope",
            jobs=3000,
            in_flight=200,
            latency=(0.5, 0.3),
            peers=_SYNC_PEERS,
            targets=_AGAINST_BASELINE,
            quick={"jobs": 600, "in_flight": 100},
            rounds=3,
        ),
        Throughput(
            name="task-lognormal",
            title="2. Task dialect (Evolink), lognormal latency, no hint",
            provider="evolink",
            jobs=2000,
            in_flight=200,
            latency=(0.5, 0.3),
            peers=_TASK_PEERS,
            targets=(
                Target("% of ideal >= 85", _bound("pct_ideal", 85.0, upper=False, label="%")),
                Target(
                    "% of perfect >= 85 (default config)",
                    _bound("pct_ideal_makespan", 85.0, upper=False, label="%"),
                ),
                Target("status requests/job <= 2.0", _bound("status_per_job", 2.0, upper=True)),
            ),
            quick={"jobs": 400, "in_flight": 100},
        ),
        Throughput(
            name="task-fixed",
            title="2b. Task dialect (Evolink), fixed latency, no hint",
            provider="evolink",
            jobs=2000,
            in_flight=200,
            latency=0.5,
            peers=_TASK_PEERS,
            targets=(
                Target(
                    "status requests/job about 1 (<= 1.2)",
                    _bound("status_per_job", 1.2, upper=True),
                ),
            ),
            quick={"jobs": 400, "in_flight": 100},
        ),
        Throughput(
            name="cpu",
            title="4. CPU-bound round trips (latency 0), against a raw aiohttp loop",
            provider="dashscope",
            jobs=20000,
            in_flight=200,
            latency=0.0,
            peers=("raw", "library", "baseline", "raw_uvloop", "library_uvloop"),
            # The raw loop's own speed drifts between runs on a shared 2-core machine (4,000 to
            # 9,000 jobs/s): three interleaved rounds, the median of each peer.
            rounds=3,
            targets=(
                Target(
                    "library >= 80% of the raw aiohttp loop (jobs/s, asyncio)",
                    _ratio_to_peer("jobs_per_s", "raw", 0.80),
                ),
                Target(
                    "library >= 80% of the raw aiohttp loop (jobs/s, uvloop)",
                    _ratio_to_peer("jobs_per_s", "raw_uvloop", 0.80, peer="library_uvloop"),
                ),
                Target(
                    "client CPU/job <= baseline",
                    _at_most_peer("cpu_ms_per_job", "baseline", " ms"),
                ),
            ),
            quick={"jobs": 4000, "in_flight": 200},
        ),
        Throughput(
            name="scale",
            title="3. Scale: 5,000 tasks in flight",
            provider="evolink",
            jobs=20000,
            in_flight=5000,
            latency=(5.0, 0.3),
            peers=_TASK_PEERS,
            targets=(
                Target("completes", _all_ok),
                Target("% of ideal >= 80", _bound("pct_ideal", 80.0, upper=False, label="%")),
                Target(
                    "% of perfect >= 85 (default config)",
                    _bound("pct_ideal_makespan", 85.0, upper=False, label="%"),
                ),
                Target("status requests/job <= 2.0", _bound("status_per_job", 2.0, upper=True)),
            ),
            quick={"jobs": 2000, "in_flight": 500, "latency": (2.0, 0.3)},
        ),
        Throughput(
            name="callbacks",
            title="6. Completion callbacks (Evolink) beside polling",
            provider="evolink",
            jobs=2000,
            in_flight=200,
            latency=(0.5, 0.3),
            peers=_CALLBACK_PEERS,
            targets=(
                Target("lag p50 <= 20 ms", _bound("lag_p50_ms", 20.0, upper=True, peer=_CB)),
                Target("lag p99 <= 100 ms", _bound("lag_p99_ms", 100.0, upper=True, peer=_CB)),
                Target(
                    ">= 97% of the zero-lag client",
                    _bound("pct_ideal_makespan", 97.0, upper=False, label="%", peer=_CB),
                ),
                Target(
                    "status requests/job <= 0.2",
                    _bound("status_per_job", 0.2, upper=True, peer=_CB),
                ),
            ),
            quick={"jobs": 400, "in_flight": 100},
        ),
        Throughput(
            name="callbacks-drop30",
            title="6b. Completion callbacks, 30% of them lost",
            provider="evolink",
            jobs=2000,
            in_flight=200,
            latency=(0.5, 0.3),
            peers=_CALLBACK_PEERS,
            faults={"callback_drop": 0.3},
            targets=(
                Target("every job completes", _cb_all_ok),
                Target(
                    "status requests/job <= 1.0",
                    _bound("status_per_job", 1.0, upper=True, peer=_CB),
                ),
            ),
            quick={"jobs": 400, "in_flight": 100},
        ),
        Memory(
            name="memory",
            title="4. Memory: bulk run, 1 MiB local images",
            counts=(1000, 10000, 100000),
            shared_counts=(10000,),
            in_flight=64,
            image_bytes=2**20,
            latency=0.05,
            peers=("library", "baseline"),
            targets=(
                Target("peak RSS flat as the count grows", _flat_rss),
                Target("peak RSS <= hand-written (distinct inputs)", _rss_at_most_peer("baseline")),
            ),
            # The hand-written pattern holds one file per slot, so its memory cannot grow with
            # the count: 100,000 of its jobs (15 minutes) would measure nothing new.
            peer_counts=(1000, 10000),
            quick={"counts": (200, 1000, 3000), "shared_counts": (1000,), "peer_counts": None},
        ),
        Memory(
            name="memory-10mib",
            title="4b. Memory: 64 in flight, 10 MiB local images",
            counts=(256,),
            shared_counts=(),
            in_flight=64,
            image_bytes=10 * 2**20 - 4096,
            latency=0.05,
            peers=("library",),
            targets=(
                Target(
                    "peak RSS <= 150 MiB",
                    _bound("peak_rss_mb", 150.0, upper=True, label=" MiB", peer="library@256"),
                ),
            ),
            quick={"counts": (128,)},
        ),
        Bulk(
            name="bulk",
            title="7. Bulk CLI: downloads on and off",
            jobs=6000,
            in_flight=200,
            latency=0.2,
            targets=(Target("with downloads >= 70% of the no-download rate", _download_share),),
            quick={"jobs": 2000},
        ),
        Payload(
            name="payload",
            title="5. Payload: three ~10 MB local images",
            images=3,
            image_bytes=10 * 2**20 - 4096,
        ),
    )
}


def select(
    names: list[str] | None,
    *,
    quick: bool,
    jobs: int | None = None,
    in_flight: int | None = None,
    latency: float | None = None,
    rounds: int | None = None,
) -> list[Scenario]:
    """The scenarios named (all when ``names`` is empty), scaled for ``--quick`` and for
    explicit ``jobs``/``in_flight``/``latency`` overrides (throughput and bulk scenarios;
    ``latency`` replaces a fixed latency, or the median of a lognormal one; a memory
    scenario takes ``jobs`` as its one count and ``in_flight``; ``rounds`` replaces a
    throughput scenario's rounds)."""
    chosen = []
    for name in names or list(SCENARIOS):
        if name not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            raise SystemExit(f"unknown scenario {name!r}; known: {known}")
        scenario = SCENARIOS[name]
        if quick and scenario.quick:
            scenario = dataclasses.replace(scenario, **scenario.quick)
        if isinstance(scenario, Memory):
            # --jobs N: one count of distinct inputs (no shared-input run).
            if jobs is not None:
                scenario = dataclasses.replace(
                    scenario, counts=(jobs,), shared_counts=(), peer_counts=None
                )
            if in_flight is not None:
                scenario = dataclasses.replace(scenario, in_flight=in_flight)
        if isinstance(scenario, Bulk):
            overrides = {"jobs": jobs, "in_flight": in_flight, "latency": latency}
            given: dict[str, Any] = {
                key: value for key, value in overrides.items() if value is not None
            }
            scenario = dataclasses.replace(scenario, **given)
        if isinstance(scenario, Throughput):
            if rounds is not None:
                scenario = dataclasses.replace(scenario, rounds=rounds)
            if jobs is not None:
                scenario = dataclasses.replace(scenario, jobs=jobs)
            if in_flight is not None:
                scenario = dataclasses.replace(scenario, in_flight=in_flight)
            if latency is not None:
                spread = scenario.latency
                value = (latency, spread[1]) if isinstance(spread, tuple) else latency
                scenario = dataclasses.replace(scenario, latency=value)
        chosen.append(scenario)
    return chosen
