"""The OpenAI-shaped gateways: ModelStream (/v1/images/generations) and OneToken (/edits)."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import imagesize
import pytest

from qwen_edit_async import testing
from qwen_edit_async.testing import FakeProvider

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

PATHS = {"modelstream": "/v1/images/generations", "onetoken": "/v1/images/edits"}
AUTH = {"Authorization": "Bearer sk-any"}


def body(text: str | None = "make it blue", n: int | None = None, **params: Any) -> dict[str, Any]:
    content: list[dict[str, str]] = [{"image": "https://example.com/a.png"}]
    if text is not None:
        content.append({"text": text})
    if n is not None:
        params["n"] = n
    return {
        "model": params.pop("model", "qwen-image-edit-plus"),
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": params,
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def post(
    session: aiohttp.ClientSession, fake: FakeProvider, dialect: str, payload: Any
) -> tuple[int, Any]:
    async with session.post(fake.url + PATHS[dialect], json=payload) as resp:
        assert resp.headers.get("X-Request-Id")
        return resp.status, await resp.json()


@pytest.mark.parametrize("dialect", sorted(PATHS))
async def test_success_is_openai_shaped_with_n_urls(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """A nested body answers {created, data: [{url, b64_json, revised_prompt}] * n}."""
    status, answer = await post(session, fake_provider, dialect, body(n=3, size="1536*1024"))
    assert status == 200
    assert isinstance(answer["created"], int)
    assert len(answer["data"]) == 3
    for item in answer["data"]:
        assert set(item) == {"url", "b64_json", "revised_prompt"}
        assert item["url"].startswith(fake_provider.url + "/files/results/")
        assert "_1536x1024.png" in item["url"]
        assert item["b64_json"] is None
        assert "make it blue" in item["revised_prompt"]
    assert fake_provider.stats.jobs_created == 1


@pytest.mark.parametrize("dialect", sorted(PATHS))
async def test_revised_prompt_is_null_without_prompt_extend(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """revised_prompt is only a rewrite when prompt_extend is on."""
    status, answer = await post(session, fake_provider, dialect, body(prompt_extend=False))
    assert status == 200
    assert answer["data"][0]["revised_prompt"] is None


@pytest.mark.parametrize("dialect", sorted(PATHS))
async def test_b64_json_mode_returns_inline_png(
    fake_provider_factory: Any, session: aiohttp.ClientSession, dialect: str
) -> None:
    """With b64_json=True the gateways put the PNG inline and leave url null."""
    fake = await fake_provider_factory(b64_json=True)
    status, answer = await post(session, fake, dialect, body(size="512*768"))
    assert status == 200
    item = answer["data"][0]
    assert item["url"] is None
    raw = base64.b64decode(item["b64_json"])
    assert raw.startswith(b"\x89PNG")
    assert imagesize.get(io.BytesIO(raw)) == (512, 768)


ERRORS = {
    "two texts": (
        {
            "model": "qwen-image-edit-plus",
            "input": {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"image": "https://example.com/a.png"},
                            {"text": "a"},
                            {"text": "b"},
                        ],
                    }
                ]
            },
        },
        400,
        "InvalidParameter",
    ),
    "missing text": (body(text=None), 400, "InvalidParameter"),
    "n=7": (body(n=7), 400, "InvalidParameter"),
    "bad size": (body(size="4000*4000"), 400, "InvalidParameter"),
    "unknown model": (body(model="gpt-image-1"), 400, "model_not_found"),
}


@pytest.mark.parametrize("dialect", sorted(PATHS))
@pytest.mark.parametrize("case", sorted(ERRORS))
async def test_errors_use_the_openai_error_object(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str, case: str
) -> None:
    """Refusals are {"error": {message, type, param, code}} with DashScope codes relayed."""
    payload, want_status, want_code = ERRORS[case]
    status, answer = await post(session, fake_provider, dialect, payload)
    assert status == want_status
    assert set(answer) == {"error"}
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == want_code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert fake_provider.stats.jobs_created == 0


@pytest.mark.parametrize("dialect", sorted(PATHS))
async def test_bad_key_is_401_authentication_error(
    fake_provider_factory: Any, dialect: str
) -> None:
    """A wrong key gets 401 with the gateway's own invalid_api_key code."""
    fake = await fake_provider_factory(api_key="sk-right")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer nope"}) as s:
        status, answer = await post(s, fake, dialect, body())
    assert status == 401
    assert answer["error"]["code"] == "invalid_api_key"
    assert answer["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("dialect", sorted(PATHS))
async def test_content_filter_is_refused_at_submission_unbilled(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """Moderation on a sync gateway is a 400 DataInspectionFailed; no job is created."""
    status, answer = await post(session, fake_provider, dialect, body(text="a cat [filter]"))
    assert status == 400
    assert answer["error"]["code"] == "DataInspectionFailed"
    assert fake_provider.stats.jobs_created == 0


async def test_modelstream_path_with_nested_body_is_not_taken_as_evolink(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """The shared /v1/images/generations path dispatches a nested body to ModelStream."""
    status, answer = await post(session, fake_provider, "modelstream", body())
    assert status == 200
    assert "data" in answer and "status" not in answer
    (job,) = fake_provider.stats.jobs.values()
    assert job.dialect == "modelstream"
