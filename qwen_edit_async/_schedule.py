"""When to ask a provider whether a task has finished.

Method
------
Every status answer is an exact observation: "was the task done ``b`` seconds after it was
accepted, given that it was not done at the previous answer, ``a`` seconds after?". The
schedule keeps these answers as weighted counts keyed by the pair of log-time bins ``(a, b)``
(O(1) per answer; old answers fade so a drifting latency is followed). Chained per task, the
terms are the exact interval-censored likelihood of the task latencies, tasks still running
included, so the estimate is not biased towards the fast tasks that finish first.

Every few answers (often at first, then every few hundred) a lognormal latency is fitted to
the counts: maximum a posteriori, a few warm-started Newton steps with a weak prior centred on
the hint (or ``initial``) and a moderate spread. The ladder of poll times is the dynamic
programme that minimises expected detection lag plus a price per status request
(:data:`_PRICE` of the median latency), solved once per spread on a grid of quantiles. Only
the first poll of a task is fixed when it is accepted; each later one is chosen when the
previous answer arrives, as the optimal continuation given "still running at ``a``" under
the fit of that moment, so tasks accepted before anything was known profit from what their
neighbours taught since.

Before enough tasks have finished the first check is drawn between :data:`_SPREAD` times the
hint or ``initial`` (early, because a poll too early costs one request while a poll too late
costs the whole gap, and hints can be several times too long); later checks grow by
:data:`_SEARCH` until answers arrive. A task slower than the fit expects falls back to
intervals growing by ``growth``. Every interval is at least 50 ms and at most
``max_interval``.

Measured with ``benchmarks/schedule_sim.py`` (eff = achieved jobs/s over in-flight / mean
latency; the run's drain, which even a clairvoyant poller pays, is included; "oracle" is the
clairvoyant's eff):

============================================  =====  =======  =========
scenario                                       eff   oracle   polls/job
============================================  =====  =======  =========
lognormal 0.5 s sigma 0.3, 200, 2,000 jobs     0.73   0.85      1.93
same, 10,000 jobs                              0.82   0.97      1.93
fixed 0.5 s, 200, 10,000 jobs                  0.95   0.99      1.05
lognormal 5 s sigma 0.3, 5,000, 20,000 jobs    0.52   0.60      2.16
============================================  =====  =======  =========

(The table is refreshed by running the benchmark; see its output for all scenarios.)
"""

from __future__ import annotations

import functools
import math
import random
from bisect import bisect_right
from statistics import NormalDist

__all__ = ["PollPlan", "PollSchedule"]

_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Price of one status request, in units of the median latency. At sigma 0.3 the optimal
#: ladder then makes about 1.9 requests per task and detects at 86% of the ideal rate.
_PRICE = 0.12
#: Smallest gap between two status requests of one task (seconds).
_MIN_GAP = 0.05
#: Width of a log-time bin of the answer counts (1% in time).
_BIN = 0.01
#: Answers after which an old answer weighs 1/e.
_MEMORY = 4000.0
#: Weighted number of finished tasks before the fit is trusted.
_LEARNED_DONE = 6.0
#: First check before learning: this range of the hint or ``initial`` (log-uniform).
_SPREAD = (0.2, 0.5)
#: Growth of the checks of a task while nothing is known.
_SEARCH = 2.0
#: Prior of the fit: log-median sd, and spread (sigma) centre and log sd.
_PRIOR_MU_SD = 2.0
_PRIOR_SIGMA = 0.35
_PRIOR_LOG_SIGMA_SD = 0.7
_MIN_SIGMA = 0.01
_MAX_SIGMA = 2.0
#: Learned plans are spread by the tasks' own latencies; their jitter is this fraction.
_LEARNED_JITTER = 0.2
#: The dynamic programme's grid of standard-normal quantiles.
_Z_LOW, _Z_STEP, _Z_COUNT, _Z_END = -4.0, 0.05, 171, 3.6
_NO_BIN = -(1 << 40)


def _upper(z: float) -> float:
    """P(Z > z) for a standard normal, accurate in both tails."""
    return 0.5 * math.erfc(z / _SQRT2)


def _pdf(z: float) -> float:
    return math.exp(-0.5 * z * z - _LOG_SQRT_2PI) if -40.0 < z < 40.0 else 0.0


class _Ladder:
    """The optimal poll ladder for a lognormal of median 1 and a given sigma.

    ``after(z)``: the standard-normal quantile of the next poll for a task still running at
    quantile ``z`` (``None`` beyond the grid: the caller falls back to growing intervals).
    """

    __slots__ = ("first", "follow", "zs")

    def __init__(self, sigma: float) -> None:
        zs = [_Z_LOW + i * _Z_STEP for i in range(_Z_COUNT)]
        cdf = [1.0 - _upper(z) for z in zs]
        times = [math.exp(sigma * z) for z in zs]
        scale = math.exp(sigma * sigma / 2.0)
        part = [scale * (1.0 - _upper(z - sigma)) for z in zs]  # E[T; T <= t]
        n = len(zs)
        value = [0.0] * n
        follow: list[int] = [-1] * n
        price = _PRICE
        for i in range(n - 1, -1, -1):
            if zs[i] >= _Z_END:
                continue
            base_f, base_p = cdf[i], part[i]
            fixed = price * (1.0 - base_f)
            best, best_j = math.inf, -1
            for j in range(i + 1, n):
                cost = times[j] * (cdf[j] - base_f) - (part[j] - base_p) + fixed + value[j]
                if cost < best:
                    best, best_j = cost, j
                elif times[j] * (cdf[j] - base_f) - (part[j] - base_p) > best:
                    break  # the lag alone already exceeds the best: later j only grow it
            value[i], follow[i] = best, best_j
        best, first = math.inf, 0
        for j in range(n):
            lag = times[j] * cdf[j] - part[j]
            cost = lag + price + value[j]
            if cost < best:
                best, first = cost, j
            elif lag > best:
                break
        self.zs = zs
        self.follow = follow
        self.first = zs[first]

    def after(self, z: float) -> float | None:
        i = bisect_right(self.zs, z) - 1
        if i < 0:
            return self.first
        j = self.follow[i]
        return None if j < 0 else self.zs[j]


@functools.lru_cache(maxsize=None)
def _ladder(sigma_step: int) -> _Ladder:
    return _Ladder(math.exp(sigma_step * 0.04))


def _ladder_for(sigma: float) -> _Ladder:
    # Quantised in 4% steps of sigma: at most ~130 ladders, each built once (a few ms).
    return _ladder(round(math.log(sigma) / 0.04))


class _Fit:
    """Answer counts and the lognormal fitted to them (log-median ``mu``, spread ``sigma``)."""

    __slots__ = ("counts", "done", "mu", "mu0", "pending_answers", "sigma", "total")

    def __init__(self, median: float) -> None:
        #: (bin of previous answer or _NO_BIN, bin of this answer) -> [pending, done] weights.
        self.counts: dict[tuple[int, int], list[float]] = {}
        self.mu0 = math.log(median)
        self.mu = self.mu0
        self.sigma = _PRIOR_SIGMA
        #: Weighted number of done answers (finished tasks) in the counts.
        self.done = 0.0
        self.total = 0.0
        self.pending_answers = 0

    def add(self, prev: float | None, at: float, done: bool) -> None:
        b = round(math.log(max(at, 1e-3)) / _BIN)
        if prev is None:
            a = _NO_BIN
        else:
            a = round(math.log(max(prev, 1e-3)) / _BIN)
            b = max(b, a + 1)
        cell = self.counts.get((a, b))
        if cell is None:
            cell = self.counts[a, b] = [0.0, 0.0]
        cell[done] += 1.0
        self.done += done
        self.total += 1.0
        self.pending_answers += 1

    def refit(self) -> None:
        """Fade old answers, then move (mu, sigma) to the posterior mode."""
        fade = math.exp(-self.pending_answers / _MEMORY)
        self.pending_answers = 0
        if fade < 1.0:
            counts = self.counts
            for key in list(counts):
                cell = counts[key]
                cell[0] *= fade
                cell[1] *= fade
                if cell[0] + cell[1] < 1e-3:
                    del counts[key]
            self.done *= fade
            self.total *= fade
        mu, s = self.mu, math.log(self.sigma)
        ll, grad, info = self._score(mu, s)
        for _ in range(6):
            det = info[0] * info[2] - info[1] * info[1]
            if det <= 0:
                break
            dmu = (info[2] * grad[0] - info[1] * grad[1]) / det
            ds = (info[0] * grad[1] - info[1] * grad[0]) / det
            # Trust region: at most a factor e in median or spread per step.
            scale = min(1.0, 1.0 / max(abs(dmu), abs(ds), 1e-12))
            dmu, ds = dmu * scale, ds * scale
            for _ in range(5):
                new = self._score(mu + dmu, s + ds)
                if new[0] >= ll:
                    break
                dmu, ds = dmu / 2, ds / 2
            else:
                break
            mu, s = mu + dmu, s + ds
            ll, grad, info = new
            if abs(dmu) < 1e-4 and abs(ds) < 1e-4:
                break
        self.mu = mu
        self.sigma = min(_MAX_SIGMA, max(_MIN_SIGMA, math.exp(s)))

    def _score(self, mu: float, s: float) -> tuple[float, list[float], list[float]]:
        """Log posterior, its gradient in (mu, log sigma) and the outer-product information."""
        s = min(math.log(_MAX_SIGMA), max(math.log(_MIN_SIGMA), s))
        sigma = math.exp(s)
        inv = 1.0 / sigma
        pm, ps = 1.0 / _PRIOR_MU_SD**2, 1.0 / _PRIOR_LOG_SIGMA_SD**2
        dm, dsg = mu - self.mu0, s - math.log(_PRIOR_SIGMA)
        ll = -0.5 * (dm * dm * pm + dsg * dsg * ps)
        gm, gs = -dm * pm, -dsg * ps
        imm, ims, iss = pm, 0.0, ps
        for (a, b), (wp, wd) in self.counts.items():
            zb = min(38.0, max(-38.0, (b * _BIN - mu) * inv))
            qb, fb = _upper(zb), _pdf(zb)
            if a == _NO_BIN:
                qa, fa, fza = 1.0, 0.0, 0.0
                za = -math.inf
            else:
                za = min(38.0, max(-38.0, (a * _BIN - mu) * inv))
                qa, fa = _upper(za), _pdf(za)
                fza = fa * za
            if qa <= 0.0:
                continue
            fzb = fb * zb
            log_qa = math.log(qa)
            if wp > 0.0 and qb > 0.0:
                # Still running at b: log Q(zb) - log Q(za).
                ll += wp * (math.log(qb) - log_qa)
                g0 = (fb / qb - fa / qa) * inv
                g1 = fzb / qb - fza / qa
                gm += wp * g0
                gs += wp * g1
                imm += wp * g0 * g0
                ims += wp * g0 * g1
                iss += wp * g1 * g1
            if wd > 0.0:
                # Done by b: log (Q(za) - Q(zb)) - log Q(za).
                # Subtract the smaller tails for precision.
                if zb < 0.0:
                    d = _upper(-zb) - (0.0 if a == _NO_BIN else _upper(-za))
                else:
                    d = qa - qb
                if d <= 0.0:
                    continue
                ll += wd * (math.log(d) - log_qa)
                g0 = ((fa - fb) / d - fa / qa) * inv
                g1 = (fza - fzb) / d - fza / qa
                gm += wd * g0
                gs += wd * g1
                imm += wd * g0 * g0
                ims += wd * g0 * g1
                iss += wd * g1 * g1
        return ll, [gm, gs], [imm, ims, iss]


class PollPlan:
    """The status requests of one task, in seconds after it was accepted.

    The first time is fixed when the task is accepted; each later one is chosen when it is
    first asked for, from what the schedule knows then.
    """

    __slots__ = ("_answered", "_last_attempt", "_schedule", "times")

    def __init__(self, schedule: PollSchedule, first: float) -> None:
        self.times = [first]
        self._schedule = schedule
        #: Seconds after acceptance of the latest answered request, if any.
        self._answered: float | None = None
        self._last_attempt = -1

    def at(self, attempt: int) -> float:
        """Seconds after acceptance of status request number ``attempt`` (0-based)."""
        times = self.times
        while attempt >= len(times):
            prev = times[-1]
            if self._answered is not None and self._answered > prev:
                prev = self._answered
            gap = prev - times[-2] if len(times) > 1 else prev
            times.append(self._schedule._next(prev, gap))
        return times[attempt]


class PollSchedule:
    """Plans status requests for a client's tasks and learns from their answers.

    Example::

        schedule = PollSchedule(initial=1.0, rng=random.Random(0))
        plan = schedule.plan(hint=None)
        first = plan.at(0)  # seconds after acceptance
        schedule.observe(plan, 0, done=False)
        second = plan.at(1)
    """

    def __init__(
        self,
        *,
        initial: float = 1.0,
        growth: float = 1.5,
        max_interval: float = 10.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self._initial = initial
        self._growth = growth
        self._max_interval = max(max_interval, _MIN_GAP)
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._fit: _Fit | None = None
        self._since_refit = 0
        self._learned = False
        self.finished = 0

    @property
    def learned(self) -> bool:
        """Whether plans come from observed tasks rather than the hint or ``initial``."""
        return self._learned

    def plan(self, hint: float | None = None) -> PollPlan:
        """The poll plan of a task accepted now. ``hint``: the provider's estimate (s)."""
        base = hint if hint is not None and hint > 0 and math.isfinite(hint) else self._initial
        if self._fit is None:
            self._fit = _Fit(base)
        if self._learned:
            fit = self._fit
            z = _ladder_for(fit.sigma).first
            first = self._jittered(math.exp(fit.mu + fit.sigma * z), _LEARNED_JITTER)
        else:
            low, high = _SPREAD
            first = base * math.exp(self._rng.uniform(math.log(low), math.log(high)))
        return PollPlan(self, max(_MIN_GAP, first))

    def observe(
        self, plan: PollPlan, attempt: int, done: bool, *, elapsed: float | None = None
    ) -> None:
        """Learn from the answer to status request ``attempt`` of ``plan``.

        ``elapsed``: when the request was actually sent, in seconds after acceptance, if it
        left later than planned (a rate limit, a busy poller); default ``plan.at(attempt)``.
        """
        if attempt <= plan._last_attempt:
            return  # an answer already counted
        plan._last_attempt = attempt
        at = plan.at(attempt) if elapsed is None else max(elapsed, plan.at(attempt))
        if done:
            self.finished += 1
        fit = self._fit
        if fit is None:  # a plan from another schedule: nothing to learn from it
            return
        fit.add(plan._answered, at, done)
        plan._answered = at
        self._since_refit += 1
        # Often while little is known, then every few hundred answers.
        if self._since_refit >= min(256.0, max(8.0, fit.total / 16.0)):
            self._since_refit = 0
            fit.refit()
            self._learned = fit.done >= _LEARNED_DONE

    def _next(self, prev: float, gap: float) -> float:
        """The next poll of a task still running ``prev`` seconds after acceptance."""
        fit = self._fit
        if not self._learned or fit is None:
            t = prev * _SEARCH
        else:
            z = _ladder_for(fit.sigma).after((math.log(prev) - fit.mu) / fit.sigma)
            if z is None:  # slower than the fit expects: back off
                t = prev + gap * self._growth
            else:
                t = math.exp(fit.mu + fit.sigma * z)
            t = self._jittered(t, _LEARNED_JITTER)
        return min(prev + self._max_interval, max(prev + _MIN_GAP, t))

    def _jittered(self, t: float, fraction: float) -> float:
        spread = self._jitter * fraction
        return t * (1.0 + self._rng.uniform(-spread, spread)) if spread else t
