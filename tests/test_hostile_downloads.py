"""Downloads from a hostile provider (real servers on 127.0.0.1): unusable schemes,
link-local and metadata addresses (literal, redirected, resolved), dripping images, and
files that cannot be saved."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import qwen_edit_async as qe
from qwen_edit_async._addresses import forbidden_address
from qwen_edit_async._http import GuardedResolver, forbidden_in
from qwen_edit_async.testing import HostileProvider
from qwen_edit_async.testing._png import png_bytes

pytestmark = pytest.mark.timeout(30)

KEY = "sk-hostile-0123456789abcdef"
URL = "https://example.com/in.png"
PNG_DATA_URI = "data:image/png;base64," + base64.b64encode(png_bytes(8, 8)).decode()


def client(server: HostileProvider, **options: Any) -> qe.QwenEditClient:
    options.setdefault("job_timeout", 10)
    return qe.QwenEditClient("evolink", api_key=KEY, base_url=server.url, **options)


async def _download(server: HostileProvider, dest: Path, **options: Any) -> list[Path]:
    async with client(server, **options) as c:
        result = await c.edit([URL], "x")
        return await c.download(result, dest)


# -- unusable URLs fail at once; link-local and metadata addresses are refused ------


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", PNG_DATA_URI, "javascript:x"]
)
async def test_a_result_url_that_is_not_http_fails_at_once(url: str, tmp_path: Path) -> None:
    """file:, ftp:, data: and other schemes: DownloadError saying so, without retrying."""
    async with HostileProvider(result_urls=[url]) as server:
        started = time.monotonic()
        with pytest.raises(qe.DownloadError, match=r"not an http\(s\) URL") as info:
            await _download(server, tmp_path)
    assert time.monotonic() - started < 5
    assert "after" not in str(info.value)  # not "failed after N attempts"
    assert info.value.task_id is not None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam",
        "http://[fe80::1]/a.png",
        "http://[fd00:ec2::254]/latest",
        "http://[::ffff:169.254.169.254]/x",
    ],
)
async def test_link_local_and_metadata_addresses_are_refused(url: str, tmp_path: Path) -> None:
    """No connection is attempted: DownloadError naming the rule, at once."""
    async with HostileProvider(result_urls=[url]) as server:
        with pytest.raises(qe.DownloadError, match="link-local or cloud-metadata"):
            await _download(server, tmp_path)


async def test_a_redirect_to_a_metadata_address_is_refused(tmp_path: Path) -> None:
    """The provider's own host answers 302 to 169.254.169.254: the hop is refused."""
    async with HostileProvider() as server:
        server.result_urls = [f"{server.url}/redirect?to=http://169.254.169.254/latest"]
        with pytest.raises(qe.DownloadError, match="link-local or cloud-metadata"):
            await _download(server, tmp_path)


async def test_redirects_between_allowed_hosts_are_still_followed(tmp_path: Path) -> None:
    """A redirect to an ordinary URL is followed (downloads follow hops themselves now)."""
    async with HostileProvider() as server:
        server.result_urls = [f"{server.url}/redirect?to=/files/x.png"]
        paths = await _download(server, tmp_path)
    assert paths[0].read_bytes() == png_bytes(64, 64)


class _Static(aiohttp.abc.AbstractResolver):
    """Answers every name with one address (no DNS traffic)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


async def test_a_name_resolving_to_a_metadata_address_is_refused_after_resolution() -> None:
    """The guarded resolver drops 169.254.x answers: the connection fails with the refusal;
    the same name resolving to 127.0.0.1 is fetched."""
    async with HostileProvider() as server:
        port = server.url.rsplit(":", 1)[1]
        for address, refused in (("169.254.169.254", True), ("127.0.0.1", False)):
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(_Static(address)))
            async with aiohttp.ClientSession(connector=connector) as session:
                try:
                    async with session.get(f"http://images.test:{port}/files/a.png") as r:
                        assert not refused and r.status == 200
                except aiohttp.ClientConnectorError as exc:
                    assert refused and forbidden_in(exc) is not None


async def test_the_clients_own_connector_guards_resolution() -> None:
    """The session a client creates resolves names through the guard."""
    async with HostileProvider() as server, client(server) as c:
        connector = c._calls.pipe.session.connector
        assert isinstance(getattr(connector, "_resolver", None), GuardedResolver)
    assert forbidden_address("169.254.0.1") and not forbidden_address("10.0.0.1")


# -- a dripping download ends at its deadline ---------------------------------------


async def test_a_dripping_download_ends_at_download_timeout(tmp_path: Path) -> None:
    """One byte every 0.2 s: DownloadError naming download_timeout after about 0.5 s, once
    (a server that drips would drip again: not retried)."""
    async with HostileProvider(download="drip", drip_interval=0.2) as server:
        started = time.monotonic()
        with pytest.raises(qe.DownloadError, match=r"download_timeout=0\.5"):
            await _download(server, tmp_path, download_timeout=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 4
    assert list(tmp_path.iterdir()) == []


# -- an OSError while saving is a DownloadError, never an ExceptionGroup -------------


async def test_a_file_that_cannot_be_written_is_a_download_error(tmp_path: Path) -> None:
    """The target name is taken by a directory (the rename fails with an OSError): a
    DownloadError for that job, carrying the task id, not an ExceptionGroup."""
    async with HostileProvider(task_id="task-1") as server:
        (tmp_path / "task-1-0.png").mkdir()
        with pytest.raises(qe.DownloadError, match="could not save") as info:
            await _download(server, tmp_path)
    assert info.value.task_id == "task-1"


async def test_a_folder_that_cannot_be_made_is_a_download_error(tmp_path: Path) -> None:
    """``dest`` under a regular file: DownloadError, not a bare OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with HostileProvider() as server:
        with pytest.raises(qe.DownloadError, match="could not create"):
            await _download(server, blocker / "out")
