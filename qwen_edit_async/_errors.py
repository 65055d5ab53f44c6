"""The error tree, and the one place that turns a provider's answer into an error.

::

    QwenEditError
    ├── ValidationError            (also ValueError) bad input, found before any request
    ├── ConfigurationError         missing key, unknown provider, input the provider cannot take
    ├── TransportError             the network failed; the request was not received
    │   └── SubmitUncertainError   a create was sent but its answer was lost: it may exist
    ├── APIError                   the provider answered with an error
    │   ├── AuthenticationError    401, bad or missing key
    │   ├── PermissionDeniedError  403, model not purchased, async calls refused
    │   ├── RateLimitError         429 throttling (``retry_after`` in seconds, when sent)
    │   ├── InsufficientQuotaError balance or free quota exhausted (never retried)
    │   ├── BadRequestError        the provider refused the input (never retried)
    │   │   ├── ContentFilterError moderation, at submission or inside a task
    │   │   └── TaskNotFoundError  no such task (unknown or expired id given to attach)
    │   └── ServerError            5xx and 408: the provider failed; retried
    ├── ProtocolError              an answer that cannot be read (internal, see below)
    ├── JobFailedError             the task ended in failure
    ├── JobTimeoutError            the job's deadline passed; the task may still finish
    ├── JobCancelledError          the job was cancelled (``job.cancel()`` or closing the client)
    ├── ManifestError              a manifest line that is not a usable edit
    └── DownloadError              a result image could not be saved

Every error carries what is needed to recover or report: ``provider``, ``status`` (HTTP),
``code`` (the provider's own), ``message``, ``request_id`` and ``task_id`` where known, and
``submissions`` when the job was submitted more than once.

A provider's code beats its HTTP status. Where a relay replaced the code with a generic one
(``bad_response_status_code``) or none, the upstream message decides: moderation wording is a
:class:`ContentFilterError`, an exhausted balance or free quota an
:class:`InsufficientQuotaError`, throttling a :class:`RateLimitError`.
API keys are never part of an error.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ContentFilterError",
    "DownloadError",
    "InsufficientQuotaError",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "ManifestError",
    "PermissionDeniedError",
    "ProtocolError",
    "QwenEditError",
    "RateLimitError",
    "ServerError",
    "SubmitUncertainError",
    "TaskNotFoundError",
    "TransportError",
    "ValidationError",
    "api_error",
    "limit_kind",
    "task_error",
]


class QwenEditError(Exception):
    """Base of every error this library raises.

    ``str(err)`` is the message followed by the known context, for example
    ``"Throttling: too many requests (provider=dashscope, status=429, code=Throttling,
    request_id=bf37...)"``.
    """

    #: Whether sending the same request again may succeed (used by the transport).
    retryable: bool = False
    #: How many creates the job took, when it took more than one (a task that failed
    #: transiently is submitted again, see ``ClientConfig.max_resubmits``).
    submissions: int | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.code = code
        self.request_id = request_id
        self.task_id = task_id
        #: The decoded error body, when there was one (for what the fields do not model).
        self.body = body

    def _context(self) -> list[str]:
        parts = []
        for name in ("provider", "status", "code", "request_id", "task_id", "submissions"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return parts

    def __str__(self) -> str:
        context = self._context()
        return f"{self.message} ({', '.join(context)})" if context else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> Any:
        # Keep keyword context across pickling (multiprocessing, loggers that pickle records).
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[QwenEditError], message: str, state: dict[str, Any]) -> QwenEditError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ValidationError(QwenEditError, ValueError):
    """Invalid input, found before any network I/O.

    ``field`` names the offending field (``"n"``, ``"images[1]"``, ``"size"``...) and the
    message says what is wrong with the value and which rule it breaks.
    """

    def __init__(self, message: str, *, field: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.field = field


class ConfigurationError(QwenEditError):
    """The client cannot do what was asked as configured (missing key, unknown provider,
    a local file for a URL-only provider without an ``uploader``...)."""


class TransportError(QwenEditError):
    """The request did not get an answer (connection refused, reset, DNS, timeout).

    Raised as is only when the request was certainly not received, or for GETs whose
    retries ran out.
    """

    retryable = True


class SubmitUncertainError(TransportError):
    """A job-creating request was sent but its answer was lost.

    The provider may have created (and billed) the job. It is not resent unless the client
    was configured with ``retry_uncertain=True``. ``request_id`` holds the client request id
    sent with it, when the dialect sends one.
    """

    retryable = False


class APIError(QwenEditError):
    """The provider answered with an error status or an error body.

    ``retry_after`` is the wait the provider asked for (``Retry-After``, seconds), if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


class AuthenticationError(APIError):
    """The API key was refused (HTTP 401)."""


class PermissionDeniedError(APIError):
    """The key is valid but may not do this (HTTP 403)."""


class RateLimitError(APIError):
    """Throttled (HTTP 429). ``retry_after`` is the wait the provider asked for, in seconds.

    ``limit`` says which limit refused the request where the provider's message says so:
    ``"concurrency"`` (too many tasks running), ``"rate"`` (too many requests per second,
    or a burst), or ``None``.
    """

    retryable = True
    limit: str | None = None


class InsufficientQuotaError(APIError):
    """The account's balance or free quota is exhausted. Retrying cannot help."""


class BadRequestError(APIError):
    """The provider refused the request as invalid. Retrying cannot help."""


class ContentFilterError(BadRequestError):
    """Content moderation blocked the input or the output (``task_id`` set when it happened
    inside a task)."""


class TaskNotFoundError(BadRequestError):
    """The provider does not know the task (HTTP 404 on its status): a wrong id, or one
    that has expired."""


class ServerError(APIError):
    """The provider failed (5xx) or timed out (408). Retried."""

    retryable = True


class ProtocolError(QwenEditError):
    """An answer that cannot be read (malformed JSON, missing fields).

    Internal: the transport turns it into :class:`~qwen_edit_async.SubmitUncertainError` for
    a create (the job may exist) or retries it for a GET.
    """


class JobFailedError(QwenEditError):
    """The task ended in failure on the provider's side (``code`` says why)."""


class JobTimeoutError(QwenEditError):
    """The job's deadline passed before it ended.

    The task may still finish (and be billed): ``task_id`` lets you collect it later with
    ``client.attach(task_id)``.
    """


class JobCancelledError(QwenEditError):
    """The job was cancelled before it ended (by ``job.cancel()`` or by closing the client).

    A task the provider had already accepted may still finish: ``task_id`` names it.
    """


class ManifestError(QwenEditError):
    """A manifest line that is not a usable edit (bad JSON, not an object, bad or duplicate id)."""


class DownloadError(QwenEditError):
    """A result image could not be downloaded or saved (expired URL, size cap, bad type)."""


# Provider codes, lower-cased, whose meaning beats the HTTP status.
_CONTENT_CODES = frozenset(
    {
        "datainspectionfailed",
        "data_inspection_failed",
        "ipinfringementsuspect",
        "content_policy_violation",
        "content_filter",
        "sensitive_content",
    }
)
_QUOTA_CODES = frozenset(
    {
        "arrearage",
        "allocationquota.freetieronly",
        "quota_exceeded",
        "insufficient_quota",
        "insufficient_balance",
        "insufficient_user_quota",
    }
)
_AUTH_CODES = frozenset({"invalidapikey", "invalid_api_key"})
_RATE_CODES = frozenset(
    {"throttling", "throttling.ratequota", "throttling.burstrate", "rate_limit_exceeded"}
)
_SERVER_CODES = frozenset(
    {"internalerror", "internalerror.algo", "internalerror.timeout", "systemerror"}
)
_NOT_FOUND_CODES = frozenset({"invalid_task_id", "task_not_found", "not_found", "notfound"})
#: DashScope's one code with two meanings, told apart by its message: "Free allocated quota
#: exceeded." is exhausted; "Allocated quota exceeded, please increase your quota limit." is a
#: per-period throttle.
_ALLOCATION_QUOTA = "throttling.allocationquota"
#: Codes that say nothing of the cause: relays (new-api and its forks) replace the upstream
#: code with one of these, or with none, and keep only the upstream status and message.
_GENERIC_CODES = frozenset(
    {
        "",
        "bad_response_status_code",
        "bad_response",
        "bad_response_body",
        "upstream_error",
        "do_request_failed",
        "read_response_body_failed",
        "new_api_error",
        "one_api_error",
        "api_error",
        "error",
        "unknown_error",
    }
)

# Words of the upstream messages, lower-cased, in the order they are tried: moderation, then
# an exhausted account, then throttling ("allocated quota exceeded" is a throttle unless the
# free quota is meant, which the second group catches first).
_CONTENT_WORDS = (
    "inappropriate content",
    "data inspection",
    "datainspectionfailed",
    "ip infringement",
    "ipinfringementsuspect",
    "content policy",
    "content_policy_violation",
    "moderation",
)
_QUOTA_WORDS = (
    "insufficient balance",
    "insufficient_balance",
    "insufficient quota",
    "insufficient_quota",
    "balance is not enough",
    "arrear",
    "good standing",
    "free quota has been exhausted",
    "freetieronly",
    "free allocated quota exceeded",
)
_RATE_WORDS = (
    "rate increased too quickly",
    "allocated quota exceeded",
    "rate limit",
    "too many requests",
    "throttl",
)


def _class_from_words(message: str) -> type[APIError] | None:
    """The class an upstream message speaks of, when its code was lost on the way."""
    lowered = message.lower()
    if any(word in lowered for word in _CONTENT_WORDS):
        return ContentFilterError
    if any(word in lowered for word in _QUOTA_WORDS):
        return InsufficientQuotaError
    if any(word in lowered for word in _RATE_WORDS):
        return RateLimitError
    return None


def _is_generic(key: str) -> bool:
    # An integer code (older Evolink bodies, relays) repeats the status: no cause in it.
    return key in _GENERIC_CODES or key.isdigit()


def _class_for(status: int | None, code: str | None, message: str) -> type[APIError]:
    key = (code or "").strip().lower()
    if key in _CONTENT_CODES:
        return ContentFilterError
    if key == _ALLOCATION_QUOTA:
        return InsufficientQuotaError if "free" in message.lower() else RateLimitError
    if key in _QUOTA_CODES or status == 402:
        return InsufficientQuotaError
    if key in _AUTH_CODES or status == 401:
        return AuthenticationError
    if _is_generic(key) or status == 403:
        # A relayed error, or a 403 whose words may say "balance": read the message.
        by_words = _class_from_words(message)
        if by_words is not None:
            return by_words
    if status == 403:
        return PermissionDeniedError
    if status == 429 or key in _RATE_CODES:
        return RateLimitError
    if status == 408 or (status is not None and status >= 500) or key in _SERVER_CODES:
        return ServerError
    return BadRequestError


#: Words of a 429 that name a rate (not a concurrency) limit; wider than _RATE_WORDS, which
#: must tell throttling from other errors in any message ("generate" contains "rate").
_LIMIT_RATE_WORDS = (
    "rate",
    "too quickly",
    "per second",
    "per minute",
    "qps",
    "rpm",
    "too many requests",
)


def limit_kind(message: str | None) -> str | None:
    """``"concurrency"``, ``"rate"`` or ``None``: which limit a 429's message names.

    >>> limit_kind("Request rate increased too quickly")
    'rate'
    """
    text = (message or "").lower()
    if "concurren" in text:
        return "concurrency"
    if any(word in text for word in _LIMIT_RATE_WORDS):
        return "rate"
    return None


def api_error(
    *,
    provider: str,
    status: int | None,
    code: str | int | None,
    message: str | None,
    request_id: str | None = None,
    task_id: str | None = None,
    retry_after: float | None = None,
    body: Any = None,
) -> APIError:
    """Build the right :class:`APIError` subclass for an error answer.

    Dialects read their own body shape and call this: it is the one status-and-code to class
    mapping of the library. ``code`` may be an integer (older Evolink bodies); it is kept
    as a string.
    """
    code_text = None if code is None else str(code)
    text = message or code_text or (f"HTTP {status}" if status is not None else "provider error")
    cls = _class_for(status, code_text, text)
    if (
        task_id is not None
        and cls is BadRequestError
        and (status == 404 or (code_text or "").lower() in _NOT_FOUND_CODES)
    ):
        cls = TaskNotFoundError
    context: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "code": code_text,
        "request_id": request_id,
        "task_id": task_id,
        "body": body,
    }
    error = cls(text, retry_after=retry_after, **context)
    if isinstance(error, RateLimitError):
        error.limit = limit_kind(message)
    return error


#: Task failures a provider lists as "retry later": the task is not billed and a new one
#: may well succeed (Evolink's server-side codes; DashScope's and Vtrix's equivalents).
_TRANSIENT_TASK_CODES = frozenset(
    {
        "quota_exceeded",
        "service_error",
        "generation_timeout",
        "resource_exhausted",
        "service_unavailable",
        "serviceunavailable",
        "internal_error",
        "internalerror",
        "internalerror.algo",
        "internalerror.timeout",
        "systemerror",
        "requesttimeout",
        "throttling",
        "throttling.ratequota",
        "throttling.burstrate",
    }
)


def task_error(
    *,
    provider: str,
    code: str | int | None,
    message: str | None,
    task_id: str | None,
    request_id: str | None = None,
    body: Any = None,
) -> QwenEditError:
    """The error for a task that ended in failure.

    Moderation becomes :class:`ContentFilterError` and an exhausted balance
    :class:`InsufficientQuotaError`, as they would at submission; anything else is
    :class:`JobFailedError`. A failure the provider lists as transient ("retry later":
    Evolink's ``quota_exceeded``, ``service_error``, ``generation_timeout``...) is a
    :class:`JobFailedError` with ``retryable`` set: the client submits such a job again
    (``max_resubmits``). All carry the task id.

    >>> task_error(provider="evolink", code="service_error", message="busy",
    ...            task_id="task-1").retryable
    True
    """
    code_text = None if code is None else str(code)
    text = message or code_text or "the task failed"
    key = (code_text or "").strip().lower()
    context: dict[str, Any] = {
        "provider": provider,
        "code": code_text,
        "request_id": request_id,
        "task_id": task_id,
        "body": body,
    }
    if key in _CONTENT_CODES:
        return ContentFilterError(text, **context)
    if key in _TRANSIENT_TASK_CODES:
        error = JobFailedError(text, **context)
        error.retryable = True
        return error
    if key in _QUOTA_CODES:
        return InsufficientQuotaError(text, **context)
    if _is_generic(key) and _class_from_words(text) is ContentFilterError:
        # A failure without a telling code whose words say moderation.
        return ContentFilterError(text, **context)
    return JobFailedError(text, **context)
