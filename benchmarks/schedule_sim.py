"""Discrete-event simulation of the poll schedule (``qwen_edit_async._schedule``).

``python benchmarks/schedule_sim.py`` prints a markdown table: for each scenario, the
throughput as a fraction of the ideal (in flight / mean latency), the same for a clairvoyant
poller that asks exactly once, at the moment the task ends ("oracle": what the run's start
and drain allow at all), status requests per job, and the checks that no plan misbehaves.

The model: a client keeps ``in_flight`` jobs running; each create and each status request
takes one round trip (``rtt``); a status request is answered "done" if it reaches the provider
after the task ended. Optional ``rate`` caps status requests per second (a provider limit):
a request that is due while the cap is exhausted waits for the next free slot, and the
schedule is told when it really left (``observe(..., elapsed=...)``).

Each scenario runs twice: with the client's poller as it is, and with a poller that calls
``PollPlan.recheck`` when a request comes due (``PollSchedule(recheck=True)``). ``--seeds 3``
averages over seeds: with 2,000 jobs the drain alone moves eff by a few points between seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_edit_async._schedule import PollPlan, PollSchedule

#: latency(rng, job_index) -> seconds
LatencyFn = Callable[[random.Random, int], float]


@dataclasses.dataclass
class Result:
    eff: float
    polls_per_job: float
    max_polls: int
    min_gap: float  # smallest gap between two status requests of one task (s)
    max_gap: float  # largest gap between two status requests of one task (s)
    first_min: float  # earliest first status request (s after acceptance)
    cpu_per_poll_us: float  # schedule CPU (plan + at + observe) per status request


class _Clairvoyant:
    """Asks once, exactly when the task ends (as seen by the client)."""

    def __init__(self, at: float) -> None:
        self._at = at + 1e-9

    def at(self, attempt: int) -> float:
        return self._at + attempt


def simulate(
    latency: LatencyFn,
    *,
    in_flight: int,
    jobs: int,
    initial: float = 1.0,
    hint: float | None = None,
    rtt: float = 0.002,
    rate: float | None = None,
    seed: int = 1,
    oracle: bool = False,
    recheck: bool = False,
) -> Result:
    """Run ``jobs`` jobs with at most ``in_flight`` at a time; see the module docstring."""
    rng = random.Random(seed)
    schedule = PollSchedule(initial=initial, rng=random.Random(seed + 1), recheck=recheck)
    cpu = 0.0
    # Events: (time, seq, kind, task). kind 0: a status request leaves; 1: its answer arrives.
    events: list[tuple[float, int, int, list[object]]] = []
    seq = 0
    started = 0
    latency_sum = 0.0
    polls = 0
    max_polls = 0
    min_gap, max_gap, first_min = math.inf, 0.0, math.inf
    next_free = 0.0
    end = 0.0

    def push(when: float, kind: int, task: list[object]) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, kind, task))

    def create(sent: float) -> None:
        nonlocal started, latency_sum, cpu
        lat = latency(rng, started)
        started += 1
        latency_sum += lat
        accepted = sent + rtt
        tick = time.perf_counter()
        plan: PollPlan | _Clairvoyant
        plan = _Clairvoyant(max(0.0, lat - rtt)) if oracle else schedule.plan(hint)
        first = plan.at(0)
        cpu += time.perf_counter() - tick
        # task: accepted, latency, plan, attempt, last send, polls, holds a reserved slot
        push(accepted + first, 0, [accepted, lat, plan, 0, None, 0, False])

    for _ in range(min(in_flight, jobs)):
        create(0.0)
    while events:
        now, _, kind, task = heapq.heappop(events)
        accepted, lat, plan, attempt, last, count, _ = task
        assert isinstance(accepted, float) and isinstance(lat, float)
        assert isinstance(attempt, int) and isinstance(count, int)
        if kind == 0:
            if recheck and not task[6] and isinstance(plan, PollPlan):
                tick = time.perf_counter()
                later = plan.recheck(attempt, now - accepted)
                cpu += time.perf_counter() - tick
                if later > now - accepted + 1e-9:  # pushed back
                    push(accepted + later, 0, task)
                    continue
            if rate is not None and not task[6]:
                if now < next_free:  # wait for the slot reserved now
                    task[6] = True
                    push(next_free, 0, task)
                    next_free += 1.0 / rate
                    continue
                next_free = now + 1.0 / rate
            task[6] = False
            if last is None:
                first_min = min(first_min, now - accepted)
            else:
                assert isinstance(last, float)
                min_gap = min(min_gap, now - last)
                max_gap = max(max_gap, now - last)
            task[4] = now
            task[5] = count + 1
            polls += 1
            push(now + rtt, 1, task)
            continue
        sent = task[4]
        assert isinstance(sent, float)
        done = sent - accepted >= lat - rtt
        if isinstance(plan, PollPlan):
            tick = time.perf_counter()
            schedule.observe(plan, attempt, done, elapsed=sent - accepted)
            cpu += time.perf_counter() - tick
        if done:
            max_polls = max(max_polls, count)
            end = now
            if started < jobs:
                create(now)
            continue
        task[3] = attempt + 1
        tick = time.perf_counter()
        assert isinstance(plan, (PollPlan, _Clairvoyant))
        due = accepted + plan.at(attempt + 1)
        cpu += time.perf_counter() - tick
        push(max(due, now), 0, task)
    ideal = in_flight / (latency_sum / jobs)
    return Result(
        eff=jobs / end / ideal,
        polls_per_job=polls / jobs,
        max_polls=max_polls,
        min_gap=min_gap,
        max_gap=max_gap,
        first_min=first_min,
        cpu_per_poll_us=cpu / polls * 1e6,
    )


def lognormal(median: float, sigma: float) -> LatencyFn:
    mu = math.log(median)
    return lambda rng, _i: rng.lognormvariate(mu, sigma)


def fixed(seconds: float) -> LatencyFn:
    return lambda _rng, _i: seconds


def bimodal(fast: float, slow: float, slow_share: float, sigma: float) -> LatencyFn:
    def draw(rng: random.Random, _i: int) -> float:
        median = slow if rng.random() < slow_share else fast
        return median * math.exp(sigma * rng.gauss(0.0, 1.0))

    return draw


def drifting(median: float, sigma: float, at_job: int, factor: float) -> LatencyFn:
    def draw(rng: random.Random, i: int) -> float:
        base = median * (factor if i >= at_job else 1.0)
        return base * math.exp(sigma * rng.gauss(0.0, 1.0))

    return draw


def failing_fast(share: float, fail_after: float, median: float, sigma: float) -> LatencyFn:
    def draw(rng: random.Random, _i: int) -> float:
        if rng.random() < share:
            return fail_after
        return median * math.exp(sigma * rng.gauss(0.0, 1.0))

    return draw


@dataclasses.dataclass
class Scenario:
    name: str
    latency: LatencyFn
    in_flight: int
    jobs: int
    hint: float | None = None
    rate: float | None = None
    initial: float = 1.0


SCENARIOS = [
    Scenario("lognormal 0.5 s σ0.3, 200 in flight, 2,000 jobs", lognormal(0.5, 0.3), 200, 2000),
    Scenario("lognormal 0.5 s σ0.3, 200 in flight, 10,000 jobs", lognormal(0.5, 0.3), 200, 10000),
    Scenario("fixed 0.5 s, 200 in flight, 2,000 jobs", fixed(0.5), 200, 2000),
    Scenario("fixed 0.5 s, 200 in flight, 10,000 jobs", fixed(0.5), 200, 10000),
    Scenario("lognormal 5 s σ0.3, 5,000 in flight, 20,000 jobs", lognormal(5, 0.3), 5000, 20000),
    Scenario("same, hint 30 s (6x too long)", lognormal(5, 0.3), 5000, 20000, hint=30.0),
    Scenario("same, hint 1 s (5x too short)", lognormal(5, 0.3), 5000, 20000, hint=1.0),
    Scenario("same, hint 5 s (right)", lognormal(5, 0.3), 5000, 20000, hint=5.0),
    Scenario("heavy tail: lognormal 0.5 s σ0.8, 200, 10,000", lognormal(0.5, 0.8), 200, 10000),
    Scenario(
        "bimodal: 70% 0.5 s / 30% 2 s (σ0.2), 200, 10,000",
        bimodal(0.5, 2.0, 0.3, 0.2),
        200,
        10000,
    ),
    Scenario(
        "drift: 0.5 s σ0.3 doubling at job 5,000, 200, 10,000",
        drifting(0.5, 0.3, 5000, 2.0),
        200,
        10000,
    ),
    Scenario(
        "drift: 1 s σ0.3 halving at job 5,000, 200, 10,000",
        drifting(1.0, 0.3, 5000, 0.5),
        200,
        10000,
    ),
    Scenario(
        "10% fail at 0.1 s, else 0.5 s σ0.3, 200, 10,000",
        failing_fast(0.1, 0.1, 0.5, 0.3),
        200,
        10000,
    ),
    Scenario("slow and few: 30 s σ0.5, 16 in flight, 200 jobs", lognormal(30, 0.5), 16, 200),
    Scenario(
        "status cap 20/s: 5 s σ0.3, 40 in flight, 1,000 jobs",
        lognormal(5, 0.3),
        40,
        1000,
        rate=20.0,
    ),
]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1, help="average over this many seeds")
    parser.add_argument("--rtt", type=float, default=0.002, help="round trip (s), default 2 ms")
    parser.add_argument("-k", default="", help="only scenarios whose name contains this")
    args = parser.parse_args(argv)
    print(
        "| scenario | oracle | eff | polls/job | eff, recheck | polls/job, recheck "
        "| max polls | min gap ms | max gap s | µs/poll |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc in SCENARIOS:
        if args.k not in sc.name:
            continue
        rows: dict[str, list[Result]] = {"oracle": [], "plain": [], "recheck": []}
        for seed in range(1, args.seeds + 1):
            for mode in rows:
                rows[mode].append(
                    simulate(
                        sc.latency,
                        in_flight=sc.in_flight,
                        jobs=sc.jobs,
                        initial=sc.initial,
                        hint=sc.hint,
                        rtt=args.rtt,
                        rate=sc.rate,
                        seed=seed,
                        oracle=mode == "oracle",
                        recheck=mode == "recheck",
                    )
                )
        runs = rows["plain"] + rows["recheck"]
        print(
            f"| {sc.name} | {_mean([r.eff for r in rows['oracle']]):.3f} "
            f"| {_mean([r.eff for r in rows['plain']]):.3f} "
            f"| {_mean([r.polls_per_job for r in rows['plain']]):.2f} "
            f"| {_mean([r.eff for r in rows['recheck']]):.3f} "
            f"| {_mean([r.polls_per_job for r in rows['recheck']]):.2f} "
            f"| {max(r.max_polls for r in runs)} | {min(r.min_gap for r in runs) * 1e3:.0f} "
            f"| {max(r.max_gap for r in runs):.2f} "
            f"| {_mean([r.cpu_per_poll_us for r in runs]):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
