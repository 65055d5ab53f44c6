"""Results you can store: ``to_dict`` gives JSON values; ``usage`` is typed."""

from __future__ import annotations

import json
import pathlib

from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider


def test_usage_reads_the_fields_the_providers_agree_on() -> None:
    """DashScope's image_count and Vtrix's quantity are the image count; cost is a number;
    odd types are left None instead of failing a paid result."""
    dashscope = qe.Usage.from_raw({"width": 1024, "height": 1536, "image_count": 2})
    assert dashscope is not None and (dashscope.image_count, dashscope.cost) == (2, None)
    vtrix = qe.Usage.from_raw({"cost": "0.06", "quantity": 2, "unit_price": "0.03"})
    assert vtrix is not None and (vtrix.image_count, vtrix.cost) == (2, 0.06)
    odd = qe.Usage.from_raw({"cost": "n/a", "quantity": True})
    assert odd is not None and (odd.image_count, odd.cost) == (None, None)
    assert odd.raw == {"cost": "n/a", "quantity": True}
    assert qe.Usage.from_raw(None) is None
    assert qe.Usage.from_raw("free") is None


def test_edit_result_to_dict_is_json_and_leaves_raw_out_unless_asked() -> None:
    """Every value survives json.dumps; ``raw`` only with include_raw."""
    result = qe.EditResult(
        images=[qe.GeneratedImage(url="https://r/1.png", revised_prompt="a cat")],
        provider="vtrix",
        model="qwen-image-edit-plus",
        task_id="t-1",
        request_id="r-1",
        usage=qe.Usage.from_raw({"cost": "0.03", "quantity": 1}),
        raw={"id": "t-1", "blob": b"\x00\x01", "when": pathlib.Path("x")},
    )
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "images": [{"url": "https://r/1.png", "revised_prompt": "a cat"}],
        "provider": "vtrix",
        "model": "qwen-image-edit-plus",
        "task_id": "t-1",
        "request_id": "r-1",
        "usage": {"image_count": 1, "cost": 0.03, "raw": {"cost": "0.03", "quantity": 1}},
    }
    with_raw = result.to_dict(include_raw=True)
    assert json.loads(json.dumps(with_raw)) == with_raw
    assert with_raw["raw"] == {"id": "t-1", "blob": "AAE=", "when": "x"}


def test_outcome_to_dict_carries_request_result_and_error() -> None:
    """An outcome's request, result and error are JSON values."""
    request = qe.EditRequest(
        images=["https://example.com/a.png"], prompt="x", n=2, size="1033*1032"
    )
    error = qe.RateLimitError(
        "slow down", provider="evolink", status=429, code="rate_limit_exceeded", retry_after=2.0
    )
    failed = qe.Outcome(3, request, None, error)
    data = failed.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["index"] == 3 and data["ok"] is False and data["result"] is None
    assert data["request"] == {
        "images": ["https://example.com/a.png"],
        "prompt": "x",
        "n": 2,
        "size": {"width": 1040, "height": 1024},
    }
    assert data["error"] == {
        "type": "RateLimitError",
        "message": "slow down",
        "provider": "evolink",
        "status": 429,
        "code": "rate_limit_exceeded",
        "retry_after": 2.0,
    }
    other = qe.Outcome(0, request, None, RuntimeError("boom")).to_dict()
    assert other["error"] == {"type": "RuntimeError", "message": "boom"}


async def test_outcomes_from_the_fake_serialize_and_never_hold_the_key() -> None:
    """Real outcomes from edit_many (success and failure) dump to JSON without the key."""
    requests = [
        qe.EditRequest(images=["https://example.com/a.png"], prompt="ok"),
        qe.EditRequest(images=["https://example.com/a.png"], prompt="[fail]"),
    ]
    async with (
        FakeProvider(api_key=API_KEY, latency=0.01) as fake,
        qe.QwenEditClient("vtrix", api_key=API_KEY, base_url=fake.url) as client,
    ):
        outcomes = [o async for o in client.edit_many(requests)]
    text = json.dumps([o.to_dict() for o in sorted(outcomes, key=lambda o: o.index)])
    assert API_KEY not in text
    first, second = json.loads(text)
    assert first["ok"] is True and first["result"]["images"][0]["url"].startswith(fake.url)
    assert first["result"]["task_id"]
    assert second["ok"] is False and second["error"]["type"] == "JobFailedError"
    assert second["error"]["task_id"]
