"""Answers seen from real gateways and providers, read by the dialects over
``(status, headers, body)``: relays' empty strings, collapsed choices and rewrapped codes,
DashScope codes with two meanings, Vtrix's balance error and typed items, and answers that
are a verdict rather than an unreadable body."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import qwen_edit_async as qe
from qwen_edit_async._error_map import api_error, task_error
from qwen_edit_async.providers import DashScope, Evolink, ModelStream, OneToken, TaskState, Vtrix

URL1, URL2 = "https://r.example/1.png", "https://r.example/2.png"


def body(value: Any) -> bytes:
    return msgspec.json.encode(value)


def native(*urls: str) -> dict[str, Any]:
    """DashScope's answer: every image in one choice."""
    return {
        "output": {
            "choices": [
                {
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": [{"image": u} for u in urls]},
                }
            ]
        },
        "usage": {"width": 1024, "height": 1024, "image_count": len(urls)},
        "request_id": "rid-up",
    }


# -- 1. empty strings mean absent ---------------------------------------------------------


def test_relay_empty_b64_json_beside_url_is_a_url_image() -> None:
    """``"b64_json": ""`` beside a url (relays have no omit-empty) is no inline data."""
    answer = {"created": 1, "data": [{"url": URL1, "b64_json": "", "revised_prompt": ""}]}
    result = ModelStream().parse_create(200, {}, body(answer))
    assert isinstance(result, qe.EditResult)
    image = result.images[0]
    assert (image.url, image.b64_json, image.revised_prompt) == (URL1, None, None)


@pytest.mark.parametrize("field", ["url", "b64_json", "revised_prompt"])
def test_generated_image_empty_string_is_none(field: str) -> None:
    """An empty string is absent for every field of a GeneratedImage."""
    kwargs = {"url": URL1, "b64_json": "aGVsbG8=", "revised_prompt": "p"}
    kwargs[field] = ""
    image = qe.GeneratedImage(**kwargs)
    assert getattr(image, field) is None


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"url": "", "b64_json": ""}, {"url": None, "b64_json": None, "revised_prompt": "p"}],
)
def test_generated_image_without_url_or_data_is_a_typed_error(kwargs: dict[str, Any]) -> None:
    """An image with neither a URL nor data is refused, never read as ``b""``."""
    with pytest.raises(qe.ValidationError, match="neither url nor b64_json"):
        qe.GeneratedImage(**kwargs)


def test_generated_image_decoded_from_a_relay_body_drops_empty_strings() -> None:
    """Decoding (journal, results) applies the same rule as construction."""
    image = msgspec.json.decode(b'{"url": "u", "b64_json": ""}', type=qe.GeneratedImage)
    assert image.b64_json is None
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"url": "", "b64_json": ""}', type=qe.GeneratedImage)


def test_read_bytes_never_returns_empty_bytes() -> None:
    """A relay's ``"b64_json": ""`` is no data: reading it is an error, not ``b""``."""
    with pytest.raises(qe.ValidationError, match="only a URL"):
        qe.GeneratedImage(url=URL1, b64_json="").read_bytes()
    with pytest.raises(qe.ValidationError, match="only a URL"):
        qe.GeneratedImage(url=URL1).read_bytes()


# -- 2. a relay collapses DashScope's choices ---------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["object", "json-text"])
def test_collapsed_choices_take_the_images_from_metadata(as_text: bool) -> None:
    """One data[] entry for a choice holding two images: both come from ``metadata``."""
    upstream = native(URL1, URL2)
    answer = {
        "created": 1,
        "data": [{"url": URL1, "b64_json": "", "revised_prompt": "a cat, watercolour"}],
        "metadata": msgspec.json.encode(upstream).decode() if as_text else upstream,
    }
    result = OneToken(base_url="https://gw.example").parse_create(200, {}, body(answer))
    assert isinstance(result, qe.EditResult)
    assert result.urls == [URL1, URL2]
    assert result.images[0].revised_prompt == "a cat, watercolour"
    assert result.usage == qe.Usage.from_raw(upstream["usage"])


def test_metadata_with_no_more_images_leaves_data_alone() -> None:
    """When ``data`` already holds every image, ``metadata`` changes nothing."""
    answer = {
        "data": [{"url": URL1, "b64_json": ""}, {"url": URL2, "b64_json": ""}],
        "metadata": native(URL1),
        "usage": {"image_count": 2},
    }
    result = ModelStream().parse_create(200, {}, body(answer))
    assert isinstance(result, qe.EditResult)
    assert result.urls == [URL1, URL2]
    assert result.usage is not None and result.usage.raw == {"image_count": 2}
    assert result.usage.image_count == 2


@pytest.mark.parametrize("metadata", [{}, {"output": 5}, "not json", [1, 2], None])
def test_unreadable_metadata_is_ignored(metadata: Any) -> None:
    """A metadata field of another shape is not an error."""
    answer = {"data": [{"url": URL1}], "metadata": metadata}
    result = ModelStream().parse_create(200, {}, body(answer))
    assert isinstance(result, qe.EditResult)
    assert result.urls == [URL1]


# -- 3. relays replace the upstream code --------------------------------------------------

MODERATION = "Input data may contain inappropriate content."
ARREARS = "Access denied, please make sure your account is in good standing."
FREE_TIER = "The free quota has been exhausted. Please enable paid usage."
THROTTLE = "Requests rate limit exceeded, please try again later."


@pytest.mark.parametrize("code", ["bad_response_status_code", None, "", 400])
@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (400, MODERATION, qe.ContentFilterError),
        (
            400,
            "Input data is suspected of being involved in IP infringement",
            qe.ContentFilterError,
        ),
        (400, ARREARS, qe.InsufficientQuotaError),
        (403, FREE_TIER, qe.InsufficientQuotaError),
        (429, "Free allocated quota exceeded.", qe.InsufficientQuotaError),
        (429, THROTTLE, qe.RateLimitError),
        (400, THROTTLE, qe.RateLimitError),
        (429, "Request rate increased too quickly.", qe.RateLimitError),
        (400, "The size parameter is invalid", qe.BadRequestError),
        (400, "The image could not be generated", qe.BadRequestError),
        (500, "An internal error has occurred", qe.ServerError),
    ],
)
def test_relayed_error_is_classified_by_its_message(
    code: Any, status: int, message: str, cls: type[qe.APIError]
) -> None:
    """With the code generic or gone, the upstream message decides the class."""
    payload: dict[str, Any] = {"message": message, "type": "upstream_error", "param": ""}
    if code is not None:
        payload["code"] = code
    with pytest.raises(qe.APIError) as info:
        ModelStream().parse_create(status, {}, body({"error": payload}))
    assert type(info.value) is cls
    assert info.value.message == message and info.value.status == status


def test_exhausted_free_quota_relayed_as_429_is_never_retried() -> None:
    """A 429 whose message says the free quota is gone is exhausted, not a throttle."""
    err = api_error(
        provider="modelstream",
        status=429,
        code="bad_response_status_code",
        message="Free allocated quota exceeded.",
        codes=ModelStream.error_codes,
    )
    assert isinstance(err, qe.InsufficientQuotaError) and not err.retryable


def test_a_specific_code_beats_the_message() -> None:
    """Words decide only when the code says nothing: a known code keeps its class."""
    err = api_error(
        provider="p",
        status=400,
        code="InvalidParameter",
        message=THROTTLE,
        codes=DashScope.error_codes,
    )
    assert type(err) is qe.BadRequestError


# -- 4. DashScope codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (403, "AllocationQuota.FreeTierOnly", FREE_TIER, qe.InsufficientQuotaError),
        (400, "AllocationQuota.FreeTierOnly", FREE_TIER, qe.InsufficientQuotaError),
        (
            400,
            "IPInfringementSuspect",
            "Input data is suspected of being involved in IP infringement.",
            qe.ContentFilterError,
        ),
        (
            429,
            "Throttling.AllocationQuota",
            "Free allocated quota exceeded.",
            qe.InsufficientQuotaError,
        ),
        (
            429,
            "Throttling.AllocationQuota",
            "Allocated quota exceeded, please increase your quota limit.",
            qe.RateLimitError,
        ),
        (
            429,
            "Throttling.BurstRate",
            "Request rate increased too quickly. To ensure system stability, please adjust "
            "your client logic to scale requests more smoothly over time.",
            qe.RateLimitError,
        ),
        (
            400,
            "Throttling.BurstRate",
            "Request rate increased too quickly.",
            qe.RateLimitError,
        ),
    ],
)
def test_dashscope_codes(status: int, code: str, message: str, cls: type[qe.APIError]) -> None:
    """Each DashScope code lands in its class, directly and relayed with its code kept."""
    flat = {"request_id": "rid", "code": code, "message": message}
    with pytest.raises(qe.APIError) as info:
        DashScope().parse_create(status, {}, body(flat))
    assert type(info.value) is cls
    assert info.value.retryable == (cls is qe.RateLimitError)
    wrapped = {"error": {"code": code, "message": message, "type": "ali_error"}}
    with pytest.raises(qe.APIError) as info:
        ModelStream().parse_create(status, {}, body(wrapped))
    assert type(info.value) is cls


def test_ip_infringement_inside_a_task_is_content_filter() -> None:
    """Moderation inside a task raises the same class as at submission, with the task id."""
    answer = {
        "id": "t-1",
        "status": "failed",
        "error": {"code": "IPInfringementSuspect", "message": "suspected IP infringement"},
    }
    status = Vtrix().parse_status("t-1", 200, {}, body(answer))
    assert status.state is TaskState.FAILED
    assert isinstance(status.error, qe.ContentFilterError)
    assert status.error.task_id == "t-1"


def test_generic_task_failure_with_moderation_words_is_content_filter() -> None:
    """A failed task with no code but moderation wording is a ContentFilterError."""
    answer = {"id": "t-2", "status": "failed", "error": f"{MODERATION}"}
    status = Vtrix().parse_status("t-2", 200, {}, body(answer))
    assert isinstance(status.error, qe.ContentFilterError)


# -- 5. Vtrix's balance error --------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"error": "insufficient balance", "message": "Forbidden"},
        {"error": "insufficient balance", "message": "permission denied", "request_id": "r"},
        {"error": "insufficient balance"},
    ],
)
def test_vtrix_403_insufficient_balance_is_quota(payload: dict[str, Any]) -> None:
    """403 ``{"error": "insufficient balance", ...}`` is the balance error whatever else
    the body says."""
    with pytest.raises(qe.InsufficientQuotaError) as info:
        Vtrix().parse_create(403, {}, body(payload))
    assert "insufficient balance" in info.value.message


def test_vtrix_403_without_balance_words_stays_permission() -> None:
    """A 403 that does not speak of balance is still a permission error."""
    with pytest.raises(qe.PermissionDeniedError):
        Vtrix().parse_create(403, {}, body({"message": "model not enabled for this key"}))


# -- 6. transient task failures ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "quota_exceeded",
        "service_error",
        "generation_timeout",
        "resource_exhausted",
        "service_unavailable",
        "InternalError.Algo",
        "InternalError.Timeout",
    ],
)
def test_transient_task_failures_are_retryable(code: str) -> None:
    """Failures a provider lists as "retry later" are retryable JobFailedErrors."""
    err = task_error(
        provider="evolink", code=code, message="later", task_id="t", codes=Evolink.error_codes
    )
    assert type(err) is qe.JobFailedError and err.retryable
    assert err.task_id == "t"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("content_policy_violation", qe.ContentFilterError),
        ("DataInspectionFailed", qe.ContentFilterError),
        ("invalid_parameters", qe.JobFailedError),
        ("image_processing_error", qe.JobFailedError),
        ("image_dimension_mismatch", qe.JobFailedError),
        ("generation_failed_no_content", qe.JobFailedError),
        ("insufficient_quota", qe.InsufficientQuotaError),
    ],
)
def test_moderation_and_bad_input_task_failures_are_final(
    code: str, cls: type[qe.QwenEditError]
) -> None:
    """Moderation, bad input and an empty balance are never retryable."""
    err = task_error(
        provider="evolink", code=code, message="no", task_id="t", codes=Evolink.error_codes
    )
    assert type(err) is cls and not err.retryable


def test_evolink_quota_exceeded_task_is_transient() -> None:
    """Evolink's task-level ``quota_exceeded`` (retry later) is retryable; its HTTP 402
    ``quota_exceeded`` stays the final balance error."""
    answer = {"id": "t", "status": "failed", "error": {"code": "quota_exceeded", "message": "m"}}
    status = Evolink().parse_status("t", 200, {}, body(answer))
    assert isinstance(status.error, qe.JobFailedError) and status.error.retryable
    err = Evolink().parse_error(
        402, {}, body({"error": {"code": "quota_exceeded", "message": "m"}})
    )
    assert isinstance(err, qe.InsufficientQuotaError) and not err.retryable


def test_error_says_how_many_submissions() -> None:
    """An error that ended a resubmitted job shows the count in its text."""
    err = task_error(
        provider="evolink",
        code="service_error",
        message="busy",
        task_id="t-3",
        codes=Evolink.error_codes,
    )
    err.submissions = 3
    assert "submissions=3" in str(err) and "task_id=t-3" in str(err)


# -- 8. Vtrix typed items ------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"type": "image_url", "image_url": {"url": URL1}},
        {"type": "image_url", "url": URL1},
        {"type": "image_url", "image_url": URL1},
        {"type": "IMAGE", "url": URL1},
        {"url": URL1},
    ],
    ids=["openai-object", "flat-url", "url-string", "upper-image", "untyped"],
)
def test_vtrix_image_typed_items_with_a_url_are_results(item: dict[str, Any]) -> None:
    """Any image-typed item carrying a URL is a result image."""
    answer = {
        "id": "t",
        "status": "completed",
        "output": [{"content": [{"type": "text", "text": "done"}, item]}],
    }
    status = Vtrix().parse_status("t", 200, {}, body(answer))
    assert status.result is not None
    assert status.result.urls == [URL1]


def test_vtrix_task_id_beside_id() -> None:
    """A create answer naming the task ``task_id`` is read."""
    accepted = Vtrix().parse_create(200, {}, body({"task_id": "t-9", "status": "in_progress"}))
    assert getattr(accepted, "task_id", None) == "t-9"


# -- 21. verdicts in a 200 status answer; too many images ----------------------------------


@pytest.mark.parametrize(
    ("error", "cls", "retryable"),
    [
        ({"code": "invalid_task_id", "message": "task not found"}, qe.TaskNotFoundError, False),
        ({"code": "content_policy_violation", "message": "no"}, qe.ContentFilterError, False),
        ({"code": "rate_limit_exceeded", "message": "slow down"}, qe.RateLimitError, True),
        ("internal failure", qe.BadRequestError, False),
    ],
)
def test_status_200_with_error_and_no_status_is_classified(
    error: Any, cls: type[qe.APIError], retryable: bool
) -> None:
    """A 200 status answer holding only an error object is the provider's verdict: its
    class, not an unreadable answer retried until the job's deadline."""
    with pytest.raises(qe.APIError) as info:
        Evolink().parse_status("t-5", 200, {}, body({"error": error}))
    assert type(info.value) is cls
    assert info.value.retryable is retryable
    assert info.value.task_id == "t-5"


def test_task_listing_more_than_six_images_is_refused() -> None:
    """3,000 URLs for one edit fail the job at once, with the task id."""
    answer = {
        "id": "t",
        "status": "completed",
        "results": [f"https://r/{i}.png" for i in range(3000)],
    }
    status = Evolink().parse_status("t", 200, {}, body(answer))
    assert status.state is TaskState.FAILED and status.result is None
    assert isinstance(status.error, qe.JobFailedError)
    assert "3000 images" in status.error.message and status.error.task_id == "t"


def test_sync_answer_listing_more_than_six_images_is_refused() -> None:
    """A synchronous answer with more than 6 images is refused before anything is fetched."""
    with pytest.raises(qe.JobFailedError, match="7 images"):
        DashScope().parse_create(200, {}, body(native(*[f"https://r/{i}" for i in range(7)])))
    answer = {"data": [{"url": f"https://r/{i}"} for i in range(7)]}
    with pytest.raises(qe.JobFailedError, match="7 images"):
        ModelStream().parse_create(200, {}, body(answer))
