"""The OpenAI-shaped gateways (ModelStream, OneToken): native body in, OpenAI answer out."""

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
    RateLimitError,
    ServerError,
    ValidationError,
)
from qwen_edit_async._models import EditRequest, EditResult
from qwen_edit_async.providers import DashScope, ModelStream, OneToken, ProtocolError, Provider

ONETOKEN_BASE = "https://gateway.example.com"
DATA_URI = "data:image/jpeg;base64,/9j/..."
EXAMPLE = EditRequest(
    images=["https://example.com/a.png", "https://example.com/b.png"],
    prompt="Put the cat from image 1 on the sofa from image 2",
    n=2,
    negative_prompt="blurry",
    prompt_extend=True,
    watermark=False,
    size="1024*1536",
    seed=42,
)
IMAGES = ["https://example.com/a.png", DATA_URI]
SUCCESS = {
    "created": 1757156493,
    "data": [{"url": "https://r/1.png", "b64_json": None, "revised_prompt": "a cat on a sofa"}],
}


def gateways() -> list[Provider]:
    return [ModelStream(), OneToken(base_url=ONETOKEN_BASE)]


def body(value: object) -> bytes:
    return msgspec.json.encode(value)


@pytest.mark.parametrize("provider", gateways(), ids=lambda p: p.name)
def test_gateways_send_the_native_body_unchanged(provider: Provider) -> None:
    """Both gateways send exactly the DashScope body for the same request."""
    built = provider.build_create(EXAMPLE, IMAGES)
    native = DashScope().build_create(EXAMPLE, IMAGES)
    assert built.body == native.body
    assert built.body is not None
    assert msgspec.json.decode(built.body)["parameters"]["size"] == "1024*1536"


def test_modelstream_url_and_headers() -> None:
    """ModelStream posts to /v1/images/generations (even for edits), JSON, no Authorization."""
    built = ModelStream().build_create(EXAMPLE, IMAGES)
    assert (built.method, built.url) == ("POST", "https://api.modelstream.ai/v1/images/generations")
    assert dict(built.headers) == {"Content-Type": "application/json"}


def test_onetoken_url_and_headers() -> None:
    """OneToken posts to {base}/v1/images/edits, JSON, no Authorization."""
    built = OneToken(base_url=ONETOKEN_BASE + "/").build_create(EXAMPLE, IMAGES)
    assert (built.method, built.url) == ("POST", ONETOKEN_BASE + "/v1/images/edits")
    assert dict(built.headers) == {"Content-Type": "application/json"}


def test_onetoken_without_base_url_is_a_configuration_error() -> None:
    """OneToken's host is unpublished: constructing it without base_url says to pass one."""
    with pytest.raises(ConfigurationError, match="base_url"):
        OneToken()


def test_onetoken_replace_keeps_its_base_url() -> None:
    """``replace(model=...)`` on OneToken keeps the base URL it was given."""
    copy = OneToken(base_url=ONETOKEN_BASE).replace(model="qwen-image-edit-max")
    assert (copy.base_url, copy.model) == (ONETOKEN_BASE, "qwen-image-edit-max")


@pytest.mark.parametrize("provider", gateways(), ids=lambda p: p.name)
def test_parse_documented_success(provider: Provider) -> None:
    """The documented answer gives the URL, the revised prompt and the raw body."""
    result = provider.parse_create(200, {"X-Request-Id": "req-9"}, body(SUCCESS))
    assert isinstance(result, EditResult)
    assert result.urls == ["https://r/1.png"]
    assert result.images[0].revised_prompt == "a cat on a sofa"
    assert result.images[0].b64_json is None
    assert result.provider == provider.name
    assert result.request_id == "req-9"
    assert result.raw == SUCCESS


def test_parse_b64_json_answer() -> None:
    """A ``b64_json`` result is kept as such and readable as bytes."""
    answer = {"created": 1, "data": [{"b64_json": "iVBORw0KGgo=", "extra": 1}], "more": True}
    result = ModelStream().parse_create(200, {}, body(answer))
    assert isinstance(result, EditResult)
    assert result.images[0].url is None
    assert result.images[0].read_bytes() == b"\x89PNG\r\n\x1a\n"


def test_items_without_url_or_data_are_skipped() -> None:
    """Empty items are dropped; the others keep their order."""
    answer = {
        "data": [{"url": "https://r/1.png"}, {"revised_prompt": "x"}, {"url": "https://r/2.png"}]
    }
    result = ModelStream().parse_create(200, {}, body(answer))
    assert isinstance(result, EditResult)
    assert result.urls == ["https://r/1.png", "https://r/2.png"]


@pytest.mark.parametrize(
    "payload",
    [b"<html>", b"[]", b'{"data": "x"}'],
    ids=["not-json", "array", "data-not-list"],
)
def test_malformed_success_is_a_protocol_error(payload: bytes) -> None:
    """A 200 that is not a readable answer raises ProtocolError."""
    with pytest.raises(ProtocolError) as info:
        ModelStream().parse_create(200, {}, payload)
    assert (info.value.provider, info.value.status) == ("modelstream", 200)


@pytest.mark.parametrize(
    "payload",
    [b'{"data": []}', b'{"created": 1}', b'{"data": [{"url": "", "b64_json": ""}]}'],
    ids=["no-images", "no-data", "empty-strings"],
)
def test_readable_success_without_images_is_a_failed_job(payload: bytes) -> None:
    """A readable 200 without any image is a certain failure: the job ran."""
    with pytest.raises(JobFailedError) as info:
        ModelStream().parse_create(200, {}, payload)
    assert (info.value.provider, info.value.status) == ("modelstream", 200)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "DataInspectionFailed", ContentFilterError),
        (400, "InvalidParameter", BadRequestError),
        (400, "Arrearage", InsufficientQuotaError),
        (429, "Throttling.AllocationQuota", RateLimitError),  # no "Free": a throttle
        (401, "invalid_api_key", AuthenticationError),
        (401, None, AuthenticationError),
        (429, 429, RateLimitError),
        (500, "InternalError", ServerError),
        (503, None, ServerError),
    ],
)
def test_openai_error_object_maps_by_code_and_status(
    status: int, code: str | int | None, cls: type[APIError]
) -> None:
    """``{"error": {...}}`` with a string, integer or null code raises the right class."""
    error_body = {
        "error": {"message": "went wrong", "type": "upstream_error", "param": None, "code": code}
    }
    with pytest.raises(APIError) as info:
        OneToken(base_url=ONETOKEN_BASE).parse_create(
            status, {"x-request-id": "r1"}, body(error_body)
        )
    err = info.value
    assert type(err) is cls
    assert (err.provider, err.status, err.message, err.request_id) == (
        "onetoken",
        status,
        "went wrong",
        "r1",
    )
    assert err.code == (None if code is None else str(code))
    assert err.body == error_body


def test_rate_limit_carries_retry_after() -> None:
    """A gateway 429 reads ``Retry-After`` into ``retry_after``."""
    err = ModelStream().parse_error(
        429, {"retry-after": "3"}, body({"error": {"message": "slow", "code": "Throttling"}})
    )
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 3.0


def test_relayed_flat_dashscope_error_is_read() -> None:
    """A gateway that passes DashScope's flat body through still yields code and request id."""
    flat = {"request_id": "ds-1", "code": "DataInspectionFailed", "message": "blocked"}
    err = ModelStream().parse_error(400, {}, body(flat))
    assert type(err) is ContentFilterError
    assert (err.code, err.message, err.request_id) == ("DataInspectionFailed", "blocked", "ds-1")


def test_error_as_plain_string_is_the_message() -> None:
    """``{"error": "text"}`` gives that text as the message."""
    err = ModelStream().parse_error(403, {}, body({"error": "model not enabled"}))
    assert err.message == "model not enabled"
    assert err.status == 403


def test_error_object_in_a_200_is_raised() -> None:
    """A 200 carrying an error object and no data raises that error."""
    error_body = {"error": {"message": "blocked", "code": "DataInspectionFailed"}}
    with pytest.raises(ContentFilterError) as info:
        ModelStream().parse_create(200, {}, body(error_body))
    assert info.value.status == 200


def test_unreadable_error_body_maps_by_status() -> None:
    """A non-JSON 429 is still a RateLimitError."""
    err = ModelStream().parse_error(429, {"Retry-After": "2"}, b"Too Many Requests")
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 2.0
    assert "Too Many Requests" in err.message


def test_check_and_capabilities() -> None:
    """Gateways are sync, take data URIs, keep 800 characters and refuse callbacks and oss://."""
    for provider in gateways():
        assert provider.mode == "sync" and provider.accepts_data_uri
        assert not provider.accepts_oss
        with pytest.raises(ValidationError):
            provider.check(EditRequest(images=["https://e.com/a.png"], prompt="x" * 801))
        with pytest.raises(ValidationError) as info:
            provider.check(EditRequest(images=["oss://b/k.png"], prompt="x"))
        assert info.value.field == "images[0]"
        with pytest.raises(ValidationError):
            provider.check(
                EditRequest(
                    images=["https://e.com/a.png"], prompt="x", callback_url="https://e.com/c"
                )
            )
    assert (ModelStream.env_var, OneToken.env_var) == ("MODELSTREAM_API_KEY", "ONETOKEN_API_KEY")
