"""EditRequest and Size: validation at construction, size snapping, error messages."""

from __future__ import annotations

import contextlib
import pathlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import qwen_edit_async as qe

URL = "https://example.com/a.png"


@given(st.integers(512, 2048), st.integers(512, 2048))
def test_every_valid_size_snaps_to_a_multiple_of_16_nearby(width: int, height: int) -> None:
    """Each side in 512-2048 becomes a multiple of 16 within 8 of it, still in range."""
    size = qe.Size(width, height)
    for given_side, side in ((width, size.width), (height, size.height)):
        assert side % 16 == 0
        assert abs(side - given_side) <= 8
        assert 512 <= side <= 2048


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1033*1032", (1040, 1024)),
        ("1024x1536", (1024, 1536)),
        ("512*2048", (512, 2048)),
        ((1000, 1000), (992, 992)),
        ((1001, 1000), (1008, 992)),
        (qe.Size(1024, 1024), (1024, 1024)),
        (" 1024 X 768 ", (1024, 768)),
    ],
)
def test_size_parse_forms_and_ties_going_down(value: object, expected: tuple[int, int]) -> None:
    """Size.parse reads every documented form; a tie (1032) snaps down, 1033 up."""
    size = qe.Size.parse(value)  # type: ignore[arg-type]
    assert (size.width, size.height) == expected


@pytest.mark.parametrize("value", ["511*1024", "1024*2049", "4000*4000", "1024", "a*b", (1024,), 7])
def test_bad_sizes_raise_validation_error_naming_size(value: object) -> None:
    """Out-of-range sides and malformed sizes are ValidationErrors that name the field."""
    with pytest.raises(qe.ValidationError) as info:
        qe.Size.parse(value)  # type: ignore[arg-type]
    assert info.value.field == "size"
    assert "size" in str(info.value)


def test_request_stores_the_snapped_size_and_leaves_unset_fields_out() -> None:
    """The request carries the size the user will get; unset fields are not in to_dict."""
    request = qe.EditRequest(images=[URL], prompt="hat", size="1033*1032")
    assert request.size == qe.Size(1040, 1024)
    assert request.to_dict() == {
        "images": [URL],
        "prompt": "hat",
        "size": {"width": 1040, "height": 1024},
    }


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"images": []}, "images", "1 to 3"),
        ({"images": [URL] * 4}, "images", "1 to 3"),
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({"prompt": 3}, "prompt", "not text"),
        ({"negative_prompt": "x" * 501}, "negative_prompt", "at most 500"),
        ({"n": 0}, "n", "from 1 to 6"),
        ({"n": 7}, "n", "from 1 to 6"),
        ({"n": True}, "n", "not an integer"),
        ({"n": 2.0}, "n", "not an integer"),
        ({"seed": -1}, "seed", "0 to 2147483647"),
        ({"seed": 2147483648}, "seed", "0 to 2147483647"),
        ({"prompt_extend": "yes"}, "prompt_extend", "boolean"),
        ({"watermark": 1}, "watermark", "boolean"),
        ({"callback_url": "http://example.com/hook"}, "callback_url", "https"),
        ({"images": ["ftp://example.com/a.png"]}, "images[0]", "ftp"),
    ],
)
def test_each_invalid_field_names_the_field_and_the_rule(
    fields: dict[str, object], field: str, words: str
) -> None:
    """Bad input raises ValidationError (also a ValueError) naming the field and the rule."""
    values: dict[str, object] = {"images": [URL], "prompt": "edit"} | fields
    with pytest.raises(qe.ValidationError) as info:
        qe.EditRequest(**values)  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    assert field.split("[")[0] in str(err)
    assert words in str(err)


_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.lists(st.integers(), max_size=3),
)


@pytest.mark.slow  # over 2.5 s on 2 cores (pyproject's rule for the marker)
@given(
    images=st.one_of(_anything, st.lists(_anything, max_size=4)),
    prompt=_anything,
    n=_anything,
    seed=_anything,
    size=_anything,
    watermark=_anything,
    negative_prompt=_anything,
)
def test_arbitrary_values_raise_only_validation_error(**fields: object) -> None:
    """Whatever is passed, construction succeeds or raises ValidationError: never another type."""
    with contextlib.suppress(qe.ValidationError):
        qe.EditRequest(**fields)  # type: ignore[arg-type]


def test_manifest_style_decoding_validates_and_rejects_unknown_fields() -> None:
    """Decoding JSON into EditRequest runs the same validation and forbids unknown fields."""
    ok = msgspec.json.decode(
        b'{"images": ["https://example.com/a.png"], "prompt": "x", "size": "1033x1032"}',
        type=qe.EditRequest,
    )
    assert ok.size == qe.Size(1040, 1024)
    with pytest.raises(msgspec.ValidationError, match="n: 9"):
        msgspec.json.decode(
            b'{"images": ["https://e.com/a.png"], "prompt": "x", "n": 9}', type=qe.EditRequest
        )
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(
            b'{"images": ["https://e.com/a.png"], "prompt": "x", "nn": 1}', type=qe.EditRequest
        )


def test_a_single_image_may_be_given_without_a_list(tmp_path: pathlib.Path) -> None:
    """edit("cat.png", ...) is common: one path or URL is taken as a one-image list."""
    request = qe.EditRequest(images=URL, prompt="x")  # type: ignore[arg-type]
    assert request.images == (URL,)


def test_generated_image_bytes_from_b64() -> None:
    """read_bytes decodes b64_json results and refuses URL-only ones with a hint."""
    image = qe.GeneratedImage(b64_json="aGVsbG8=")
    assert image.read_bytes() == b"hello"
    with pytest.raises(ValueError, match="download"):
        qe.GeneratedImage(url=URL).read_bytes()


def test_a_request_cannot_be_changed_after_validation() -> None:
    """EditRequest is frozen: n=99 or seed=-5 cannot be slipped in after the checks ran, and
    the images are a tuple, so they cannot be swapped either."""
    request = qe.EditRequest(images=[URL], prompt="x", n=2)
    with pytest.raises(AttributeError):
        request.n = 99  # type: ignore[misc]
    with pytest.raises(AttributeError):
        request.seed = -5  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.images[0] = "file:///etc/passwd"  # type: ignore[index]
    assert request.n == 2 and request.images == (URL,)


def test_a_variant_is_derived_with_replace_and_validated_again() -> None:
    """msgspec.structs.replace gives a new request, checked like a new one."""
    request = qe.EditRequest(images=[URL], prompt="x", size="1033*1032")
    variant = msgspec.structs.replace(request, n=3, size="1024x1536")
    assert variant.n == 3 and variant.size == qe.Size(1024, 1536)
    assert request.n is None and request.size == qe.Size(1040, 1024)
    with pytest.raises(qe.ValidationError, match=r"^n: .*from 1 to 6"):
        msgspec.structs.replace(request, n=99)
    with pytest.raises(qe.ValidationError, match=r"^seed: "):
        msgspec.structs.replace(request, seed=-5)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_in_text_is_a_validation_error(field: str) -> None:
    """Text that cannot be encoded as UTF-8 fails at construction, naming the field, not with
    UnicodeEncodeError when the request is sent."""
    fields = {"images": [URL], "prompt": "ok", field: "cat \ud800 hat"}
    with pytest.raises(qe.ValidationError, match=rf"^{field}: character 4 is a lone surrogate"):
        qe.EditRequest(**fields)  # type: ignore[arg-type]


def test_a_callback_url_with_a_lone_surrogate_is_refused() -> None:
    """A callback URL that cannot be encoded is refused like bad text."""
    with pytest.raises(qe.ValidationError, match=r"^callback_url: .*lone surrogate"):
        qe.EditRequest(images=[URL], prompt="x", callback_url="https://example.com/\udc80")


@pytest.mark.parametrize(
    "size", ["9" * 5000 + "*1024", "1024x" + "1" * 5000, "0000001024*" + "7" * 20]
)
def test_a_size_with_thousands_of_digits_is_a_validation_error(size: str) -> None:
    """A side of thousands of digits is out of range (a ValidationError), not the bare
    ValueError int() raises past 4300 digits; leading zeros do not count."""
    with pytest.raises(qe.ValidationError, match=r"^size\.(width|height): .*out of range"):
        qe.EditRequest(images=[URL], prompt="x", size=size)


def test_leading_zeros_in_a_size_are_still_read() -> None:
    """The digit bound ignores leading zeros: '0001024*01536' is 1024x1536."""
    assert qe.Size.parse("0001024*01536") == qe.Size(1024, 1536)
