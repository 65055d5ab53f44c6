"""The DashScope dialect (Beijing and Singapore): pure request building and answer reading."""

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
    RateLimitError,
    ServerError,
    ValidationError,
)
from qwen_edit_async._models import EditRequest, EditResult
from qwen_edit_async.providers import DashScope, DashScopeIntl, ProtocolError

PATH = "/api/v1/services/aigc/multimodal-generation/generation"
DATA_URI = "data:image/jpeg;base64,/9j/..."

# The example request of the DashScope documentation.
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
EXAMPLE_IMAGES = ["https://example.com/a.png", DATA_URI]
EXAMPLE_BODY = {
    "model": "qwen-image-edit-plus",
    "input": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"image": "https://example.com/a.png"},
                    {"image": DATA_URI},
                    {"text": "Put the cat from image 1 on the sofa from image 2"},
                ],
            }
        ]
    },
    "parameters": {
        "n": 2,
        "negative_prompt": "blurry",
        "prompt_extend": True,
        "watermark": False,
        "size": "1024*1536",
        "seed": 42,
    },
}

SIGNED = (
    "https://dashscope-result-sz.oss-cn-shenzhen.aliyuncs.com/x.png"
    "?Expires=1767000000&Signature=..."
)
SUCCESS = {
    "output": {
        "choices": [
            {
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": [{"image": SIGNED}]},
            }
        ]
    },
    "usage": {"width": 1024, "height": 1536, "image_count": 1},
    "request_id": "bf37ca26-0abe-98e4-8065-000000000000",
}


def body(value: object) -> bytes:
    return msgspec.json.encode(value)


def test_example_request_body_matches_the_spec() -> None:
    """The documented example request encodes to exactly the documented JSON."""
    request = DashScope().build_create(EXAMPLE, EXAMPLE_IMAGES)
    assert request.body is not None
    assert msgspec.json.decode(request.body) == EXAMPLE_BODY


def test_images_come_first_in_order_and_text_last() -> None:
    """Content items keep the image order and end with the single text item."""
    request = DashScope().build_create(EXAMPLE, ["https://e.com/3.png", "https://e.com/1.png"])
    assert request.body is not None
    content = msgspec.json.decode(request.body)["input"]["messages"][0]["content"]
    assert [list(item) for item in content] == [["image"], ["image"], ["text"]]
    assert [item.get("image") for item in content[:2]] == [
        "https://e.com/3.png",
        "https://e.com/1.png",
    ]
    assert list(msgspec.json.decode(request.body)) == ["model", "input", "parameters"]


def test_unset_fields_are_absent_not_null() -> None:
    """A request with no options sends no ``parameters`` at all, and never ``null``."""
    minimal = EditRequest(images=["https://e.com/a.png"], prompt="Make it snow")
    request = DashScope().build_create(minimal, ["https://e.com/a.png"])
    assert request.body is not None
    assert b"null" not in request.body
    assert msgspec.json.decode(request.body) == {
        "model": "qwen-image-edit-plus",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [{"image": "https://e.com/a.png"}, {"text": "Make it snow"}],
                }
            ]
        },
    }


def test_only_the_set_options_are_sent() -> None:
    """Setting one option (even to a falsy value) sends exactly that parameter."""
    request = EditRequest(images=["https://e.com/a.png"], prompt="x", watermark=False)
    built = DashScope().build_create(request, ["https://e.com/a.png"])
    assert built.body is not None
    assert msgspec.json.decode(built.body)["parameters"] == {"watermark": False}


def test_url_method_and_headers() -> None:
    """POST to the documented path, JSON content type, and no Authorization header."""
    request = DashScope().build_create(EXAMPLE, EXAMPLE_IMAGES)
    assert request.method == "POST"
    assert request.url == "https://dashscope.aliyuncs.com" + PATH
    assert dict(request.headers) == {"Content-Type": "application/json"}
    intl = DashScopeIntl().build_create(EXAMPLE, EXAMPLE_IMAGES)
    assert intl.url == "https://dashscope-intl.aliyuncs.com" + PATH


def test_base_url_override_and_model_per_call() -> None:
    """A base URL with a trailing slash joins cleanly; a per-call model wins over the default."""
    provider = DashScope(base_url="http://127.0.0.1:8000/", model="qwen-image-edit-max")
    request = provider.build_create(
        EXAMPLE, EXAMPLE_IMAGES, model="qwen-image-edit-plus-2025-12-15"
    )
    assert request.url == "http://127.0.0.1:8000" + PATH
    assert request.body is not None
    assert msgspec.json.decode(request.body)["model"] == "qwen-image-edit-plus-2025-12-15"
    default = provider.build_create(EXAMPLE, EXAMPLE_IMAGES)
    assert default.body is not None
    assert msgspec.json.decode(default.body)["model"] == "qwen-image-edit-max"


def test_parse_success_collects_every_image_across_choices() -> None:
    """Images from all choices and content items are collected in order; text items skipped."""
    answer = {
        "output": {
            "choices": [
                {"message": {"content": [{"image": "https://r/1.png"}, {"text": "note"}]}},
                {
                    "message": {
                        "content": [{"image": "https://r/2.png"}, {"image": "https://r/3.png"}]
                    }
                },
            ]
        },
        "request_id": "rid",
    }
    result = DashScope().parse_create(200, {}, body(answer))
    assert isinstance(result, EditResult)
    assert result.urls == ["https://r/1.png", "https://r/2.png", "https://r/3.png"]


def test_parse_documented_success() -> None:
    """The documented 200 answer gives its URL, usage, request id, provider and raw body."""
    result = DashScope().parse_create(200, {}, body(SUCCESS))
    assert isinstance(result, EditResult)
    assert result.urls == [SIGNED]
    assert result.images[0].b64_json is None
    assert result.usage is not None
    assert result.usage.raw == {"width": 1024, "height": 1536, "image_count": 1}
    assert (result.usage.image_count, result.usage.cost) == (1, None)
    assert result.request_id == "bf37ca26-0abe-98e4-8065-000000000000"
    assert result.provider == "dashscope"
    assert result.raw == SUCCESS


def test_unknown_fields_are_ignored() -> None:
    """Fields the dialect does not know, at any depth, do not break reading."""
    answer = {
        **SUCCESS,
        "new_top": [1, 2],
        "output": {
            "choices": [
                {"message": {"content": [{"image": "https://r/1.png", "extra": {}}]}, "x": 1}
            ],
            "task_metrics": {"TOTAL": 1},
        },
    }
    result = DashScope().parse_create(200, {}, body(answer))
    assert isinstance(result, EditResult)
    assert result.urls == ["https://r/1.png"]


def test_request_id_from_header_when_body_has_none() -> None:
    """Without ``request_id`` in the body, the ``x-dashscope-request-id`` header is used."""
    answer = {k: v for k, v in SUCCESS.items() if k != "request_id"}
    result = DashScope().parse_create(200, {"X-DashScope-Request-Id": "from-header"}, body(answer))
    assert isinstance(result, EditResult)
    assert result.request_id == "from-header"


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[]", b'{"output": 5}', b'{"output": {"choices": "x"}}'],
    ids=["empty", "not-json", "array", "output-not-object", "choices-not-list"],
)
def test_malformed_success_body_is_a_protocol_error(payload: bytes) -> None:
    """A 200 whose body cannot be read as an answer raises ProtocolError with the status."""
    with pytest.raises(ProtocolError) as info:
        DashScope().parse_create(200, {}, payload)
    assert info.value.status == 200
    assert info.value.provider == "dashscope"


@pytest.mark.parametrize(
    "answer",
    [{"output": {"choices": [{"message": {"content": [{"text": "sorry"}]}}]}}, {}],
    ids=["text-only", "no-output"],
)
def test_success_without_any_image_is_a_failed_job(answer: dict[str, object]) -> None:
    """A readable 200 that holds no image is a certain failure (the job ran), never an
    unreadable answer that would be reported as uncertain."""
    with pytest.raises(JobFailedError, match="without any result image") as info:
        DashScope().parse_create(200, {}, body(answer))
    assert not isinstance(info.value, ProtocolError)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "InvalidParameter", BadRequestError),
        (400, "BadRequest.EmptyInput", BadRequestError),
        (400, "BadRequest.EmptyParameters", BadRequestError),
        (400, "BadRequest.EmptyModel", BadRequestError),
        (400, "InvalidURL", BadRequestError),
        (400, "DataInspectionFailed", ContentFilterError),
        (400, "Arrearage", InsufficientQuotaError),
        (401, "InvalidApiKey", AuthenticationError),
        (403, "AccessDenied", PermissionDeniedError),
        (403, "AccessDenied.Unpurchased", PermissionDeniedError),
        (408, "RequestTimeOut", ServerError),
        (413, "BadRequest.TooLarge", BadRequestError),
        (415, "BadRequest.InputDownloadFailed", BadRequestError),
        (415, "BadRequest.UnsupportedFileFormat", BadRequestError),
        (429, "Throttling", RateLimitError),
        (429, "Throttling.RateQuota", RateLimitError),
        (429, "Throttling.AllocationQuota", RateLimitError),  # no "Free": a throttle
        (500, "InternalError", ServerError),
        (500, "InternalError.Algo", ServerError),
        (500, "InternalError.Timeout", ServerError),
        (500, "SystemError", ServerError),
    ],
)
def test_error_table_rows_map_to_their_class(status: int, code: str, cls: type[APIError]) -> None:
    """Each row of the DashScope error table raises exactly its class, with full context."""
    error_body = {"request_id": "rid-1", "code": code, "message": f"{code} happened"}
    with pytest.raises(APIError) as info:
        DashScope().parse_create(status, {}, body(error_body))
    err = info.value
    assert type(err) is cls
    assert (err.provider, err.status, err.code) == ("dashscope", status, code)
    assert err.message == f"{code} happened"
    assert err.request_id == "rid-1"
    assert err.body == error_body


def test_codes_are_compared_case_insensitively() -> None:
    """``datainspectionfailed`` is moderation just like ``DataInspectionFailed``."""
    err = DashScope().parse_error(400, {}, body({"code": "datainspectionfailed", "message": "m"}))
    assert isinstance(err, ContentFilterError)


def test_throttling_carries_retry_after_from_the_header() -> None:
    """429 Throttling becomes RateLimitError with ``retry_after`` read from Retry-After."""
    err = DashScope().parse_error(
        429, {"Retry-After": "7"}, body({"code": "Throttling", "message": "slow down"})
    )
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 7.0


def test_error_request_id_from_header() -> None:
    """An error body without ``request_id`` takes it from the response header."""
    err = DashScope().parse_error(
        400, {"x-dashscope-request-id": "hdr"}, body({"code": "InvalidParameter", "message": "m"})
    )
    assert err.request_id == "hdr"


def test_unreadable_error_body_still_maps_by_status() -> None:
    """A proxy's HTML 502 gives a ServerError whose message shows the status and the text."""
    err = DashScope().parse_error(502, {}, b"<html>Bad Gateway</html>")
    assert type(err) is ServerError
    assert err.status == 502
    assert err.code is None
    assert "502" in err.message
    assert "Bad Gateway" in err.message


def test_error_with_odd_shape_keeps_raw_body() -> None:
    """A JSON error body of an unexpected shape maps by status and keeps the raw value."""
    err = DashScope().parse_error(401, {}, b'{"code": ["x"]}')
    assert type(err) is AuthenticationError
    assert err.body == {"code": ["x"]}


def test_error_body_in_a_200_is_raised() -> None:
    """A 200 carrying only an error code is read as that error, not as a malformed answer."""
    with pytest.raises(ContentFilterError):
        DashScope().parse_create(200, {}, body({"code": "DataInspectionFailed", "message": "m"}))


def test_check_rejects_a_prompt_over_800_characters() -> None:
    """DashScope keeps 800 characters: 800 pass, 801 raise ValidationError on ``prompt``."""
    DashScope().check(EditRequest(images=["https://e.com/a.png"], prompt="x" * 800))
    with pytest.raises(ValidationError) as info:
        DashScope().check(EditRequest(images=["https://e.com/a.png"], prompt="x" * 801))
    assert info.value.field == "prompt"


def test_check_rejects_callback_and_accepts_oss() -> None:
    """DashScope has no callbacks, but understands ``oss://`` temporary URLs."""
    with pytest.raises(ValidationError) as info:
        DashScope().check(
            EditRequest(images=["https://e.com/a.png"], prompt="x", callback_url="https://e.com/cb")
        )
    assert info.value.field == "callback_url"
    DashScope().check(EditRequest(images=["oss://bucket/key.png"], prompt="x"))


def test_oss_url_is_sent_as_given() -> None:
    """An ``oss://`` URL goes into the body unchanged."""
    request = EditRequest(images=["oss://bucket/key.png"], prompt="x")
    built = DashScope().build_create(request, ["oss://bucket/key.png"])
    assert built.body is not None
    content = msgspec.json.decode(built.body)["input"]["messages"][0]["content"]
    assert content[0] == {"image": "oss://bucket/key.png"}


def test_declared_capabilities() -> None:
    """DashScope is synchronous, takes data URIs and oss://, and reads DASHSCOPE_API_KEY."""
    for cls in (DashScope, DashScopeIntl):
        assert cls.mode == "sync"
        assert cls.accepts_data_uri and cls.accepts_oss
        assert cls.env_var == "DASHSCOPE_API_KEY"
        assert cls.max_prompt == 800
        assert not cls.supports_callback
    assert (DashScope.name, DashScopeIntl.name) == ("dashscope", "dashscope-intl")
