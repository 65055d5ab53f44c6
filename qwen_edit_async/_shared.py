"""Limits shared by every process and machine using one key, kept in Redis.

Providers count an account's work together, wherever it comes from, so the clients of
one provider, base URL and key keep one set of limits in Redis (the ``redis`` package's
asyncio client, the ``redis`` extra):

- a slot is a lease in a sorted set, scored by its expiry on the Redis server's clock; a
  process renews its leases while it holds them, so one killed with ``-9`` gives its
  slots back within ``lease_ttl`` seconds; leases given back are announced on a channel,
  which wakes the processes waiting for one;
- the leases whose create the provider accepted (a second sorted set): on a concurrency
  refusal the quota is no larger than those jobs, wherever they run, while the other
  leases wait for the pace or for their create's answer and say nothing about it;
- a probe token: above the limit's last cut, one lease at a time until the provider accepts
  its create, so the processes probing a learned quota together cost one refused create
  per probe, not one each;
- one submission schedule and one 429 cooldown (a hash: the next send time, the end of
  the cooldown), so N processes together send at the learned rate, not N times it;
- the learned limits (:class:`~qwen_edit_async._learning.Learned` as JSON), updated by
  compare-and-set so concurrent updates are never lost.

The keys live under ``qwen-edit:<namespace>:``, the namespace a hash of provider, base
URL and key: never the key itself. When Redis cannot be reached, the client says so once in
the log and goes on with its own local limits (seeded with what it had learned), trying
Redis again now and then; a Redis outage never stops or loses a job.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import _redis_scripts as scripts
from ._config import Secret
from ._errors import ConfigurationError
from ._learning import (
    RATE_MAX,
    Kind,
    Learned,
    accepted,
    burst_tolerance,
    note_slot_time,
    refused,
)
from ._limits import Limits, LimitsSnapshot, LocalLimits, Unanswered
from ._retry import pause, testing_enabled

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "shared=... needs the redis package: pip install 'qwen-edit-async[redis]'"
    ) from exc

__all__ = ["RedisLimits", "namespace"]

logger = logging.getLogger("qwen_edit_async")

#: Seconds any one Redis call may take before the client falls back to local limits.
CALL_TIMEOUT = 2.0
#: Seconds of local limits after Redis failed, before trying it again.
RETRY_REDIS = 5.0
#: Seconds between two looks at the shared slots while waiting for one. Every process
#: announces the leases it gives back (a Redis channel), which wakes the waiters at once;
#: the look catches what no one announces: leases of a killed process that expire.
POLL = 0.25
#: The same while the announcements cannot be heard (subscribing failed).
POLL_UNHEARD = 0.025

_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder(Learned).decode


def namespace(provider: str, base_url: str, api_key: Secret) -> str:
    """The Redis key prefix for one account: a hash, so the key never reaches Redis.

    >>> namespace("evolink", "https://api.evolink.ai", Secret("sk-1"))[:21]
    'qwen-edit:9a0ea9e2a1a'
    """
    digest = hashlib.sha256(f"{provider}\n{base_url}\n{api_key.get()}".encode()).hexdigest()
    return f"qwen-edit:{digest[:24]}"


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL, without any password, for log lines."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


class RedisLimits(Limits):
    """:class:`~qwen_edit_async._limits.Limits` kept in Redis, over a local fallback.

    Made by ``QwenEditClient(..., shared="redis://host:6379/0")``.
    """

    shared = True

    def __init__(
        self,
        url: str,
        local: LocalLimits,
        *,
        provider: str,
        base_url: str,
        api_key: Secret,
        lease_ttl: float = 15.0,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"shared: {_where(url)!r} is not a redis:// URL; give one like "
                "'redis://localhost:6379/0'"
            )
        self._url = url
        self._where = _where(url)
        self.local = local
        self._ttl_ms = int(lease_ttl * 1000)
        prefix = namespace(provider, base_url, api_key)
        self._leases_key = f"{prefix}:leases"
        self._accepted_key = f"{prefix}:accepted"
        self._probe_key = f"{prefix}:probe"
        self._freed_channel = f"{prefix}:freed"
        self._release_keys = [
            self._leases_key,
            self._freed_channel,
            self._accepted_key,
            self._probe_key,
        ]
        self._state_key = f"{prefix}:state"
        self._schedule_key = f"{prefix}:schedule"
        self._heard = False  # subscribed to the channel where freed leases are announced
        self._listening: anyio.CancelScope | None = None
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._leases: dict[object, tuple[str, float]] = {}
        self._to_release: list[str] = []
        self._to_accept: list[str] = []
        self._learned = Learned(in_flight=local.state.in_flight, rate=local.state.rate)
        self._version = -1
        self._events: list[tuple[str, float]] = []
        self._wake = anyio.Event()
        self._freed = anyio.Event()
        self._queue = anyio.Lock()
        self._down_until = 0.0
        self._rate_waited_at = 0.0
        self._waiters = 0
        self._pacing = 0  # this process's creates waiting for the shared pace
        # Leased creates sent during slow start and not answered yet (see :meth:`sending`).
        self._unanswered = Unanswered(self._unrefused)
        self.rate_limited = 0

    # -- Redis calls, each bounded in time ---------------------------------------------

    @property
    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _fall_back(self, exc: BaseException) -> None:
        if self._up:
            logger.warning(
                "Redis at %s is unreachable (%s): using this process's own limits",
                self._where,
                type(exc).__name__ if not str(exc) else exc,
            )
            state = self.local.state
            state.in_flight, state.rate = self._learned.in_flight, self._learned.rate
        self._down_until = time.monotonic() + RETRY_REDIS

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with anyio.fail_after(CALL_TIMEOUT):
            return await self._scripts[name](keys=keys, args=args)

    async def open(self, task_group: TaskGroup) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url, socket_timeout=CALL_TIMEOUT, socket_connect_timeout=CALL_TIMEOUT
        )
        for name, text in (
            ("acquire", scripts.ACQUIRE),
            ("accept", scripts.ACCEPT),
            ("accepted", scripts.ACCEPTED),
            ("renew", scripts.RENEW),
            ("pace", scripts.PACE),
            ("update", scripts.UPDATE),
            ("release", scripts.RELEASE),
        ):
            self._scripts[name] = self._redis.register_script(text)
        try:
            await self._sync(None)
        except (RedisError, OSError, TimeoutError) as exc:
            self._fall_back(exc)
        task_group.start_soon(self._background)
        task_group.start_soon(self._listen)

    async def _listen(self) -> None:
        """Wake the local waiter whenever any process announces freed leases."""
        with anyio.CancelScope() as self._listening:
            while True:
                pubsub = self._redis.pubsub()
                try:
                    with anyio.fail_after(CALL_TIMEOUT):
                        await pubsub.subscribe(self._freed_channel)
                    self._heard = True
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            self._freed.set()
                except (RedisError, OSError, TimeoutError):
                    pass  # the waiters look more often meanwhile; _call reports outages
                finally:
                    self._heard = False
                    with anyio.move_on_after(CALL_TIMEOUT, shield=True):
                        await pubsub.aclose()
                await anyio.sleep(RETRY_REDIS)

    async def aclose(self) -> None:
        self._unanswered.clear()
        if self._listening is not None:
            self._listening.cancel()
        try:
            if self._redis is not None and self._up:
                ids = [lease for lease, _ in self._leases.values()] + self._to_release
                if ids:  # the script gives the probe token back too, if one was held
                    await self._call("release", self._release_keys, ids)
        except (RedisError, OSError, TimeoutError):
            pass  # the leases expire on their own within the TTL
        finally:
            self._leases.clear()
            self._to_release.clear()
            self._to_accept.clear()
            if self._redis is not None:
                with anyio.move_on_after(CALL_TIMEOUT):
                    await self._redis.aclose()
            await self.local.aclose()

    async def _sync(self, change: Any) -> None:
        """Read the shared state, apply ``change(state) -> bool`` and store it if it
        returned True; compare-and-set, so a concurrent writer's update is kept."""
        for _ in range(8):
            if self._version < 0:
                with anyio.fail_after(CALL_TIMEOUT):
                    version, raw = await self._redis.hmget(self._state_key, ["v", "s"])
                self._version = int(version or 0)
                if raw:
                    self._learned = _DECODE(raw)
            if change is None or not change(self._learned):
                if self._version == 0:
                    change = None  # publish the first state, so every process starts alike
                else:
                    return
            version, raw = await self._call(
                "update", [self._state_key], [self._version, _ENCODE(self._learned)]
            )
            self._version = int(version)
            if not raw:
                return
            self._learned = _DECODE(raw)  # someone else wrote first: apply to theirs
        logger.debug("shared limits: gave up an update after repeated conflicts")

    async def _background(self) -> None:
        """Renew held leases, give released ones back, publish what was learned."""
        renew_every = max(0.2, self._ttl_ms / 3000)
        last_renew = last_read = 0.0
        while True:
            with anyio.move_on_after(min(renew_every, 0.5)):
                await self._wake.wait()
            self._wake = anyio.Event()
            if not self._up:
                continue
            try:
                await self._mark_accepted()
                if self._to_release:
                    ids, self._to_release = self._to_release, []
                    await self._call("release", self._release_keys, ids)
                if time.monotonic() - last_renew >= renew_every:
                    last_renew = time.monotonic()
                    held = [lease for lease, _ in self._leases.values()]
                    keys = [self._leases_key, self._accepted_key]
                    await self._call("renew", keys, [self._ttl_ms, *held])
                if time.monotonic() - last_read >= 1.0:
                    last_read = time.monotonic()
                    self._version = -1  # pick up what other processes learned
                    await self._sync(None)
                if self._events:
                    events, self._events = self._events, []
                    await self._sync(functools.partial(self._apply, events=events))
            except (RedisError, OSError, TimeoutError) as exc:
                self._fall_back(exc)

    async def _mark_accepted(self) -> None:
        """Put the leases whose create was accepted since the last call in the accepted set
        (before any release of them: a release removes them from both sets)."""
        if self._to_accept:
            ids, self._to_accept = self._to_accept, []
            keys = [self._leases_key, self._accepted_key, self._probe_key, self._freed_channel]
            await self._call("accept", keys, [self._ttl_ms, *ids])

    def _apply(self, state: Learned, *, events: list[tuple[str, float]]) -> bool:
        changed = False
        now = time.time()
        for kind, value in events:
            if kind == "slot":
                note_slot_time(state, value)
                changed = True
            else:
                changed |= accepted(
                    state,
                    now,
                    ceiling=self.local.ceiling,
                    rate_cap=self.local.rate_cap,
                    in_flight_bound=value >= 1.0,
                    rate_bound=kind == "accepted+rate",
                    # One slot per accept: several processes' accepts land here together,
                    # up to a second late, each "bound" by its own waiters; doubling on
                    # that overshot a shared quota of 8 by far (15% of creates refused
                    # instead of 6% with four processes).
                    slow_start_step=1.0,
                )
        return changed

    # -- slots ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._leases) + self.local.in_flight

    def try_acquire(self, holder: object) -> bool:
        if not self._up and not self._waiters:
            return self.local.try_acquire(holder)
        return False

    async def acquire(self, holder: object) -> None:
        self._waiters += 1
        try:
            async with self._queue:  # one local waiter at a time asks Redis
                while True:
                    if not self._up:
                        await self.local.acquire(holder)
                        return
                    if len(self._leases) >= self.local.ceiling:
                        # This process's own max_in_flight bounds it, whatever is shared.
                        await self._freed.wait()
                        self._freed = anyio.Event()
                        continue
                    # The pid says whose lease it is when someone looks into Redis.
                    lease = f"{os.getpid()}-{uuid.uuid4().hex}"
                    try:
                        ok = await self._call(
                            "acquire",
                            [
                                self._leases_key,
                                self._state_key,
                                self._accepted_key,
                                self._probe_key,
                            ],
                            [lease, self._ttl_ms, max(1, int(self._learned.in_flight))],
                        )
                    except (RedisError, OSError, TimeoutError) as exc:
                        self._fall_back(exc)
                        continue
                    if ok:
                        self._leases[holder] = (lease, time.monotonic())
                        return
                    poll = POLL if self._heard else POLL_UNHEARD
                    with anyio.move_on_after(random.uniform(poll / 2, poll * 1.5)):
                        await self._freed.wait()
                    self._freed = anyio.Event()
        finally:
            self._waiters -= 1

    def release(self, holder: object) -> None:
        if self._unanswered:
            self._unanswered.answered(holder)
        taken = self._leases.pop(holder, None)
        if taken is None:
            self.local.release(holder)
            return
        lease, since = taken
        self._to_release.append(lease)
        if self.local.adaptive:
            self._events.append(("slot", time.monotonic() - since))
        self._freed.set()
        self._wake.set()

    # -- creates --------------------------------------------------------------------------

    async def pace(self) -> None:
        if not self._up:
            await self.local.pace()
            return
        rate = self._learned.rate
        if self.local.adaptive and testing_enabled():
            rate = self.local.rate_cap
        self._pacing += 1
        try:
            await self._take_turn(rate)
        finally:
            self._pacing -= 1

    async def _take_turn(self, rate: float) -> None:
        """Wait for this create's place in the shared schedule at ``rate``."""
        try:
            wait = float(
                await self._call(
                    "pace",
                    [self._schedule_key],
                    [0 if rate >= RATE_MAX else rate, 0, burst_tolerance(rate)],
                )
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._fall_back(exc)
            await self.local.pace()
            return
        wait = pause(wait)
        if wait > 0:
            self._rate_waited_at = time.monotonic()
            await anyio.sleep(wait)

    def sending(self, holder: object) -> None:
        """As the local limits do: during the shared slow start, a leased create left
        unanswered for :func:`~._learning.provisional_after` counts as accepted (on a
        synchronous provider the answer comes only with the image)."""
        if holder not in self._leases:
            self.local.sending(holder)  # a job on the local limits (Redis was down)
            return
        learned = self._learned
        if (
            not self.local.adaptive
            or learned.in_flight_cut_at
            or learned.in_flight >= self.local.ceiling
        ):
            return
        self._unanswered.start(holder)

    def watch_round_trip(self, measured: Callable[[], float | None]) -> None:
        self._unanswered.round_trip = measured
        self.local.watch_round_trip(measured)

    def _unrefused(self, holder: object) -> bool:
        if holder not in self._leases or self._learned.in_flight_cut_at:
            return False  # a refusal (here or in another process) ended the slow start
        self._events.append(("accepted", 1.0 if self._waiters and not self._pacing else 0.0))
        self._wake.set()
        return True

    def accepted(self, holder: object) -> None:
        if holder not in self._leases:
            self.local.accepted(holder)
            return
        self._to_accept.append(self._leases[holder][0])
        self._wake.set()
        counted = bool(self._unanswered) and self._unanswered.answered(holder)
        if self.local.adaptive:
            # The concurrency held this process back only if jobs wait for a lease while
            # none of its leases waits for the pace (leases piled up behind the rate say
            # nothing about the provider's quota: growing on them overshot it by 3x).
            # Counted already while unanswered: the concurrency grew then.
            bound = 1.0 if self._waiters and not self._pacing and not counted else 0.0
            paced = time.monotonic() - self._rate_waited_at < 1.0
            if counted and not paced:
                return
            self._events.append(("accepted+rate" if paced else "accepted", bound))
            self._wake.set()

    async def refused(
        self,
        holder: object,
        kind: Kind | None,
        retry_after: float | None,
        backoff: float,
        *,
        retrying: bool = True,
    ) -> None:
        if holder not in self._leases:
            await self.local.refused(holder, kind, retry_after, backoff, retrying=retrying)
            return
        self.rate_limited += 1
        if self._unanswered:
            self._unanswered.answered(holder)
        try:
            # The jobs at the provider: leases whose create was accepted, in every process
            # (this one's last accepts marked first). Not all leases: those waiting for the
            # pace or for their create's answer are not running there, and counting them
            # cut the limit by one per refusal while a burst of refusals came back.
            await self._mark_accepted()
            running = int(await self._call("accepted", [self._accepted_key], []))
            kinds: list[Kind] = [kind] if kind is not None else ["concurrency", "rate"]
            if self.local.adaptive:

                def change(state: Learned) -> bool:
                    now = time.time()
                    for each in kinds:
                        refused(state, now, each, others=running, retry_after=None)
                    return True

                await self._sync(change)
            cool = retry_after if retry_after is not None else 0.0
            if not self.local.adaptive and retry_after is None:
                cool = backoff
            if cool > 0:
                # Starts the shared cooldown; takes no place in the schedule.
                await self._call("pace", [self._schedule_key], [0, cool])
        except (RedisError, OSError, TimeoutError) as exc:
            self._fall_back(exc)
            return
        logger.info(
            "rate limited (shared): %d in flight, %.1f creates/s from now",
            max(1, int(self._learned.in_flight)),
            self._learned.rate,
        )
        if retrying and self.local.adaptive and "concurrency" in kinds:
            # Back to the queue: the retry waits for a lease, and the end of a leased job
            # paces it. Only when no other lease is held (someone outside these clients
            # holds the quota) would it spin: then wait a little first, without a lease
            # (waiting while holding one kept a slot from every process sharing it).
            self.release(holder)
            if running == 0 and retry_after is None and pause(backoff) > 0:
                await anyio.sleep(min(backoff, 2.0))
            await self.acquire(holder)

    def snapshot(self) -> LimitsSnapshot:
        if not self._up:
            local = self.local.snapshot()
            return LimitsSnapshot(
                in_flight=local.in_flight,
                rate=local.rate,
                rate_limited=self.rate_limited + local.rate_limited,
            )
        rate = self._learned.rate
        return LimitsSnapshot(
            in_flight=max(1, int(self._learned.in_flight)),
            rate=None if rate >= RATE_MAX else round(rate, 3),
            rate_limited=self.rate_limited + self.local.rate_limited,
        )
