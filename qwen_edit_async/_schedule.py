"""When to ask a provider whether a task has finished.

Each status answer is exact: "was the task done ``b`` s after acceptance, given it was running
at the previous answer, ``a`` s after?". Chained per task these terms are the interval-censored
likelihood of the latencies, running tasks included, so nothing is biased towards the fast tasks
that finish first. They are kept as weighted counts per log-time bin, and per bin pair for the
final (done) bracket of each task: O(1) per answer; old answers fade (memory ~1,000 answers) so
a drifting latency is followed. Every few answers (often at first, then every ~170) a lognormal
is fitted: the posterior mode under a weak prior (median at the hint or ``initial``, spread
~0.35), by warm-started Newton steps, about 1 ms.

The plan is the dynamic programme that minimises expected detection lag plus a price per status
request (:data:`_PRICE` median latencies), solved once per spread on a quantile grid. Only the
first request of a task is fixed when it is accepted; each later one is chosen when the previous
answer arrives, as the optimal continuation given "still running at ``a``" under the fit of that
moment: tasks accepted before anything was known profit from what their neighbours taught since.

Until about six tasks have finished, first checks are spread early in ``initial`` (x0.3-0.7) or
in the hint (x0.1-0.25: hints run long); a task still running then searches upwards (x2-x3). A
task far slower than the fit backs off geometrically. Every interval is 50 ms to
``max_interval``, the first one included (a hint is clamped to 50 ms-10 min). With
``recheck=True`` (a poller that calls :meth:`PollPlan.recheck` when a
request comes due) only a few "scout" tasks search; the others push their requests back until
the scouts have learned.

``benchmarks/schedule_sim.py`` (2 ms round trips; eff = jobs/s over in-flight / mean latency,
the run's ramp and drain included; "oracle" asks once, exactly at the end of each task)::

    scenario (mean of 3 seeds)                   oracle   eff   polls | recheck: eff  polls
    lognormal 0.5 s sigma 0.3, 200, 2,000 jobs     0.875  0.760  1.88  |      0.760  1.82
    same, 10,000 jobs                              0.972  0.842  1.92  |      0.839  1.88
    fixed 0.5 s, 200, 10,000 jobs                  0.996  0.951  1.11  |      0.960  1.09
    lognormal 5 s sigma 0.3, 5,000, 20,000 jobs    0.684  0.614  2.53  |      0.608  1.99
    same, hint 30 s                                0.684  0.607  1.92  |      0.602  1.86

In steady state that is 0.866 of the oracle at 1.9 requests: the optimum for a lognormal with
sigma 0.3 at that price (the programme's own figure).
"""

from __future__ import annotations

import functools
import math
import random
from bisect import bisect_right

__all__ = ["MIN_GAP", "PollPlan", "PollSchedule"]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Price of a status request in median latencies: at sigma 0.3 about 1.9 requests per task.
_PRICE = 0.12
#: Seconds between two requests of one task, at least (the poller keeps it too).
MIN_GAP = 0.05
_HINT_MAX = 600.0  # seconds: a longer estimate is taken as this (generation takes 10-60 s)
_BIN = 0.02  # log-time bin of the answer counts (2%)
_MEMORY = 1000.0  # answers after which an answer weighs 1/e
_REFIT_SHARE, _REFIT_EVERY = 6.0, 256.0  # refit after this share of the answers held, or so many
_LEARNED_DONE = 6.0  # weighted finished tasks before the fit is trusted
#: Before that: first checks (log-uniform) in ``initial`` or in a hint, which may run long.
_SPREAD, _HINT_SPREAD = (0.3, 0.7), (0.1, 0.25)
#: Growth of a running task's checks: bold after many "running" answers, gentle once some
#: tasks have finished or while few answers are in.
_SEARCH, _SEARCH_NEAR, _SEARCH_EVIDENCE = 3.0, 2.0, 64.0
#: Recheck mode: the first plans and this share of the later unlearned ones are scouts; the
#: others wait in steps of _HOP for the scouts to learn, searching alone with growth _BLIND.
_SCOUTS, _SCOUT_SHARE, _BLIND, _HOP = 32, 0.05, 4.0, 1.2
#: Prior: sd of the log median; centre and log sd of the spread; the spread's bounds.
_PRIOR_MU_SD, _PRIOR_SIGMA, _PRIOR_LOG_SIGMA_SD = 2.0, 0.35, 0.7
_MIN_SIGMA, _MAX_SIGMA = 0.02, 2.0
#: Learned plans are spread by the tasks' own latencies: their jitter is this share of it.
_LEARNED_JITTER = 0.2
#: Past this quantile (97.7%) a straggler's intervals stop shrinking and are >= 10% of its age.
_TAIL_Z, _TAIL_STEP = 2.0, 0.1
#: The programme's grid of standard-normal quantiles; past _Z_END, back off.
_Z_LOW, _Z_STEP, _Z_COUNT, _Z_END = -4.0, 0.05, 181, 4.5
_Z_CLAMP = 37.0
_LOG_MIN_SIGMA, _LOG_MAX_SIGMA = math.log(_MIN_SIGMA), math.log(_MAX_SIGMA)
_LOG_PRIOR_SIGMA = math.log(_PRIOR_SIGMA)
_PRIOR_MU_PRECISION = 1.0 / _PRIOR_MU_SD**2
_PRIOR_SIGMA_PRECISION = 1.0 / _PRIOR_LOG_SIGMA_SD**2


def _upper(z: float) -> float:
    """P(Z > z) for a standard normal, accurate in both tails."""
    return 0.5 * math.erfc(z / _SQRT2)


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


@functools.cache
def _ladder(sigma_step: int) -> _Ladder:
    return _Ladder(math.exp(sigma_step * 0.04))


def _ladder_for(sigma: float) -> _Ladder:
    # Quantised in 4% steps of sigma: at most ~130 ladders, each built once (a few ms).
    return _ladder(round(math.log(sigma) / 0.04))


class _Fit:
    """Answer counts and the lognormal fitted to them (log-median ``mu``, spread ``sigma``).

    Chained per task, the answers give the interval-censored likelihood; it splits into terms
    of one log-time bin (still running at ``b``; conditioned on running at ``a``; done at a
    first request) and terms of a bin pair (done between ``a`` and ``b``), one per task.
    """

    __slots__ = ("bins", "brackets", "done", "fresh", "mu", "mu0", "sigma", "total")

    def __init__(self, median: float) -> None:
        #: bin -> [running at b, running at a (condition), done at a first request at b]
        self.bins: dict[int, list[float]] = {}
        #: (bin a, bin b) -> weight of tasks running at a and done at b
        self.brackets: dict[tuple[int, int], float] = {}
        self.mu0 = math.log(median)
        self.mu = self.mu0
        self.sigma = _PRIOR_SIGMA
        #: Weighted number of done answers (finished tasks) in the counts.
        self.done = 0.0
        self.total = 0.0
        self.fresh = 0  # answers since the last fade

    def _cell(self, b: int) -> list[float]:
        cell = self.bins.get(b)
        if cell is None:
            cell = self.bins[b] = [0.0, 0.0, 0.0]
        return cell

    def add(self, prev: float | None, at: float, done: bool) -> None:
        b = round(math.log(max(at, 1e-3)) / _BIN)
        self.total += 1.0
        self.fresh += 1
        if prev is None:
            self._cell(b)[2 if done else 0] += 1.0
        else:
            a = round(math.log(max(prev, 1e-3)) / _BIN)
            b = max(b, a + 1)
            self._cell(a)[1] += 1.0
            if done:
                key = (a, b)
                self.brackets[key] = self.brackets.get(key, 0.0) + 1.0
            else:
                self._cell(b)[0] += 1.0
        if done:
            self.done += 1.0

    def refit(self) -> None:
        """Fade old answers, then move (mu, sigma) to the posterior mode (damped Newton)."""
        fade = math.exp(-self.fresh / _MEMORY)
        self.fresh = 0
        for b in list(self.bins):
            cell = self.bins[b]
            cell[0] *= fade
            cell[1] *= fade
            cell[2] *= fade
            if cell[0] + cell[1] + cell[2] < 1e-3:
                del self.bins[b]
        for key in list(self.brackets):
            weight = self.brackets[key] * fade
            if weight < 1e-3:
                del self.brackets[key]
            else:
                self.brackets[key] = weight
        self.done *= fade
        self.total *= fade
        mu, s = self.mu, math.log(self.sigma)
        ll, g0, g1 = self._gradient(mu, s)
        step = 1e-4
        for _ in range(5):
            _, m0, m1 = self._gradient(mu + step, s)
            _, s0, s1 = self._gradient(mu, s + step)
            # Minus the Hessian, by differences of the analytic gradient.
            hmm = (g0 - m0) / step
            hss = (g1 - s1) / step
            hms = 0.5 * ((g1 - m1) + (g0 - s0)) / step
            damping = 0.0
            for _ in range(8):
                a, c = hmm + damping, hss + damping
                det = a * c - hms * hms
                if a > 0 and det > 0:
                    dmu = (c * g0 - hms * g1) / det
                    ds = (a * g1 - hms * g0) / det
                    # At most a factor e in median or spread per step.
                    shrink = min(1.0, 1.0 / max(abs(dmu), abs(ds), 1e-12))
                    dmu, ds = dmu * shrink, ds * shrink
                    trial = self._gradient(mu + dmu, s + ds)
                    if trial[0] >= ll:
                        break
                damping = max(2.0 * damping, 1.0 + abs(hmm) + abs(hss))
            else:
                break
            mu, s = mu + dmu, s + ds
            ll, g0, g1 = trial
            if abs(dmu) < 1e-3 and abs(ds) < 1e-3:
                break
        self.mu = mu
        self.sigma = min(_MAX_SIGMA, max(_MIN_SIGMA, math.exp(s)))

    def _gradient(self, mu: float, s: float) -> tuple[float, float, float]:
        """Log posterior and its gradient in (mu, log sigma)."""
        s = min(_LOG_MAX_SIGMA, max(_LOG_MIN_SIGMA, s))
        inv = math.exp(-s)
        dm, dsg = mu - self.mu0, s - _LOG_PRIOR_SIGMA
        ll = -0.5 * (dm * dm * _PRIOR_MU_PRECISION + dsg * dsg * _PRIOR_SIGMA_PRECISION)
        gm, gs = -dm * _PRIOR_MU_PRECISION, -dsg * _PRIOR_SIGMA_PRECISION
        ends: dict[int, tuple[float, float, float, float]] = {}  # bin -> z, Q(z), P(z), pdf
        log = math.log
        for b, (running, condition, first_done) in self.bins.items():
            z, q, p, f = ends[b] = _end(b, mu, inv)
            weight = running - condition  # log Q(z) terms: + still running, - conditions
            if weight and q > 0.0:
                ll += weight * log(q)
                gm += weight * f / q * inv
                gs += weight * f / q * z
            if first_done and p > 0.0:
                ll += first_done * log(p)
                gm -= first_done * f / p * inv
                gs -= first_done * f / p * z
        for (a, b), weight in self.brackets.items():
            za, qa, pa, fa = ends.get(a) or _end(a, mu, inv)
            zb, qb, pb, fb = ends.get(b) or _end(b, mu, inv)
            d = pb - pa if zb < 0.0 else qa - qb  # subtract the small tails: precision
            if d > 0.0:
                ll += weight * log(d)
                gm += weight * (fa - fb) * inv / d
                gs += weight * (fa * za - fb * zb) / d
        return ll, gm, gs


def _end(b: int, mu: float, inv: float) -> tuple[float, float, float, float]:
    """z of bin ``b``, upper and lower normal tails there, and the density."""
    z = min(_Z_CLAMP, max(-_Z_CLAMP, (b * _BIN - mu) * inv))
    return (
        z,
        0.5 * math.erfc(z / _SQRT2),
        0.5 * math.erfc(-z / _SQRT2),
        math.exp(-0.5 * z * z - _LOG_SQRT_2PI),
    )


class PollPlan:
    """The status requests of one task, in seconds after it was accepted.

    The first time is fixed when the task is accepted; each later one is chosen when it is
    first asked for, from what the schedule knows then. With a poller that calls
    :meth:`recheck`, a due request may still be pushed back.
    """

    __slots__ = ("_answered", "_deadline", "_last_attempt", "_schedule", "_scout", "times")

    def __init__(
        self, schedule: PollSchedule, first: float, *, scout: bool, deadline: float
    ) -> None:
        self.times = [first]
        self._schedule = schedule
        #: Seconds after acceptance of the latest answered request, if any.
        self._answered: float | None = None
        self._last_attempt = -1
        #: Scouts poll on the search ladder; the others may wait for what scouts learn.
        self._scout = scout
        #: Latest time of the next request while nothing is learned (recheck mode).
        self._deadline = deadline

    def at(self, attempt: int) -> float:
        """Seconds after acceptance of status request number ``attempt`` (0-based)."""
        times = self.times
        while attempt >= len(times):
            prev = times[-1]
            if self._answered is not None and self._answered > prev:
                prev = self._answered
            gap = prev - times[-2] if len(times) > 1 else prev
            times.append(self._schedule._next(self, prev, gap))
        return times[attempt]

    def recheck(self, attempt: int, elapsed: float) -> float:
        """Request ``attempt`` came due ``elapsed`` s after acceptance: when to really send it.

        Returns ``elapsed`` to send it now, or a later time: push the entry back to then (and
        call again when it comes due). Only a schedule made with ``recheck=True`` defers.
        """
        when = self._schedule._recheck(self, elapsed)
        if attempt < len(self.times) and when > self.times[attempt]:
            self.times[attempt] = when
            del self.times[attempt + 1 :]
        return when


class PollSchedule:
    """Plans status requests for a client's tasks and learns from their answers.

    ``recheck=True`` declares a poller that calls :meth:`PollPlan.recheck` when a request
    comes due: tasks accepted before anything is learned then wait for the few "scout" tasks
    to find the latency instead of searching for it themselves.

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
        recheck: bool = False,
    ) -> None:
        self._initial = initial
        self._growth = growth
        self._max_interval = max(max_interval, MIN_GAP)
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._recheck_mode = recheck
        self._fit = _Fit(max(initial, MIN_GAP))
        self._anchored = False
        self._since_refit = 0
        self._learned = False
        self._scouts = 0
        #: The ladder of the fit's spread, and the fit's first request, kept while the fit
        #: stays put (it moves only at a refit): every due check asks for them.
        self._ladder_sigma = math.nan
        self._ladder: _Ladder | None = None
        self._first_of: tuple[float, float] = (math.nan, math.nan)
        self._first = 0.0

    @property
    def median(self) -> float:
        """The fitted median latency (s): the hint or ``initial`` until tasks have ended."""
        return math.exp(self._fit.mu)

    @property
    def learned(self) -> bool:
        """Whether plans come from observed tasks rather than the hint or ``initial``."""
        return self._learned

    def plan(self, hint: float | None = None) -> PollPlan:
        """The poll plan of a task accepted now. ``hint``: the provider's estimate (s)."""
        hinted = hint is not None and hint > 0 and math.isfinite(hint)
        # A provider's hint is advice, not a promise: clamped, so a hint of hours (or 1e308)
        # cannot push the first check out of reach.
        base = min(max(hint, MIN_GAP), _HINT_MAX) if hinted and hint is not None else self._initial
        cap = self._max_interval  # no interval, the first one included, exceeds it
        if not self._anchored:  # the prior: the first hint, else ``initial``
            self._anchored = True
            self._fit.mu = self._fit.mu0 = math.log(base)
        if self._learned:
            first = self._jittered(self._ideal(None), self._learned_jitter())
            return PollPlan(self, min(cap, max(MIN_GAP, first)), scout=False, deadline=0.0)
        low, high = _HINT_SPREAD if hinted else _SPREAD
        scout = not self._recheck_mode or (
            self._scouts < _SCOUTS or self._rng.random() < _SCOUT_SHARE
        )
        if scout:
            self._scouts += 1
            first = base * math.exp(self._rng.uniform(math.log(low), math.log(high)))
        else:
            first = base * low
        deadline = min(base * _BLIND, cap)
        return PollPlan(self, min(cap, max(MIN_GAP, first)), scout=scout, deadline=deadline)

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
        at = plan.at(attempt) if elapsed is None else elapsed
        fit = self._fit
        fit.add(plan._answered, at, done)
        plan._answered = at
        self._since_refit += 1
        # Often while little is known, then every few hundred answers.
        if self._since_refit >= min(_REFIT_EVERY, max(8.0, fit.total / _REFIT_SHARE)):
            self._since_refit = 0
            fit.refit()
            self._learned = fit.done >= _LEARNED_DONE

    def _ideal(self, prev: float | None) -> float:
        """Under the fit: the best next request after ``prev`` (None: the first), unjittered.

        ``-1.0`` when the task is slower than the fit expects.
        """
        fit = self._fit
        mu, sigma = fit.mu, fit.sigma
        if prev is None and self._first_of == (mu, sigma):
            return self._first
        ladder = self._ladder
        if ladder is None or sigma != self._ladder_sigma:
            ladder = self._ladder = _ladder_for(sigma)
            self._ladder_sigma = sigma
        if prev is None:
            self._first = math.exp(mu + sigma * ladder.first)
            self._first_of = (mu, sigma)
            return self._first
        z = ladder.after((math.log(prev) - mu) / sigma)
        return -1.0 if z is None else math.exp(mu + sigma * z)

    def _beyond(self, t: float, z: float) -> bool:
        return math.log(t) > self._fit.mu + self._fit.sigma * z

    def _next(self, plan: PollPlan, prev: float, gap: float) -> float:
        """The next request of a task still running ``prev`` seconds after acceptance."""
        cap = prev + self._max_interval
        if self._learned:
            t = self._ideal(prev)
            if t < 0.0:  # far slower than the fit expects: back off from the fit's scale
                step = min(math.expm1(self._fit.sigma), (self._growth - 1.0) / 2.0)
                t = prev + max(gap * self._growth, prev * step)
            else:
                if t - prev < _TAIL_STEP * prev and self._beyond(prev, _TAIL_Z):
                    # A straggler: the fit's thin tail would poll it ever faster.
                    t = prev + max(gap, _TAIL_STEP * prev)
                # Jitter the interval, not the time: it never shrinks to nothing.
                t = prev + self._jittered(t - prev, self._learned_jitter())
        elif plan._scout:
            t = prev * self._search_growth()
        else:  # wait, rechecking, for the scouts to learn; search alone if they do not
            plan._deadline = min(cap, max(prev + MIN_GAP, prev * _BLIND))
            t = prev * _HOP
        return min(cap, max(prev + MIN_GAP, t))

    def _search_growth(self) -> float:
        """Growth of a scout's checks: bold once many answers said "running", gentle once
        tasks start to finish (the latency is near) or while few answers are in."""
        fit = self._fit
        if fit.done >= 0.5:
            return _SEARCH_NEAR
        evidence = min(1.0, (fit.total - fit.done) / _SEARCH_EVIDENCE)
        return _SEARCH_NEAR + (_SEARCH - _SEARCH_NEAR) * evidence

    def _recheck(self, plan: PollPlan, elapsed: float) -> float:
        if not self._recheck_mode:
            return elapsed
        prev = plan._answered
        floor = MIN_GAP if prev is None else prev + MIN_GAP
        if self._learned:
            want = self._ideal(prev)
            if want < 0.0:
                return elapsed
            want = min(want, (prev or 0.0) + self._max_interval)
        elif plan._scout:
            return elapsed
        else:
            want = plan._deadline
        want = max(want, floor)
        if want <= elapsed + 1e-3:
            return elapsed
        # Move in steps: what is known may change before then.
        return min(want, max(elapsed * _HOP, elapsed + MIN_GAP))

    def _learned_jitter(self) -> float:
        # Narrow latencies need precise checks; tasks accepted apart are spread anyway.
        return _LEARNED_JITTER * min(1.0, self._fit.sigma / 0.3)

    def _jittered(self, t: float, fraction: float) -> float:
        spread = self._jitter * fraction
        return t * (1.0 + self._rng.uniform(-spread, spread)) if spread else t
