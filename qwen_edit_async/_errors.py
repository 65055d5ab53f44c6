"""The error tree. (Which error a provider's answer becomes is decided in ``_error_map``.)

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

API keys are never part of an error.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

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
    "with_context",
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
        retryable: bool | None = None,
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
        if retryable is not None:  # else the class's own answer
            self.retryable = retryable

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


_E = TypeVar("_E", bound=QwenEditError)


def with_context(error: _E, **context: Any) -> _E:
    """``error`` with the ``context`` it lacks (``task_id=...``), as a new error.

    An error is never changed once raised: whoever learns more about it (the job knows its
    task id and how many times it was submitted) makes a copy that also says it. Only fields
    that are ``None`` on ``error`` are filled; with nothing to add, ``error`` itself comes
    back. The copy keeps the original's cause, context and traceback.
    """
    missing = {
        name: value
        for name, value in context.items()
        if value is not None and getattr(error, name, None) is None
    }
    if not missing:
        return error
    clone = copy.copy(error)
    clone.__dict__.update(missing)
    clone.__cause__ = error.__cause__
    clone.__context__ = error.__context__
    clone.__suppress_context__ = error.__suppress_context__
    return clone.with_traceback(error.__traceback__)


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

    def __init__(self, message: str, *, limit: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.limit = limit


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
