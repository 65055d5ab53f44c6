"""The Evolink dialect: flat body, task creation, polling, task and HTTP errors."""

from __future__ import annotations

import msgspec
import pytest

from qwen_edit_async._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentFilterError,
    InsufficientQuotaError,
    JobFailedError,
    PermissionDeniedError,
    QwenEditError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from qwen_edit_async._models import EditRequest
from qwen_edit_async.providers import Evolink, ProtocolError, TaskAccepted, TaskState

TASK_ID = "task-unified-1757156493-imcg5zqt"
CALLBACK = "https://your-domain.com/webhooks/done"
EXAMPLE = EditRequest(
    images=["https://example.com/1.png"],
    prompt="Replace the background",
    n=1,
    negative_prompt="...",
    size="1024*1024",
    prompt_extend=True,
    watermark=False,
    seed=12345,
    callback_url=CALLBACK,
)
EXAMPLE_BODY = {
    "model": "qwen-image-edit-plus",
    "prompt": "Replace the background",
    "image_urls": ["https://example.com/1.png"],
    "n": 1,
    "negative_prompt": "...",
    "size": "1024x1024",
    "prompt_extend": True,
    "watermark": False,
    "seed": 12345,
    "callback_url": CALLBACK,
}
CREATED = {
    "created": 1757156493,
    "id": TASK_ID,
    "model": "qwen-image-edit-plus",
    "object": "image.generation.task",
    "progress": 0,
    "status": "pending",
    "task_info": {"can_cancel": True, "estimated_time": 30},
    "type": "image",
    "usage": {"billing_rule": "per_call", "credits_reserved": 1, "user_group": "default"},
}
COMPLETED = {
    "id": TASK_ID,
    "model": "qwen-image-edit-plus",
    "status": "completed",
    "progress": 100,
    "results": ["https://files.evolink.ai/image.png"],
    "task_info": {"can_cancel": False},
    "usage": {"credits_reserved": 1},
}


def body(value: object) -> bytes:
    return msgspec.json.encode(value)


def failed(code: str | int | None, message: str = "it failed") -> bytes:
    return body(
        {
            "id": TASK_ID,
            "status": "failed",
            "progress": 0,
            "error": {"code": code, "message": message, "type": "task_error"},
        }
    )


def test_example_request_body_matches_the_spec() -> None:
    """The documented example encodes to the documented flat body, in documented order."""
    built = Evolink().build_create(EXAMPLE, ["https://example.com/1.png"])
    assert built.body is not None
    decoded = msgspec.json.decode(built.body)
    assert decoded == EXAMPLE_BODY
    assert list(decoded) == list(EXAMPLE_BODY)


def test_unset_fields_are_absent_and_size_uses_x() -> None:
    """Only model, prompt, image_urls and the set options are sent; size is ``WxH``."""
    request = EditRequest(images=["https://e.com/a.png"], prompt="p", size="1033*1032")
    built = Evolink().build_create(request, ["https://e.com/a.png", "https://e.com/b.png"])
    assert built.body is not None
    assert b"null" not in built.body
    assert msgspec.json.decode(built.body) == {
        "model": "qwen-image-edit-plus",
        "prompt": "p",
        "image_urls": ["https://e.com/a.png", "https://e.com/b.png"],
        "size": "1040x1024",
    }


def test_url_headers_and_model_override() -> None:
    """POST /v1/images/generations with JSON and no Authorization; per-call model is sent."""
    built = Evolink().build_create(
        EXAMPLE, ["https://example.com/1.png"], model="qwen-image-edit-max"
    )
    assert (built.method, built.url) == ("POST", "https://api.evolink.ai/v1/images/generations")
    assert dict(built.headers) == {"Content-Type": "application/json"}
    assert built.body is not None
    assert msgspec.json.decode(built.body)["model"] == "qwen-image-edit-max"


def test_data_uri_is_refused_before_sending() -> None:
    """Evolink takes URLs only: an inline image is a ConfigurationError naming the image."""
    assert Evolink.accepts_data_uri is False
    with pytest.raises(ConfigurationError, match=r"images\[1\]"):
        Evolink().build_create(EXAMPLE, ["https://e.com/a.png", "DATA:image/png;base64,AAAA"])


def test_status_request() -> None:
    """GET /v1/tasks/{id}, no body and no Authorization; the id is escaped into the path."""
    status = Evolink().build_status(TASK_ID)
    assert (status.method, status.url, status.body) == (
        "GET",
        f"https://api.evolink.ai/v1/tasks/{TASK_ID}",
        None,
    )
    assert "Authorization" not in status.headers
    assert Evolink().build_status("a/b c").url == "https://api.evolink.ai/v1/tasks/a%2Fb%20c"


def test_parse_create_gives_task_id_and_estimate() -> None:
    """The created answer gives the task id, the estimated time and the raw body."""
    accepted = Evolink().parse_create(200, {"X-Request-Id": "r-1"}, body(CREATED))
    assert accepted == TaskAccepted(
        task_id=TASK_ID, estimated_time=30, request_id="r-1", raw=CREATED
    )


def test_parse_create_without_task_info() -> None:
    """A created answer without ``task_info`` has no estimate."""
    accepted = Evolink().parse_create(200, {}, body({"id": "t", "status": "pending"}))
    assert isinstance(accepted, TaskAccepted)
    assert accepted.estimated_time is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"oops", b"[1]", b'{"id": 5}', b'{"status": "pending"}', b'{"id": "t", "task_info": 3}'],
    ids=["empty", "not-json", "array", "id-not-str", "no-id", "task-info-not-object"],
)
def test_malformed_create_is_a_protocol_error(payload: bytes) -> None:
    """A 200 create answer that cannot be read raises ProtocolError."""
    with pytest.raises(ProtocolError) as info:
        Evolink().parse_create(200, {}, payload)
    assert (info.value.provider, info.value.status) == ("evolink", 200)


@pytest.mark.parametrize(
    ("word", "progress", "state", "fraction"),
    [
        ("pending", 0, TaskState.PENDING, 0.0),
        ("processing", 45, TaskState.RUNNING, 0.45),
        ("PROCESSING", 100, TaskState.RUNNING, 1.0),
        ("something_new", 10, TaskState.RUNNING, 0.1),
    ],
)
def test_status_words_and_progress(
    word: str, progress: int, state: TaskState, fraction: float
) -> None:
    """Each status word (any case; unknown words = running) and progress 0-100 as 0.0-1.0."""
    status = Evolink().parse_status(
        TASK_ID, 200, {}, body({"id": TASK_ID, "status": word, "progress": progress})
    )
    assert status.state is state
    assert status.progress == pytest.approx(fraction)
    assert status.task_id == TASK_ID
    assert status.result is None and status.error is None


def test_completed_gives_result() -> None:
    """``completed`` yields an EditResult with the URLs, task id, model, usage and raw body."""
    status = Evolink().parse_status(TASK_ID, 200, {"x-request-id": "poll-1"}, body(COMPLETED))
    assert status.state is TaskState.SUCCEEDED
    assert status.progress == 1.0
    result = status.result
    assert result is not None
    assert result.urls == ["https://files.evolink.ai/image.png"]
    assert (result.task_id, result.provider, result.model) == (
        TASK_ID,
        "evolink",
        "qwen-image-edit-plus",
    )
    assert result.request_id == "poll-1"
    assert result.usage is not None
    assert result.usage.raw == {"credits_reserved": 1}
    assert (result.usage.image_count, result.usage.cost) == (None, None)
    assert result.raw == COMPLETED
    assert status.raw == COMPLETED


def test_completed_results_as_objects_are_read() -> None:
    """Results given as ``{"url": ...}`` objects are read like plain URL strings."""
    answer = {"status": "completed", "results": [{"url": "https://r/1.png"}, "https://r/2.png"]}
    status = Evolink().parse_status(TASK_ID, 200, {}, body(answer))
    assert status.result is not None
    assert status.result.urls == ["https://r/1.png", "https://r/2.png"]


@pytest.mark.parametrize("results", [[], None])
def test_completed_without_results_is_not_a_result_yet(results: object) -> None:
    """A completed task with no result image has no result yet, and carries the error (with
    the task id) that the poller raises if the results never come."""
    answer = {"status": "completed", "progress": 90, "results": results}
    status = Evolink().parse_status(TASK_ID, 200, {}, body(answer))
    assert status.state is TaskState.SUCCEEDED and status.result is None
    assert isinstance(status.error, JobFailedError)
    assert status.error.task_id == TASK_ID


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("content_policy_violation", ContentFilterError),
        ("CONTENT_POLICY_VIOLATION", ContentFilterError),
        ("quota_exceeded", JobFailedError),  # "retry later": resubmitted, not final
        ("insufficient_quota", InsufficientQuotaError),
        ("generation_timeout", JobFailedError),
        ("request_cancelled", JobFailedError),
        (500, JobFailedError),
        (None, JobFailedError),
    ],
)
def test_failed_task_maps_its_code(code: str | int | None, cls: type[QwenEditError]) -> None:
    """A failed task's error code picks the class; the error carries task id and code."""
    status = Evolink().parse_status(TASK_ID, 200, {}, failed(code, "blocked by policy"))
    assert status.state is TaskState.FAILED
    err = status.error
    assert type(err) is cls
    assert err is not None
    assert (err.provider, err.task_id, err.message) == ("evolink", TASK_ID, "blocked by policy")
    assert err.code == (None if code is None else str(code))
    assert status.raw == msgspec.json.decode(failed(code, "blocked by policy"))


def test_failed_task_without_error_object() -> None:
    """A failed task with no ``error`` is still a JobFailedError with the task id."""
    status = Evolink().parse_status(TASK_ID, 200, {}, body({"status": "failed"}))
    assert isinstance(status.error, JobFailedError)
    assert status.error.task_id == TASK_ID


def test_status_without_status_word_is_a_protocol_error() -> None:
    """A poll answer with no ``status`` cannot be read and names the task."""
    with pytest.raises(ProtocolError) as info:
        Evolink().parse_status(TASK_ID, 200, {}, body({"id": TASK_ID, "progress": 5}))
    assert info.value.task_id == TASK_ID


@pytest.mark.parametrize(
    "payload", [b"", b"{", b'{"status": 1}', b'{"status": "x", "progress": "a"}']
)
def test_malformed_status_is_a_protocol_error(payload: bytes) -> None:
    """An unreadable poll answer raises ProtocolError (the poller retries GETs)."""
    with pytest.raises(ProtocolError):
        Evolink().parse_status(TASK_ID, 200, {}, payload)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_parameters", BadRequestError),
        (400, 400, BadRequestError),
        (401, "unauthorized", AuthenticationError),
        (401, 401, AuthenticationError),
        (402, "insufficient_balance", InsufficientQuotaError),
        (402, 402, InsufficientQuotaError),
        (403, "forbidden", PermissionDeniedError),
        (429, "rate_limit_exceeded", RateLimitError),
        (500, "internal_error", ServerError),
        (502, 502, ServerError),
        (503, "service_unavailable", ServerError),
    ],
)
def test_http_errors_with_string_or_integer_code(
    status: int, code: str | int, cls: type[APIError]
) -> None:
    """Evolink HTTP errors map by status and code, whether ``code`` is a string or an int."""
    error_body = {
        "error": {"code": code, "message": "nope", "type": "invalid_request_error", "param": None}
    }
    with pytest.raises(APIError) as info:
        Evolink().parse_create(status, {"X-Request-Id": "r-2"}, body(error_body))
    err = info.value
    assert type(err) is cls
    assert (err.provider, err.status, err.code, err.message, err.request_id) == (
        "evolink",
        status,
        str(code),
        "nope",
        "r-2",
    )
    assert err.task_id is None


def test_poll_error_carries_the_task_id() -> None:
    """A 404 ``invalid_task_id`` while polling is a BadRequestError naming the task."""
    error_body = {
        "error": {
            "code": "invalid_task_id",
            "message": "no such task",
            "type": "invalid_request_error",
            "param": "task_id",
        }
    }
    with pytest.raises(BadRequestError) as info:
        Evolink().parse_status(TASK_ID, 404, {}, body(error_body))
    assert (info.value.task_id, info.value.status, info.value.code) == (
        TASK_ID,
        404,
        "invalid_task_id",
    )


def test_rate_limit_retry_after() -> None:
    """429 ``rate_limit_exceeded`` carries ``retry_after`` from the header."""
    err = Evolink().parse_error(
        429, {"Retry-After": "12"}, body({"error": {"code": "rate_limit_exceeded", "message": "m"}})
    )
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 12.0


def test_check_prompt_length_and_callback() -> None:
    """Evolink keeps 2000 characters (2001 rejected) and accepts a callback URL."""
    provider = Evolink()
    provider.check(
        EditRequest(images=["https://e.com/a.png"], prompt="x" * 2000, callback_url=CALLBACK)
    )
    with pytest.raises(ValidationError) as info:
        provider.check(EditRequest(images=["https://e.com/a.png"], prompt="x" * 2001))
    assert info.value.field == "prompt"
    assert (provider.mode, provider.supports_callback, provider.env_var) == (
        "task",
        True,
        "EVOLINK_API_KEY",
    )
