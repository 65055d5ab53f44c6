"""A client's parts, checked and built from its arguments: its limits, its transport, its
poller. :class:`~qwen_edit_async.QwenEditClient` wires them together."""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._callbacks import CallbackReceiver
from ._calls import Calls
from ._config import (
    ClientConfig,
    Secret,
    resolve_api_key,
    resolve_base_url,
    resolve_provider,
)
from ._defaults import _Default
from ._errors import ConfigurationError, ValidationError
from ._http import HttpPipe
from ._limits import Limits, LocalLimits
from ._pacing import AdaptiveRate
from ._poller import Poller
from ._schedule import PollSchedule
from .providers import Provider, get_provider

if TYPE_CHECKING:
    import aiohttp  # the type of a session the caller shares; the pipe uses it

__all__ = [
    "check_callbacks",
    "check_max_in_flight",
    "config_with",
    "make_calls",
    "make_limits",
    "make_poller",
    "pick_provider",
    "view_config",
]


def pick_provider(
    provider: object, base_url: str | None, model: str | None, api_key: str | None
) -> tuple[Provider, Secret]:
    """The provider (argument, else environment, else the default) and its key."""
    if base_url is not None or not isinstance(provider, Provider):
        # A provider object keeps its own root URL unless base_url says otherwise.
        base_url = resolve_base_url(base_url)
    chosen = resolve_provider(provider)
    picked = get_provider(chosen, base_url=base_url, model=model)  # type: ignore[arg-type]
    return picked, resolve_api_key(api_key, picked.env_var)


def check_max_in_flight(value: object) -> None:
    """Refuse a ``max_in_flight`` that is not a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(
            f"max_in_flight: {value!r} must be a whole number of at least 1",
            field="max_in_flight",
        )


def config_with(base: ClientConfig, options: Mapping[str, Any]) -> ClientConfig:
    """``base`` with the :class:`ClientConfig` fields given as keywords."""
    unknown = set(options) - {f.name for f in dataclasses.fields(ClientConfig)}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(base, **options) if options else base


def view_config(
    config: ClientConfig,
    job_timeout: float | _Default | None,
    max_attempts: int | None,
    model: str | None,
) -> ClientConfig:
    """The configuration of a view (``with_options``): ``config`` with its new defaults.

    ``model`` is only checked here: a view keeps it apart from the configuration.
    """
    changes: dict[str, Any] = {}
    if not isinstance(job_timeout, _Default):
        changes["job_timeout"] = job_timeout
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise ValidationError(
                f"max_attempts: {max_attempts!r} is not a whole number of at least 1",
                field="max_attempts",
            )
        changes["max_attempts"] = max_attempts
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValidationError(f"model: {model!r} is not a model name", field="model")
    return dataclasses.replace(config, **changes) if changes else config


def check_callbacks(callbacks: object, provider: Provider) -> None:
    """Refuse a ``callbacks`` that is no receiver, or a provider that never calls back."""
    if callbacks is None:
        return
    if not isinstance(callbacks, CallbackReceiver):
        raise ConfigurationError(f"callbacks: {type(callbacks).__name__} is not a CallbackReceiver")
    if not provider.supports_callback:
        raise ConfigurationError(
            f"callbacks: {provider.name} does not call back when a task ends "
            "(only evolink takes a callback_url); leave callbacks unset and its jobs "
            "are polled",
            provider=provider.name,
        )


def make_limits(
    config: ClientConfig,
    provider: Provider,
    api_key: Secret,
    max_in_flight: int,
    shared: str | None,
) -> Limits:
    """This process's limits, or limits shared through Redis when ``shared`` names it."""
    local = LocalLimits(
        max_in_flight=max_in_flight,
        submit_rate=config.submit_rate,
        adaptive=config.adaptive_limits,
    )
    if shared is None:
        return local
    from ._shared import RedisLimits  # the redis package is an optional extra

    return RedisLimits(
        shared,
        local,
        provider=provider.name,
        base_url=provider.base_url,
        api_key=api_key,
        lease_ttl=config.lease_ttl,
    )


#: A task provider's creates on the wire at once, at most, and the connections kept for
#: them (see :func:`make_calls`).
TASK_CREATE_CONNECTIONS = 256


def make_calls(
    config: ClientConfig,
    provider: Provider,
    api_key: Secret,
    limits: Limits,
    session: aiohttp.ClientSession | None,
    *,
    max_in_flight: int,
    poll_concurrency: int,
) -> Calls:
    """The conversation with the provider over a pipe whose own session is sized for every
    create, status request and download at once.

    A synchronous create holds its connection until the image is made, so there is one
    per job in flight. A task's create holds it only for the provider's acceptance (a
    round trip), so at most :data:`TASK_CREATE_CONNECTIONS` creates are on the wire at once
    whatever ``max_in_flight`` is: the others wait for their turn before they are sent
    (not in the pool's queue, where status requests would wait behind them), rather than
    open a connection each. At 5,000 tasks in flight a connection per create made the first
    wave open 5,000 connections (a quarter of the client's CPU in the ramp) and keep them
    pooled for the whole run, some 25 objects each for the garbage collector to walk.
    """
    creates: int | None = None
    if provider.is_task:
        creates = min(max_in_flight, TASK_CREATE_CONNECTIONS)
        connections = creates + poll_concurrency
    else:
        connections = max_in_flight
    connections += config.download_concurrency
    pipe = HttpPipe(
        session=session, connections=connections, connect_timeout=config.connect_timeout
    )
    # Slow start counts an unanswered create as accepted after a few round trips.
    limits.watch_round_trip(pipe.round_trip)
    return Calls(provider, api_key, config, pipe, limits=limits, create_connections=creates)


def make_poller(config: ClientConfig, provider: Provider, calls: Calls, concurrency: int) -> Poller:
    """The poller of the client's tasks, paced under the provider's status-rate ceiling."""
    schedule = PollSchedule(
        initial=config.poll_initial,
        growth=config.poll_growth,
        max_interval=config.poll_max_interval,
        jitter=config.poll_jitter,
        rng=random.Random(),
        recheck=True,  # the poller asks again when an entry comes due
    )
    ceiling = config.poll_rate
    if provider.poll_rate_limit is not None:
        ceiling = min(ceiling or math.inf, provider.poll_rate_limit)
    return Poller(
        functools.partial(calls.status, attempts=1, timed=False),
        schedule,
        concurrency=concurrency,
        rate=AdaptiveRate(ceiling=ceiling),
        policy=calls.policy,
        retry_max=config.poll_max_interval,
        status_timeout=config.status_timeout,
    )
