"""client.download: atomic files, names that stay in their folder, caps, expired URLs."""

from __future__ import annotations

import base64
import pathlib

import imagesize
import pytest
from _imagegen import make_image
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


async def test_download_writes_valid_pngs_of_the_result_size(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Each image becomes <stem>-<k>.png with the dimensions the provider reported; no
    temporary files are left behind."""
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        result = await client.edit([URL], "x", n=2, size="1024*768")
        paths = await client.download(result, tmp_path / "out", stem="job 1/../x")
    assert [p.name for p in paths] == ["job_1_.._x-0.png", "job_1_.._x-1.png"]
    assert all(p.parent == tmp_path / "out" for p in paths)
    assert [imagesize.get(p) for p in paths] == [(1024, 768), (1024, 768)]
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


async def test_default_stem_is_the_task_id_and_empty_stem_gives_numbers(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Without a stem, files are named after the task; stem="" gives 0.png, 1.png."""
    async with qe.QwenEditClient(
        "vtrix", api_key=API_KEY, base_url=fake.url, poll_initial=0.05
    ) as client:
        result = await client.edit([URL], "x")
        named = await client.download(result, tmp_path / "a")
        numbered = await client.download(result, tmp_path / "b", stem="")
    assert named[0].name == f"{result.task_id}-0.png"
    assert numbered[0].name == "0.png"


async def test_an_expired_url_is_a_download_error_saying_so(tmp_path: pathlib.Path) -> None:
    """Once the signed URL has expired the download fails with DownloadError naming why."""
    async with FakeProvider(api_key=API_KEY, latency=0.0, url_lifetime=60) as fake:
        client = qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url)
        async with client:
            result = await client.edit([URL], "x")
            fake.clock.advance(120)  # past Expires for the fake, not yet for this machine
            with pytest.raises(qe.DownloadError, match="expired") as info:
                await client.download(result, tmp_path)
    assert info.value.status == 403
    assert list(tmp_path.iterdir()) == []


async def test_the_size_cap_stops_a_large_download(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """An image larger than download_max_bytes is refused and nothing is written."""
    async with qe.QwenEditClient(
        "dashscope", api_key=API_KEY, base_url=fake.url, download_max_bytes=100
    ) as client:
        result = await client.edit([URL], "x")
        with pytest.raises(qe.DownloadError, match="download_max_bytes"):
            await client.download(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_b64_results_are_decoded_and_non_images_refused(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """b64_json images are written from their bytes; bytes that are no image are refused."""
    data = make_image("png", 400, 400)
    good = qe.EditResult(
        images=[qe.GeneratedImage(b64_json=base64.b64encode(data).decode())], provider="x"
    )
    bad = qe.EditResult(images=[qe.GeneratedImage(b64_json="aGVsbG8=")], provider="x")
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        (path,) = await client.download(good, tmp_path, stem="b64")
        with pytest.raises(qe.DownloadError, match="not a known image"):
            await client.download(bad, tmp_path / "bad")
    assert path.read_bytes() == data


async def test_saved_images_follow_the_umask(fake: FakeProvider, tmp_path: pathlib.Path) -> None:
    """Files are not left owner-only (as a bare temporary file would be): mode is 0666 & ~umask."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        result = await client.edit([URL], "x")
        (path,) = await client.download(result, tmp_path)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
