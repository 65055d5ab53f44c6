"""The bulk run's uploader against the fake's upload endpoint, named explicitly."""

from __future__ import annotations

import aiohttp
import pytest

from qwen_edit_async import ConfigurationError
from qwen_edit_async.bulk._upload import HttpUploader
from qwen_edit_async.testing import FakeProvider, png_bytes


async def test_the_fake_names_its_upload_endpoint_and_the_uploader_uses_it() -> None:
    """``FakeProvider.upload_url`` is what ``--upload-url`` takes: the bytes posted there
    come back from the URL it answers."""
    data = png_bytes(32, 16, 3)
    async with FakeProvider(latency=0) as fake:
        assert fake.upload_url == f"{fake.url}/_fake/upload"
        uploader = HttpUploader(fake.upload_url)
        try:
            url = await uploader(data, "image/png")
        finally:
            await uploader.aclose()
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert await response.read() == data
        assert fake.stats.uploads == 1


async def test_an_upload_endpoint_that_refuses_is_a_configuration_error() -> None:
    """A 4xx from the endpoint names the URL and the status."""
    async with FakeProvider(latency=0) as fake:
        uploader = HttpUploader(f"{fake.url}/_fake/no-such-route")
        try:
            with pytest.raises(ConfigurationError, match="failed with HTTP 40"):
                await uploader(b"not used", "image/png")
        finally:
            await uploader.aclose()


async def test_an_upload_endpoint_that_cannot_be_reached_is_a_configuration_error() -> None:
    """Nothing listens there: a ConfigurationError naming the URL, not a raw socket error."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uploader = HttpUploader(f"http://127.0.0.1:{port}/upload")
    try:
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}/upload failed: could not"):
            await uploader(b"x", "image/png")
    finally:
        await uploader.aclose()
