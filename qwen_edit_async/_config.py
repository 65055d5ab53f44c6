"""Client configuration: timeouts, retries, polling, limits; and what the environment sets.

Every value is frozen once the client is built. The API key is held in a :class:`Secret`
whose ``repr`` and ``str`` never show it.

The environment (each read when a client is built, ``QWEN_EDIT_LOG`` at import):

- ``QWEN_EDIT_API_KEY``, else the provider's own variable: the key.
- ``QWEN_EDIT_PROVIDER``: the provider when the client names none (else ``dashscope``).
- ``QWEN_EDIT_BASE_URL``: the root URL when the client gives none.
- ``QWEN_EDIT_LOG``: ``debug`` or ``info`` sends the library's log to stderr.
- ``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``: proxies of the client's own session.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import typing
import warnings
from collections.abc import Mapping

from ._errors import ConfigurationError, ValidationError
from ._urls import is_http_url

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_PROVIDER",
    "LOG_ENV",
    "PROVIDER_ENV",
    "ClientConfig",
    "Secret",
    "check_base_url",
    "log_from_env",
    "resolve_api_key",
    "resolve_base_url",
    "resolve_provider",
]

API_KEY_ENV = "QWEN_EDIT_API_KEY"
PROVIDER_ENV = "QWEN_EDIT_PROVIDER"
BASE_URL_ENV = "QWEN_EDIT_BASE_URL"
LOG_ENV = "QWEN_EDIT_LOG"
DEFAULT_PROVIDER = "dashscope"


class Secret:
    """A string that does not print itself.

    >>> Secret("sk-123")
    Secret('********')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret is not pickled, so that it cannot leak through a pickle")


def resolve_api_key(
    explicit: str | None, provider_env: str | None, environ: Mapping[str, str] | None = None
) -> Secret:
    """The API key: the argument, else ``QWEN_EDIT_API_KEY``, else the provider's own variable.

    Raises :class:`ConfigurationError` naming the variables when none is set.
    """
    env = os.environ if environ is None else environ
    for value in (explicit, env.get(API_KEY_ENV), env.get(provider_env) if provider_env else None):
        if value is not None and value.strip():
            return Secret(value.strip())
    names = " or ".join(name for name in (API_KEY_ENV, provider_env) if name)
    raise ConfigurationError(f"no API key: pass api_key=... or set {names}")


def resolve_provider(explicit: object, environ: Mapping[str, str] | None = None) -> object:
    """The provider: the argument, else ``QWEN_EDIT_PROVIDER``, else ``"dashscope"``."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    value = env.get(PROVIDER_ENV, "").strip()
    return value or DEFAULT_PROVIDER


def check_base_url(value: str, source: str = "base_url") -> str:
    """``value`` if it is an http(s) root URL, else :class:`ConfigurationError` naming
    ``source`` (the argument or the variable it came from)."""
    if not isinstance(value, str) or not is_http_url(value):
        raise ConfigurationError(
            f"{source}: {value!r} is not an http(s) root URL; give scheme and host, "
            "for example 'https://dashscope-intl.aliyuncs.com' or 'http://127.0.0.1:8000'"
        )
    return value


def resolve_base_url(explicit: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The root URL: the argument, else ``QWEN_EDIT_BASE_URL``, else ``None`` (the
    provider's own), checked the same way whichever gave it."""
    if explicit is not None:
        return check_base_url(explicit)
    env = os.environ if environ is None else environ
    value = env.get(BASE_URL_ENV, "").strip()
    return check_base_url(value, BASE_URL_ENV) if value else None


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


class _EnvLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``QWEN_EDIT_LOG`` installs (marked, so it is installed once)."""


def log_from_env(environ: Mapping[str, str] | None = None) -> None:
    """Send the library's log to stderr at the level ``QWEN_EDIT_LOG`` names.

    ``debug`` shows each HTTP exchange (method, path, status, seconds, request id), each
    retry and its wait, status requests that failed and when they are asked again;
    ``info`` shows rate-limit pauses and other events worth a line. API keys are never
    logged. Unset or empty: the library adds no handler (logging stays the
    application's). Called at import; call it again after changing the variable.
    """
    env = os.environ if environ is None else environ
    value = env.get(LOG_ENV, "").strip().lower()
    if not value:
        return
    level = _LOG_LEVELS.get(value)
    if level is None:
        warnings.warn(
            f"{LOG_ENV}={value!r} is not one of {', '.join(_LOG_LEVELS)}; it is ignored",
            stacklevel=2,
        )
        return
    logger = logging.getLogger("qwen_edit_async")
    logger.setLevel(level)
    if not any(isinstance(h, _EnvLogHandler) for h in logger.handlers):
        handler = _EnvLogHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Timeouts (seconds), retry and polling settings of a client.

    Give one to ``QwenEditClient(config=...)``, or pass any field as a keyword to the client;
    ``dataclasses.replace(config, field=value)`` derives a variant.
    """

    #: Seconds to open a connection.
    connect_timeout: float = 10.0
    #: Seconds to wait for a synchronous generation (the request stays open that long).
    sync_read_timeout: float = 300.0
    #: Seconds for a task create, a status request or a download chunk.
    read_timeout: float = 30.0
    #: Seconds from the moment a job takes its slot to its result; ``None`` disables it.
    job_timeout: float | None = 600.0
    #: Seconds for a whole status request, its answer included: a provider that drips its
    #: answer cannot hold a check longer (the check is then retried).
    status_timeout: float = 30.0
    #: Seconds for a whole image download (one attempt); a dripping download ends then.
    download_timeout: float = 300.0

    #: Attempts for one request (the first plus retries) when the answer says "try again".
    max_attempts: int = 6
    #: Base and cap of the full-jitter exponential wait between attempts.
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: The longest ``Retry-After`` honoured; longer asks end the retries.
    retry_after_max: float = 120.0
    #: Resend a create whose answer was lost (it may create and bill a second job).
    retry_uncertain: bool = False
    #: Times a job is submitted again after its task failed transiently (Evolink's
    #: ``service_error``, ``generation_timeout``, ``quota_exceeded``...; a failed task is not
    #: billed). Moderation and bad input are never resubmitted. 0 disables it.
    max_resubmits: int = 2

    #: First status check when neither a hint nor learned latency is known.
    poll_initial: float = 1.0
    #: Growth of the interval between status checks, and its cap.
    poll_growth: float = 1.5
    poll_max_interval: float = 10.0
    #: Fraction of random spread applied to every poll time.
    poll_jitter: float = 0.1
    #: Status requests at once (``None``: a thirty-second of ``max_in_flight``, at least 64;
    #: never more than ``max_in_flight``; workers start only when needed).
    poll_concurrency: int | None = None
    #: A hard cap on status requests per second. Below it (or with ``None``) the pace follows
    #: the provider: none until a status request is answered 429, then half the requests of
    #: the last second, halved on each later 429 (waiting out any ``Retry-After``), and
    #: growing back while none comes.
    poll_rate: float | None = None

    #: Submissions per second at most (``None``: no cap besides ``max_in_flight``).
    submit_rate: float | None = None
    #: Largest API answer read, in bytes (task, status and error answers). A synchronous
    #: answer may carry its images inline: it may be larger by ``8 * download_max_bytes``
    #: (up to 6 images, base64-encoded).
    max_response_bytes: int = 8 * 1024 * 1024
    #: Learn the provider's limits: concurrency and submissions per second start low and
    #: grow while creates are accepted, shrink on 429, never above ``max_in_flight`` and
    #: ``submit_rate``. ``False``: exactly ``max_in_flight`` and ``submit_rate``.
    adaptive_limits: bool = True
    #: Seconds a slot shared through Redis stays taken if its process dies without
    #: giving it back; held slots are renewed well before.
    lease_ttl: float = 15.0
    #: Largest image a download may write, in bytes.
    download_max_bytes: int = 64 * 1024 * 1024
    #: Downloads at once per client.
    download_concurrency: int = 16
    #: Bytes of encoded images kept for reuse by later jobs (a file shared by many jobs is
    #: read and encoded once). Inputs used by one job only are not worth more: measured on
    #: 1,000 jobs of distinct 1 MB files, a 256 MiB cache doubled peak memory (709 MiB
    #: against 343 MiB with this bound).
    image_cache_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        hints = _field_types()
        for field in dataclasses.fields(self):
            _check_field(field.name, getattr(self, field.name), hints[field.name])
        if not self.poll_jitter < 1:
            raise ValidationError(
                f"poll_jitter: {self.poll_jitter} must be from 0 to below 1", field="poll_jitter"
            )
        if self.poll_growth < 1:
            raise ValidationError(
                f"poll_growth: {self.poll_growth} must be at least 1", field="poll_growth"
            )
        if self.max_resubmits > 100:
            raise ValidationError(
                f"max_resubmits: {self.max_resubmits} must be from 0 to 100",
                field="max_resubmits",
            )
        if self.max_attempts < 1:
            raise ValidationError(
                f"max_attempts: {self.max_attempts} must be at least 1", field="max_attempts"
            )


@functools.cache
def _field_types() -> dict[str, object]:
    return typing.get_type_hints(ClientConfig)


#: Fields that may be 0; every other number must be greater than 0.
_ZERO_ALLOWED = frozenset({"poll_jitter", "max_resubmits"})


def _check_field(name: str, value: object, annotation: object) -> None:
    """Refuse a value that is not of the field's kind: a bool where a bool is meant, a whole
    number for counts, a finite number for seconds and rates (NaN compares false with every
    bound, so it would slip through range checks and loop forever)."""
    kinds = set(typing.get_args(annotation)) or {annotation}
    if value is None:
        if type(None) in kinds:
            return
        raise ValidationError(f"{name}: None is not allowed; give a number", field=name)
    if bool in kinds:
        if not isinstance(value, bool):
            raise ValidationError(f"{name}: {value!r} is not True or False", field=name)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name}: {value!r} is not a number", field=name)
    if float not in kinds and not isinstance(value, int):
        raise ValidationError(f"{name}: {value!r} must be a whole number", field=name)
    if not math.isfinite(value):
        raise ValidationError(f"{name}: {value!r} must be a finite number", field=name)
    if name in _ZERO_ALLOWED:
        if value < 0:
            raise ValidationError(f"{name}: {value} must be 0 or more", field=name)
    elif value <= 0:
        raise ValidationError(f"{name}: {value} must be greater than 0", field=name)
