"""One answer per question: which image format bytes are, what an http(s) URL is, how a file
is replaced atomically; and defaults that agree with ``ClientConfig``."""

from __future__ import annotations

import base64
import pathlib

import pytest
from _imagegen import make_image
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._config import ClientConfig
from qwen_edit_async._images import EXTENSIONS, image_format, sniff
from qwen_edit_async._prepare import ImagePreparer
from qwen_edit_async.testing import FakeProvider

SCHEME_SPELLINGS = (
    '("http://", "https://")',
    '("https://", "http://")',
    '("http", "https")',
    '("https", "http")',
)
FORMATS = ["png", "jpeg", "gif", "webp", "bmp", "tiff"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_inputs_and_downloads_read_the_same_magic_bytes(
    fmt: str, fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Every format an input may have is also recognised in a result and saved under its own
    extension (a TIFF result was refused before: the downloader had a shorter table)."""
    data = make_image(fmt, 400, 400)
    info = sniff(data)
    assert info is not None and info.format == fmt == image_format(data)
    result = qe.EditResult(
        images=[qe.GeneratedImage(b64_json=base64.b64encode(data).decode())], provider="x"
    )
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        (path,) = await client.download(result, tmp_path, stem="r")
    assert path.name == "r-0" + EXTENSIONS[fmt]
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    "data",
    [
        b"BM, said the text file" + b"\x00" * 40,
        b"GIF8 and then nothing",
        b"RIFF\x00\x00\x00\x00WAVE",
    ],
    ids=["BM", "GIF8", "RIFF-WAVE"],
)
async def test_bytes_that_only_look_like_an_image_are_refused_as_a_result(
    data: bytes, fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Text starting with "BM" or "GIF8" is not saved as an image (the downloader used to
    accept any of them)."""
    assert image_format(data) is None
    result = qe.EditResult(
        images=[qe.GeneratedImage(b64_json=base64.b64encode(data).decode())], provider="x"
    )
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        with pytest.raises(qe.DownloadError, match="not a known image format"):
            await client.download(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_image_cache_bound_defaults_to_the_client_configs() -> None:
    """A preparer made without a bound keeps what ClientConfig promises (64 MiB), not more."""
    preparer = ImagePreparer(accepts_data_uri=True)
    assert preparer._cache_bytes == ClientConfig().image_cache_bytes == 64 * 2**20


async def test_an_upper_case_scheme_is_a_url_everywhere(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """``HTTP://`` is the same scheme as ``http://`` (RFC 3986) for the base URL, an image
    input, the fake's check of it and the result's download: one test answers all four."""
    base_url = "HTTP://" + fake.url.removeprefix("http://")
    async with qe.QwenEditClient("evolink", api_key=API_KEY, base_url=base_url) as client:
        result = await client.edit(["HTTPS://example.com/a.png"], "x")
        (path,) = await client.download(result, tmp_path, stem="r")
    assert path.name == "r-0.png" and image_format(path.read_bytes()) == "png"


def test_only_one_module_spells_out_the_http_schemes() -> None:
    """Every "is this an http(s) URL" question goes through ``_urls.is_http_url``."""
    package = pathlib.Path(qe.__file__).parent
    spelled = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "_urls.py"
        and any(
            pattern in path.read_text(encoding="utf-8")
            for pattern in SCHEME_SPELLINGS
        )
    ]
    assert spelled == []
