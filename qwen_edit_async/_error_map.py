"""The one place that turns a provider's error answer into an error of the tree.

Each dialect declares what its own codes mean in an :class:`ErrorCodes` (class attribute
``error_codes`` of the provider) and passes it here; this module owns the rules every provider
shares: the HTTP statuses, the generic codes relays put in place of the real one, and the words
of the upstream messages.

A provider's code beats its HTTP status. Where a relay replaced the code with a generic one
(``bad_response_status_code``) or none, the upstream message decides: moderation wording is a
:class:`~qwen_edit_async.ContentFilterError`, an exhausted balance or free quota an
:class:`~qwen_edit_async.InsufficientQuotaError`, throttling a
:class:`~qwen_edit_async.RateLimitError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    InsufficientQuotaError,
    JobFailedError,
    PermissionDeniedError,
    QwenEditError,
    RateLimitError,
    ServerError,
    TaskNotFoundError,
)

__all__ = ["NO_CODES", "ErrorCodes", "api_error", "limit_kind", "task_error"]

_KINDS = (
    "content_filter",
    "quota",
    "throttling",
    "free_quota_or_throttling",
    "auth",
    "server",
    "not_found",
    "transient",
)


@dataclasses.dataclass(frozen=True)
class ErrorCodes:
    """What a dialect's own error codes mean; codes are compared lower-cased.

    A code of ``content_filter`` is moderation whatever the HTTP status (at submission and
    inside a task); ``quota`` an exhausted balance; ``throttling`` a rate limit;
    ``free_quota_or_throttling`` an exhausted free quota when the message says "free", else a
    throttle (DashScope's ``Throttling.AllocationQuota``); ``auth`` a refused key; ``server``
    the provider's own failure; ``not_found`` an unknown task on a status request;
    ``transient`` a task failure the provider lists as "retry later" (the job is submitted
    again). Combine vocabularies with ``|``.

    >>> codes = ErrorCodes(content_filter=frozenset({"NSFW_Blocked"}))
    >>> "nsfw_blocked" in codes.content_filter
    True
    >>> sorted((codes | ErrorCodes(quota=frozenset({"broke"}))).quota)
    ['broke']
    """

    content_filter: frozenset[str] = frozenset()
    quota: frozenset[str] = frozenset()
    throttling: frozenset[str] = frozenset()
    free_quota_or_throttling: frozenset[str] = frozenset()
    auth: frozenset[str] = frozenset()
    server: frozenset[str] = frozenset()
    not_found: frozenset[str] = frozenset()
    transient: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for kind in _KINDS:
            lowered = frozenset(code.strip().lower() for code in getattr(self, kind))
            object.__setattr__(self, kind, lowered)

    def __or__(self, other: ErrorCodes) -> ErrorCodes:
        merged = {kind: getattr(self, kind) | getattr(other, kind) for kind in _KINDS}
        return ErrorCodes(**merged)

    def by_kind(self) -> dict[str, frozenset[str]]:
        """Every kind and its codes, e.g. ``{"content_filter": frozenset({...}), ...}``."""
        return {kind: getattr(self, kind) for kind in _KINDS}


#: No codes of one's own: statuses, generic codes and message words decide.
NO_CODES = ErrorCodes()

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


def _class_for(
    status: int | None, code: str | None, message: str, codes: ErrorCodes
) -> type[APIError]:
    key = (code or "").strip().lower()
    if key in codes.content_filter:
        return ContentFilterError
    if key in codes.free_quota_or_throttling:
        return InsufficientQuotaError if "free" in message.lower() else RateLimitError
    if key in codes.quota or status == 402:
        return InsufficientQuotaError
    if key in codes.auth or status == 401:
        return AuthenticationError
    if _is_generic(key) or status == 403:
        # A relayed error, or a 403 whose words may say "balance": read the message.
        by_words = _class_from_words(message)
        if by_words is not None:
            return by_words
    if status == 403:
        return PermissionDeniedError
    if status == 429 or key in codes.throttling:
        return RateLimitError
    if status == 408 or (status is not None and status >= 500) or key in codes.server:
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
    codes: ErrorCodes = NO_CODES,
    request_id: str | None = None,
    task_id: str | None = None,
    retry_after: float | None = None,
    body: Any = None,
) -> APIError:
    """Build the right :class:`~qwen_edit_async.APIError` subclass for an error answer.

    Dialects read their body (:meth:`Provider.parse_error`) and call this with their own
    ``codes``: it is the one status-and-code to class mapping of the library. ``code`` may be
    an integer (older Evolink bodies); it is kept as a string.

    >>> codes = ErrorCodes(content_filter=frozenset({"DataInspectionFailed"}))
    >>> type(api_error(provider="p", status=400, code="DataInspectionFailed", message="no",
    ...                codes=codes)).__name__
    'ContentFilterError'
    """
    code_text = None if code is None else str(code)
    text = message or code_text or (f"HTTP {status}" if status is not None else "provider error")
    cls = _class_for(status, code_text, text, codes)
    if (
        task_id is not None
        and cls is BadRequestError
        and (status == 404 or (code_text or "").strip().lower() in codes.not_found)
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
    if issubclass(cls, RateLimitError):
        return cls(text, retry_after=retry_after, limit=limit_kind(message), **context)
    return cls(text, retry_after=retry_after, **context)


def task_error(
    *,
    provider: str,
    code: str | int | None,
    message: str | None,
    task_id: str | None,
    codes: ErrorCodes = NO_CODES,
    request_id: str | None = None,
    body: Any = None,
) -> QwenEditError:
    """The error for a task that ended in failure.

    Moderation becomes :class:`~qwen_edit_async.ContentFilterError` and an exhausted balance
    :class:`~qwen_edit_async.InsufficientQuotaError`, as they would at submission; anything
    else is :class:`~qwen_edit_async.JobFailedError`. A failure the dialect lists as transient
    (``codes.transient``: Evolink's ``service_error``, ``generation_timeout``...) is a
    ``JobFailedError`` with ``retryable`` set: the client submits such a job again
    (``max_resubmits``). All carry the task id.

    >>> task_error(provider="p", code="service_error", message="busy", task_id="task-1",
    ...            codes=ErrorCodes(transient=frozenset({"service_error"}))).retryable
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
    if key in codes.content_filter:
        return ContentFilterError(text, **context)
    if key in codes.transient:
        return JobFailedError(text, retryable=True, **context)
    if key in codes.quota:
        return InsufficientQuotaError(text, **context)
    if _is_generic(key) and _class_from_words(text) is ContentFilterError:
        # A failure without a telling code whose words say moderation.
        return ContentFilterError(text, **context)
    return JobFailedError(text, **context)
