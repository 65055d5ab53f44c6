"""The one status-and-code mapping: every documented code lands in the right class."""

from __future__ import annotations

import pytest

import qwen_edit_async as qe
from qwen_edit_async._error_map import api_error, limit_kind, task_error
from qwen_edit_async.providers import DashScope, Evolink, ModelStream


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (400, "InvalidParameter", "bad n", qe.BadRequestError),
        (400, "DataInspectionFailed", "moderated", qe.ContentFilterError),
        (400, "Arrearage", "no money", qe.InsufficientQuotaError),
        (401, "InvalidApiKey", "bad key", qe.AuthenticationError),
        (403, "AccessDenied", "nope", qe.PermissionDeniedError),
        (403, None, "Insufficient balance", qe.InsufficientQuotaError),
        (408, "RequestTimeOut", "slow", qe.ServerError),
        (413, "BadRequest.TooLarge", "big", qe.BadRequestError),
        (415, "BadRequest.InputDownloadFailed", "fetch", qe.BadRequestError),
        (429, "Throttling", "rate", qe.RateLimitError),
        (
            429,
            "Throttling.AllocationQuota",
            "Free allocated quota exceeded.",
            qe.InsufficientQuotaError,
        ),
        (402, "insufficient_quota", "pay", qe.InsufficientQuotaError),
        (429, 429, "int code", qe.RateLimitError),
        (500, "InternalError", "boom", qe.ServerError),
        (503, None, None, qe.ServerError),
    ],
)
def test_api_error_picks_the_class(
    status: int, code: object, message: str | None, cls: type[qe.APIError]
) -> None:
    """api_error maps (status, code) to the documented class and keeps the context."""
    codes = DashScope.error_codes | Evolink.error_codes
    err = api_error(
        provider="p",
        status=status,
        code=code,  # type: ignore[arg-type]
        message=message,
        codes=codes,
        request_id="r",
    )
    assert type(err) is cls
    assert err.status == status and err.request_id == "r" and err.provider == "p"
    assert err.retryable == (cls in (qe.RateLimitError, qe.ServerError))


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("content_policy_violation", qe.ContentFilterError),
        ("quota_exceeded", qe.JobFailedError),  # "retry later" inside a task
        ("insufficient_quota", qe.InsufficientQuotaError),
        ("generation_failed_no_content", qe.JobFailedError),
        (123, qe.JobFailedError),
    ],
)
def test_task_error_keeps_the_task_id(code: object, cls: type[qe.QwenEditError]) -> None:
    """A failed task's error is classified like a submission error and names its task."""
    err = task_error(
        provider="evolink",
        code=code,  # type: ignore[arg-type]
        message="m",
        task_id="task-9",
        codes=Evolink.error_codes,
    )
    assert type(err) is cls
    assert err.task_id == "task-9"


def test_a_relayed_message_that_merely_contains_rate_is_not_throttling() -> None:
    """Words are matched as phrases: "Failed to generate" (a relayed 400 with a generic code)
    is a bad request, not a rate limit, while a relayed throttling message still is one."""
    generic = {
        "provider": "modelstream",
        "code": "bad_response_status_code",
        "codes": ModelStream.error_codes,
    }
    failed = api_error(status=400, message="Failed to generate the image", **generic)
    assert type(failed) is qe.BadRequestError
    throttled = api_error(status=429, message="Request rate increased too quickly", **generic)
    assert isinstance(throttled, qe.RateLimitError)
    assert limit_kind("Request rate increased too quickly") == "rate"
    assert limit_kind("Too many concurrent tasks") == "concurrency"


def test_retryable_and_limit_are_given_at_construction() -> None:
    """``retryable=`` overrides the class's answer for one error, ``None`` keeps it; a rate
    limit error carries the ``limit`` it was made with, through pickling too."""
    import pickle

    from qwen_edit_async import JobFailedError, RateLimitError, TransportError

    assert TransportError("reset").retryable is True
    assert TransportError("unusable URL", retryable=False).retryable is False
    assert JobFailedError("service_error", retryable=True).retryable is True
    assert JobFailedError("moderated").retryable is False
    throttled = RateLimitError("slow down", limit="concurrency", retry_after=2.0)
    assert (throttled.limit, throttled.retry_after) == ("concurrency", 2.0)
    assert throttled.retryable is True
    assert RateLimitError("slow down").limit is None
    assert pickle.loads(pickle.dumps(throttled)).limit == "concurrency"
