"""The fake's DashScope native dialect, driven with plain aiohttp and the official SDK."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from _wait import until

from qwen_edit_async import testing
from qwen_edit_async.testing import FakeProvider
from qwen_edit_async.testing._png import png_bytes

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

PATH = "/api/v1/services/aigc/multimodal-generation/generation"
AUTH = {"Authorization": "Bearer sk-any"}


def body(
    images: tuple[str, ...] = ("https://example.com/a.png",),
    text: str | None = "make it blue",
    model: str = "qwen-image-edit-plus",
    **params: Any,
) -> dict[str, Any]:
    content: list[dict[str, str]] = [{"image": ref} for ref in images]
    if text is not None:
        content.append({"text": text})
    out: dict[str, Any] = {
        "model": model,
        "input": {"messages": [{"role": "user", "content": content}]},
    }
    if params:
        out["parameters"] = params
    return out


def data_uri(width: int, height: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height)).decode()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def post(
    session: aiohttp.ClientSession, fake: FakeProvider, payload: Any, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with session.post(fake.url + PATH, json=payload, **kw) as resp:
        return resp.status, await resp.json(), resp


def images_of(answer: dict[str, Any]) -> list[str]:
    return [
        item["image"]
        for choice in answer["output"]["choices"]
        for item in choice["message"]["content"]
        if "image" in item
    ]


async def test_success_has_documented_shape_n_images_and_usage(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """A valid edit answers 200 with n images in choices, usage, and a request id."""
    status, answer, resp = await post(
        session, fake_provider, body(n=2, size="1024*1536", seed=7, prompt_extend=False)
    )
    assert status == 200
    urls = images_of(answer)
    assert len(urls) == 2
    assert all(u.startswith(fake_provider.url + "/files/results/") for u in urls)
    assert all("Expires=" in u and "Signature=" in u for u in urls)
    assert answer["output"]["choices"][0]["finish_reason"] == "stop"
    assert answer["output"]["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"] == {"width": 1024, "height": 1536, "image_count": 2}
    assert answer["request_id"] and resp.headers["X-Request-Id"] == answer["request_id"]
    assert fake_provider.stats.jobs_created == 1


async def test_size_is_snapped_to_multiples_of_16_ties_down(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """size 1033*1032 comes back 1040*1024, as the provider documents."""
    status, answer, _ = await post(session, fake_provider, body(size="1033*1032"))
    assert status == 200
    assert (answer["usage"]["width"], answer["usage"]["height"]) == (1040, 1024)
    assert "_1040x1024.png" in images_of(answer)[0]


@pytest.mark.parametrize(
    ("first", "last", "landscape"),
    [((300, 600), (800, 400), True), ((800, 400), (300, 600), False)],
)
async def test_default_size_follows_the_last_image_aspect_ratio(
    fake_provider: FakeProvider,
    session: aiohttp.ClientSession,
    first: tuple[int, int],
    last: tuple[int, int],
    landscape: bool,
) -> None:
    """Without size the output has about 1024*1024 pixels at the LAST image's ratio."""
    status, answer, _ = await post(
        session, fake_provider, body(images=(data_uri(*first), data_uri(*last)))
    )
    assert status == 200
    width, height = answer["usage"]["width"], answer["usage"]["height"]
    assert width % 16 == 0 and height % 16 == 0
    assert math.isclose(width / height, last[0] / last[1], rel_tol=0.03)
    assert (width > height) is landscape
    assert abs(width * height - 1024 * 1024) / (1024 * 1024) < 0.05


async def test_default_size_for_an_unknown_url_is_square(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """A URL the fake cannot inspect counts as 1:1: the output is 1024*1024."""
    status, answer, _ = await post(session, fake_provider, body())
    assert status == 200
    assert (answer["usage"]["width"], answer["usage"]["height"]) == (1024, 1024)


async def test_prompt_over_800_characters_is_truncated_not_refused(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """DashScope keeps 800 characters and silently drops the rest."""
    status, answer, _ = await post(session, fake_provider, body(text="x" * 900))
    assert status == 200
    job = fake_provider.stats.jobs[answer["request_id"]]
    assert len(job.prompt) == 800


def _content(*items: dict[str, str]) -> dict[str, Any]:
    return {
        "model": "qwen-image-edit-plus",
        "input": {"messages": [{"role": "user", "content": list(items)}]},
    }


IMG = {"image": "https://example.com/a.png"}

BAD_REQUESTS = {
    "missing text": (body(text=None), 400, "InvalidParameter"),
    "empty text": (body(text=""), 400, "InvalidParameter"),
    "two texts": (_content(IMG, {"text": "a"}, {"text": "b"}), 400, "InvalidParameter"),
    "no image": (body(images=()), 400, "InvalidParameter"),
    "four images": (body(images=("https://example.com/a.png",) * 4), 400, "InvalidParameter"),
    "n=7": (body(n=7), 400, "InvalidParameter"),
    "n=0": (body(n=0), 400, "InvalidParameter"),
    "n as string": (body(n="2"), 400, "InvalidParameter"),
    "size 4000*4000": (body(size="4000*4000"), 400, "InvalidParameter"),
    "side under 512": (body(size="500*1024"), 400, "InvalidParameter"),
    "size with x": (body(size="1024x1024"), 400, "InvalidParameter"),
    "seed too big": (body(seed=2147483648), 400, "InvalidParameter"),
    "n>1 on qwen-image-edit": (body(model="qwen-image-edit", n=2), 400, "InvalidParameter"),
    "unknown model": (body(model="qwen-image-edit-ultra"), 400, "InvalidParameter"),
    "vtrix model id": (body(model="qwen_image_edit_plus"), 400, "InvalidParameter"),
    "no model": ({"input": body()["input"]}, 400, "BadRequest.EmptyModel"),
    "no input": ({"model": "qwen-image-edit-plus"}, 400, "BadRequest.EmptyInput"),
    "two messages": (
        {"model": "qwen-image-edit-plus", "input": {"messages": body()["input"]["messages"] * 2}},
        400,
        "InvalidParameter",
    ),
    "not a URL": (body(images=("cat.png",)), 400, "InvalidURL"),
    "unresolvable host": (
        body(images=("https://images.example.invalid/a.png",)),
        415,
        "BadRequest.InputDownloadFailed",
    ),
    "not an image": (
        body(images=("data:image/png;base64," + base64.b64encode(b"hello").decode(),)),
        415,
        "BadRequest.UnsupportedFileFormat",
    ),
    "broken base64": (body(images=("data:image/png;base64,@@@",)), 400, "InvalidParameter"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_invalid_requests_answer_flat_dashscope_errors(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, case: str
) -> None:
    """Each documented rule is enforced with DashScope's status, code and flat shape."""
    payload, want_status, want_code = BAD_REQUESTS[case]
    status, answer, resp = await post(session, fake_provider, payload)
    assert status == want_status
    assert set(answer) == {"request_id", "code", "message"}
    assert answer["code"] == want_code
    assert answer["message"]
    assert resp.headers["X-Request-Id"] == answer["request_id"]
    assert fake_provider.stats.jobs_created == 0
    assert fake_provider.stats.rejected == 1


async def test_url_on_the_fake_that_does_not_exist_fails_to_download(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """An input URL on the fake's own host that is not there is an input download failure."""
    missing = fake_provider.url + "/files/uploads/nothing-here.png"
    status, answer, _ = await post(session, fake_provider, body(images=(missing,)))
    assert (status, answer["code"]) == (415, "BadRequest.InputDownloadFailed")


async def test_body_that_is_not_json_is_refused(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Garbage instead of JSON is a 400 InvalidParameter, not a crash."""
    async with session.post(fake_provider.url + PATH, data=b"{nope") as resp:
        answer = await resp.json()
        assert resp.status == 400
    assert answer["code"] == "InvalidParameter"


async def test_wrong_or_missing_key_answers_401_invalid_api_key(
    fake_provider_factory: Any,
) -> None:
    """With api_key set, only that Bearer key is accepted; others get 401 InvalidApiKey."""
    fake = await fake_provider_factory(api_key="sk-right")
    for headers in ({"Authorization": "Bearer sk-wrong"}, {}, {"Authorization": "sk-right"}):
        async with aiohttp.ClientSession(headers=headers) as s:
            status, answer, _ = await post(s, fake, body())
        assert status == 401
        assert answer["code"] == "InvalidApiKey"
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-right"}) as s:
        status, _, _ = await post(s, fake, body())
    assert status == 200
    assert fake.stats.jobs_created == 1


async def test_any_non_empty_key_is_accepted_by_default(fake_provider: FakeProvider) -> None:
    """api_key=None accepts any non-empty Bearer key but still refuses an empty one."""
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer whatever"}) as s:
        assert (await post(s, fake_provider, body()))[0] == 200
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer "}) as s:
        assert (await post(s, fake_provider, body()))[0] == 401


async def test_async_header_is_refused_with_403_access_denied(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """X-DashScope-Async: enable is refused for the sync-only edit models."""
    status, answer, _ = await post(
        session, fake_provider, body(), headers={"X-DashScope-Async": "enable"}
    )
    assert (status, answer["code"]) == (403, "AccessDenied")
    assert fake_provider.stats.jobs_created == 0


async def test_sync_request_is_held_open_for_the_latency(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """The POST answers only after the job's latency, and counts as running meanwhile."""
    fake = await fake_provider_factory(latency=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.ensure_future(post(session, fake, body()))
    await until(lambda: fake.stats.running == 1)
    status, _, _ = await task
    assert status == 200
    assert loop.time() - started >= 0.29
    assert fake.stats.running == 0
    assert fake.stats.peak_running == 1


async def test_official_dashscope_sdk_gets_an_edit_back(fake_provider: FakeProvider) -> None:
    """The dashscope SDK (sync in a thread, and aio) speaks to the fake successfully."""
    dashscope = pytest.importorskip("dashscope")
    saved = dashscope.base_http_api_url
    dashscope.base_http_api_url = fake_provider.url + "/api/v1"
    messages = [
        {"role": "user", "content": [{"image": "https://example.com/a.png"}, {"text": "blue"}]}
    ]
    try:
        response = await asyncio.to_thread(
            dashscope.MultiModalConversation.call,
            api_key="sk-sdk",
            model="qwen-image-edit-plus",
            messages=messages,
            n=2,
            size="1024*1536",
            watermark=False,
        )
        assert response.status_code == 200
        content = response.output.choices[0].message.content
        assert len([c for c in content if "image" in c]) == 2
        assert response.usage["width"] == 1024 and response.usage["height"] == 1536
        assert response.request_id

        refused = await asyncio.to_thread(
            dashscope.MultiModalConversation.call,
            api_key="sk-sdk",
            model="qwen-image-edit-plus",
            messages=[{"role": "user", "content": [{"text": "no image"}]}],
        )
        assert refused.status_code == 400 and refused.code == "InvalidParameter"

        aio = getattr(dashscope, "AioMultiModalConversation", None)
        if aio is not None:
            try:
                response = await aio.call(
                    api_key="sk-sdk", model="qwen-image-edit-plus", messages=messages
                )
            finally:
                await dashscope.close_shared_aio_session()
            assert response.status_code == 200
            assert (
                response.output.choices[0].message.content[0]["image"].startswith(fake_provider.url)
            )
    finally:
        dashscope.base_http_api_url = saved
        dashscope.close_shared_sync_session()
    assert fake_provider.stats.jobs_created == (2 if aio is not None else 1)


async def test_image_over_10_mb_is_413_too_large(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """A data URI holding more than 10 MB answers 413 BadRequest.TooLarge."""
    huge = "data:image/png;base64," + "A" * (14 * 1024 * 1024)
    status, answer, _ = await post(session, fake_provider, body(images=(huge,)))
    assert (status, answer["code"]) == (413, "BadRequest.TooLarge")
