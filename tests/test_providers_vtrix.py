"""The Vtrix dialect: underscored model ids, nested body, tasks, three error forms."""

from __future__ import annotations

import msgspec
import pytest

from qwen_edit_async._errors import (
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
    ValidationError,
)
from qwen_edit_async._models import EditRequest
from qwen_edit_async.providers import ProtocolError, TaskAccepted, TaskState, Vtrix

DATA_URI = "data:image/png;base64,iVBORw0KGgo="
EXAMPLE = EditRequest(
    images=["https://example.com/a.png"],
    prompt="Make it night",
    n=1,
    negative_prompt="...",
    size="1024*1536",
    prompt_extend=True,
    watermark=False,
    seed=1,
)
COMPLETED = {
    "id": "task-1",
    "status": "completed",
    "progress": 1,
    "output": [{"content": [{"type": "image", "url": "https://cdn.vtrix.ai/1.png"}]}],
    "usage": {"cost": "0.03", "quantity": 1, "unit_price": "0.03"},
    "metadata": {},
}


def body(value: object) -> bytes:
    return msgspec.json.encode(value)


@pytest.mark.parametrize(
    ("canonical", "wire"),
    [
        ("qwen-image-edit-plus", "qwen_image_edit_plus"),
        ("qwen-image-edit-plus-2025-12-15", "qwen_image_edit_plus_2025_12_15"),
        ("qwen-image-edit-plus-2025-10-30", "qwen_image_edit_plus_2025_10_30"),
        ("qwen-image-edit-max", "qwen_image_edit_max"),
        ("qwen-image-edit", "qwen_image_edit"),
        ("qwen_image_edit_plus", "qwen_image_edit_plus"),
    ],
)
def test_model_names_map_to_underscores(canonical: str, wire: str) -> None:
    """Canonical hyphen names are sent with underscores (already-underscored ids unchanged)."""
    assert Vtrix().wire_model(canonical) == wire
    assert Vtrix(model=canonical).wire_model() == wire


def test_example_request_body_matches_the_spec() -> None:
    """The documented Vtrix example: nested body, underscored model, images then text."""
    built = Vtrix().build_create(EXAMPLE, ["https://example.com/a.png", DATA_URI])
    assert built.body is not None
    decoded = msgspec.json.decode(built.body)
    assert decoded == {
        "model": "qwen_image_edit_plus",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"image": "https://example.com/a.png"},
                        {"image": DATA_URI},
                        {"text": "Make it night"},
                    ],
                }
            ]
        },
        "parameters": {
            "n": 1,
            "negative_prompt": "...",
            "prompt_extend": True,
            "watermark": False,
            "size": "1024*1536",
            "seed": 1,
        },
    }
    assert [list(item) for item in decoded["input"]["messages"][0]["content"]] == [
        ["image"],
        ["image"],
        ["text"],
    ]


def test_per_call_model_is_mapped_too() -> None:
    """A model given to build_create is mapped like the default one."""
    built = Vtrix().build_create(
        EXAMPLE, ["https://e.com/a.png"], model="qwen-image-edit-plus-2025-12-15"
    )
    assert built.body is not None
    assert msgspec.json.decode(built.body)["model"] == "qwen_image_edit_plus_2025_12_15"


def test_urls_and_headers() -> None:
    """Create POSTs /model/v1/generation with JSON; polling GETs the task path; no Authorization."""
    built = Vtrix().build_create(EXAMPLE, ["https://e.com/a.png"])
    assert (built.method, built.url) == ("POST", "https://cloud.vtrix.ai/model/v1/generation")
    assert dict(built.headers) == {"Content-Type": "application/json"}
    status = Vtrix().build_status("task-1")
    assert (status.method, status.url, status.body) == (
        "GET",
        "https://cloud.vtrix.ai/model/v1/generation/task/task-1",
        None,
    )
    assert "Authorization" not in status.headers


def test_parse_create() -> None:
    """``{"id", "status", "model"}`` gives the task id and keeps the raw body."""
    created = {"id": "task-1", "status": "in_progress", "model": "qwen_image_edit_plus"}
    accepted = Vtrix().parse_create(200, {"X-Request-Id": "r"}, body(created))
    assert accepted == TaskAccepted(task_id="task-1", request_id="r", raw=created)


@pytest.mark.parametrize("payload", [b"", b"nope", b"{}", b'{"id": null}', b'{"id": ["x"]}'])
def test_malformed_create_is_a_protocol_error(payload: bytes) -> None:
    """A 200 create answer without a readable task id raises ProtocolError."""
    with pytest.raises(ProtocolError):
        Vtrix().parse_create(200, {}, payload)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("in_progress", TaskState.RUNNING),
        ("pending", TaskState.PENDING),
        ("processing", TaskState.RUNNING),
        ("In_Progress", TaskState.RUNNING),
        ("warming_up", TaskState.RUNNING),
    ],
)
def test_status_words(word: str, state: TaskState) -> None:
    """Every documented word (any case) maps to its state; an unknown word means running."""
    status = Vtrix().parse_status(
        "task-1", 200, {}, body({"id": "task-1", "status": word, "progress": 0.4})
    )
    assert status.state is state
    assert status.progress == pytest.approx(0.4)
    assert status.result is None and status.error is None


def test_progress_missing_or_out_of_range() -> None:
    """No progress stays None; a value above 1 is read as a percentage."""
    quiet = Vtrix().parse_status("t", 200, {}, body({"status": "pending"}))
    assert quiet.progress is None
    percent = Vtrix().parse_status("t", 200, {}, body({"status": "processing", "progress": 60}))
    assert percent.progress == pytest.approx(0.6)


def test_completed_gives_result() -> None:
    """``completed`` yields the image URLs, usage, canonical model and raw body."""
    answer = {**COMPLETED, "model": "qwen_image_edit_plus_2025_12_15"}
    status = Vtrix().parse_status("task-1", 200, {"X-Request-Id": "p"}, body(answer))
    assert status.state is TaskState.SUCCEEDED
    assert status.progress == 1.0
    result = status.result
    assert result is not None
    assert result.urls == ["https://cdn.vtrix.ai/1.png"]
    assert result.usage is not None
    assert result.usage.raw == {"cost": "0.03", "quantity": 1, "unit_price": "0.03"}
    assert (result.usage.image_count, result.usage.cost) == (1, 0.03)
    assert (result.task_id, result.provider, result.request_id) == ("task-1", "vtrix", "p")
    assert result.model == "qwen-image-edit-plus-2025-12-15"
    assert result.raw == answer


def test_completed_keeps_only_image_items_across_outputs() -> None:
    """Only ``type == "image"`` items with a URL are results, from every output entry."""
    answer = {
        "status": "completed",
        "output": [
            {
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "IMAGE", "url": "https://r/1.png"},
                ]
            },
            {"content": [{"type": "image", "url": "https://r/2.png", "width": 1024}], "role": "x"},
            {"content": [{"type": "image"}]},
        ],
    }
    status = Vtrix().parse_status("t", 200, {}, body(answer))
    assert status.result is not None
    assert status.result.urls == ["https://r/1.png", "https://r/2.png"]


def test_completed_without_images_is_not_a_result_yet() -> None:
    """A completed task listing no image has no result; its error names the task."""
    status = Vtrix().parse_status("t", 200, {}, body({"status": "completed", "output": []}))
    assert status.state is TaskState.SUCCEEDED and status.result is None
    assert isinstance(status.error, JobFailedError)
    assert status.error.task_id == "t"


@pytest.mark.parametrize(
    ("error", "code", "message", "cls"),
    [
        ("generation failed", None, "generation failed", JobFailedError),
        ({"code": 1301, "error_message": "bad input"}, "1301", "bad input", JobFailedError),
        (
            {"code": "DataInspectionFailed", "message": "blocked"},
            "DataInspectionFailed",
            "blocked",
            ContentFilterError,
        ),
        (
            {"code": "insufficient_balance", "message": "pay"},
            "insufficient_balance",
            "pay",
            InsufficientQuotaError,
        ),
    ],
    ids=["string", "int-code-error_message", "str-code-message", "quota"],
)
def test_failed_task_error_forms(
    error: object, code: str | None, message: str, cls: type[QwenEditError]
) -> None:
    """All three ``error`` forms are read into code and message, with the task id."""
    answer = {"id": "task-1", "status": "failed", "error": error}
    status = Vtrix().parse_status("task-1", 200, {}, body(answer))
    assert status.state is TaskState.FAILED
    err = status.error
    assert type(err) is cls
    assert err is not None
    assert (err.provider, err.code, err.message, err.task_id) == ("vtrix", code, message, "task-1")
    assert err.body == answer


@pytest.mark.parametrize(
    ("status", "payload", "cls", "code", "message"),
    [
        (401, {"message": "invalid api key"}, AuthenticationError, None, "invalid api key"),
        (
            403,
            {"message": "Insufficient balance"},
            InsufficientQuotaError,
            None,
            "Insufficient balance",
        ),
        (
            403,
            {"error": "insufficient balance, please top up"},
            InsufficientQuotaError,
            None,
            "insufficient balance, please top up",
        ),
        (403, {"message": "model not allowed"}, PermissionDeniedError, None, "model not allowed"),
        (
            429,
            {"error": {"code": "rate_limited", "message": "slow down"}},
            RateLimitError,
            "rate_limited",
            "slow down",
        ),
        (
            400,
            {"error": {"code": 1001, "error_message": "bad size"}},
            BadRequestError,
            "1001",
            "bad size",
        ),
        (400, {"code": 400, "message": "bad"}, BadRequestError, "400", "bad"),
        (500, {"error": "boom"}, ServerError, None, "boom"),
    ],
)
def test_http_error_forms(
    status: int, payload: object, cls: type[APIError], code: str | None, message: str
) -> None:
    """``message`` or ``error`` (string or object) bodies map by status, code and words."""
    with pytest.raises(APIError) as info:
        Vtrix().parse_create(status, {"x-request-id": "r"}, body(payload))
    err = info.value
    assert type(err) is cls
    assert (err.provider, err.status, err.code, err.message, err.request_id) == (
        "vtrix",
        status,
        code,
        message,
        "r",
    )
    assert err.body == payload


def test_poll_error_carries_task_id_and_retry_after() -> None:
    """A 429 while polling names the task and carries Retry-After."""
    with pytest.raises(RateLimitError) as info:
        Vtrix().parse_status("task-9", 429, {"Retry-After": "4"}, body({"message": "too many"}))
    assert (info.value.task_id, info.value.retry_after) == ("task-9", 4.0)


def test_unreadable_error_body() -> None:
    """A non-JSON 500 is a ServerError showing the text."""
    err = Vtrix().parse_error(500, {}, b"upstream exploded")
    assert type(err) is ServerError
    assert "upstream exploded" in err.message


def test_check_and_capabilities() -> None:
    """Vtrix is a task provider taking data URIs, 800-character prompts, no callbacks."""
    provider = Vtrix()
    assert (provider.mode, provider.accepts_data_uri, provider.env_var) == (
        "task",
        True,
        "VTRIX_API_KEY",
    )
    with pytest.raises(ValidationError):
        provider.check(EditRequest(images=["https://e.com/a.png"], prompt="x" * 801))
    with pytest.raises(ValidationError):
        provider.check(
            EditRequest(images=["https://e.com/a.png"], prompt="x", callback_url="https://e.com/c")
        )
