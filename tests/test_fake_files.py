"""The fake's file host: real PNG results, expiring signed URLs, uploads."""

from __future__ import annotations

import io
import math
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import imagesize
import pytest
from _wait import until

from qwen_edit_async import testing
from qwen_edit_async.testing import FakeClock, FakeProvider
from qwen_edit_async.testing._png import png_bytes

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

DASHSCOPE = "/api/v1/services/aigc/multimodal-generation/generation"
AUTH = {"Authorization": "Bearer sk-any"}


def body(image: str = "https://example.com/a.png", **params: Any) -> dict[str, Any]:
    return {
        "model": "qwen-image-edit-plus",
        "input": {"messages": [{"role": "user", "content": [{"image": image}, {"text": "x"}]}]},
        "parameters": params,
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def edit(session: aiohttp.ClientSession, fake: FakeProvider, **params: Any) -> list[str]:
    image = params.pop("image", "https://example.com/a.png")
    async with session.post(fake.url + DASHSCOPE, json=body(image, **params)) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    return [c["image"] for c in answer["output"]["choices"][0]["message"]["content"]]


def decode_png(data: bytes) -> tuple[int, int]:
    """Check a PNG's structure end to end (signature, CRCs, pixel data); return its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks.append(kind)
        if kind == b"IDAT":
            idat += payload
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + 3 * width)
    return width, height


async def test_downloaded_result_is_a_valid_png_of_the_stated_size(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Each result URL serves a real PNG whose dimensions match the answer's usage."""
    urls = await edit(session, fake_provider, n=2, size="1033*1032")
    for url in urls:
        async with session.get(url) as resp:
            assert resp.status == 200
            assert resp.content_type == "image/png"
            data = await resp.read()
        assert imagesize.get(io.BytesIO(data)) == (1040, 1024)
        assert decode_png(data) == (1040, 1024)
    assert fake_provider.stats.downloads == 2


async def test_result_content_is_deterministic(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """The same URL gives the same bytes on every download."""
    (url,) = await edit(session, fake_provider, size="512*512")
    first = await (await session.get(url)).read()
    second = await (await session.get(url)).read()
    assert first == second


async def test_result_url_answers_403_after_it_expires(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """The URL works until Expires (completion + url_lifetime, rounded up), then answers
    OSS 403; the fake's clock is moved past it instead of waiting."""
    fake = await fake_provider_factory(url_lifetime=60)
    (url,) = await edit(session, fake, size="512*512")
    expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
    assert expires <= time.time() + 61.1
    fake.clock.advance(expires - fake.clock.time() - 1)  # a second before: still valid
    async with session.get(url) as resp:
        assert resp.status == 200
    fake.clock.advance(2)
    async with session.get(url) as resp:
        assert resp.status == 403
        text = await resp.text()
    assert "<Code>AccessDenied</Code>" in text and "expired" in text
    assert fake.stats.downloads == 1


async def test_tampered_expiry_is_refused(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Changing Expires breaks the signature: 403 SignatureDoesNotMatch; no query: 403."""
    (url,) = await edit(session, fake_provider)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    forged = url.replace(
        f"Expires={query['Expires'][0]}", f"Expires={int(query['Expires'][0]) + 99}"
    )
    async with session.get(forged) as resp:
        assert resp.status == 403
        assert "SignatureDoesNotMatch" in await resp.text()
    async with session.get(url.split("?")[0]) as resp:
        assert resp.status == 403
    async with session.get(fake_provider.url + "/files/results/not-a-result.txt") as resp:
        assert resp.status == 404


async def test_upload_route_and_uploader_serve_the_bytes_back(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """POST /_fake/upload and fake.uploader return URLs on the fake serving the same bytes."""
    data = png_bytes(640, 480, 3)
    async with session.post(
        fake_provider.url + "/_fake/upload", data=data, headers={"Content-Type": "image/png"}
    ) as resp:
        assert resp.status == 200
        url = (await resp.json())["url"]
    assert url.startswith(fake_provider.url + "/files/uploads/") and url.endswith(".png")
    via_helper = await fake_provider.uploader(b"\xff\xd8\xff fake jpeg", "image/jpeg")
    assert via_helper.endswith(".jpg") and via_helper != url
    async with session.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == data
    assert fake_provider.stats.uploads == 2


async def test_uploaded_image_sets_output_ratio_and_bad_uploads_are_refused(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """An uploaded 4:3 image gives a 4:3 output; an uploaded non-image is unsupported."""
    url = await fake_provider.uploader(png_bytes(640, 480), "image/png")
    (result,) = await edit(session, fake_provider, image=url)
    assert "_1184x880.png" in result
    junk = await fake_provider.uploader(b"not an image", "image/png")
    async with session.post(fake_provider.url + DASHSCOPE, json=body(junk)) as resp:
        assert resp.status == 415
        assert (await resp.json())["code"] == "BadRequest.UnsupportedFileFormat"


async def test_result_url_can_be_used_as_input_until_it_expires(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """A fake result URL is a valid input with its known size; once expired it fails."""
    fake = await fake_provider_factory(url_lifetime=60)
    (previous,) = await edit(session, fake, size="2048*1024")
    (chained,) = await edit(session, fake, image=previous)
    assert "_1440x720.png" in chained
    fake.clock.advance(61)
    async with session.post(fake.url + DASHSCOPE, json=body(previous)) as resp:
        assert resp.status == 415
        assert (await resp.json())["code"] == "BadRequest.InputDownloadFailed"


async def test_empty_upload_is_refused(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """An upload with no bytes answers 400."""
    async with session.post(fake_provider.url + "/_fake/upload", data=b"") as resp:
        assert resp.status == 400


async def test_task_result_urls_expire_relative_to_completion(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Evolink result URLs are signed at completion: Expires = completed_at + url_lifetime."""
    fake = await fake_provider_factory(latency=0.05, url_lifetime=120)
    payload = {
        "model": "qwen-image-edit-plus",
        "prompt": "p",
        "image_urls": ["https://e.com/a.png"],
    }
    async with session.post(fake.url + "/v1/images/generations", json=payload) as resp:
        task_id = (await resp.json())["id"]
    await until(lambda: fake.stats.jobs[task_id].completed_at is not None)
    async with session.get(f"{fake.url}/v1/tasks/{task_id}") as resp:
        (url,) = (await resp.json())["results"]
    expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
    assert expires == math.ceil(fake.stats.jobs[task_id].completed_at + 120)


def test_the_fake_clock_moves_forward_only() -> None:
    """advance() takes a finite number of seconds >= 0 and says which rule a value broke."""
    clock = FakeClock()
    for bad in (-1, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match=r"seconds: .*must be a finite number >= 0"):
            clock.advance(bad)  # type: ignore[arg-type]
    clock.advance(0)
    clock.advance(30)
    assert clock.skipped == 30 and clock.time() - time.time() >= 29.9


async def test_the_clock_route_moves_the_fakes_clock_past_a_urls_expiry(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """POST /_fake/clock {"advance": s}: what the fake in another process offers for the
    same; a negative or missing advance is a 400 naming the field."""
    fake = await fake_provider_factory(url_lifetime=60)
    (url,) = await edit(session, fake, size="512*512")
    for bad in ({"advance": -1}, {}, {"advance": "soon"}):
        async with session.post(fake.url + "/_fake/clock", json=bad) as resp:
            assert resp.status == 400 and "advance" in (await resp.json())["error"]
    async with session.get(url) as resp:
        assert resp.status == 200
    async with session.post(fake.url + "/_fake/clock", json={"advance": 62}) as resp:
        assert (resp.status, await resp.json()) == (200, {"skipped": 62.0})
    async with session.get(url) as resp:
        assert resp.status == 403
