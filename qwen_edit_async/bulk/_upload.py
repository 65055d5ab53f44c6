"""Uploads for URL-only providers (Evolink) in bulk runs: the ``--upload-url`` endpoint.

An upload endpoint takes an image's bytes in a POST (with its ``Content-Type``) and answers
``{"url": "https://..."}``, a URL the provider can fetch. The fake provider has one
(``FakeProvider.upload_url``); a run is given it like any other, never guesses it.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from .._errors import ConfigurationError
from .._images import image_kind
from .._models import EditRequest

__all__ = ["HttpUploader", "local_inputs"]


class HttpUploader:
    """``await uploader(data, mime) -> url`` by POSTing to ``url``; close with :meth:`aclose`.

    >>> uploader = HttpUploader("http://127.0.0.1:8000/_fake/upload")   # doctest: +SKIP
    >>> await uploader(png_bytes, "image/png")                           # doctest: +SKIP
    'http://127.0.0.1:8000/files/uploads/3f2a.png'
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, data: bytes, mime: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self.url, data=data, headers={"Content-Type": mime}
            ) as response:
                if response.status >= 400:
                    raise ConfigurationError(
                        f"the upload to {self.url} failed with HTTP {response.status}"
                    )
                payload: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, ValueError, RecursionError) as exc:
            raise ConfigurationError(f"the upload to {self.url} failed: {exc}") from exc
        url = payload.get("url") if isinstance(payload, dict) else None
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f'the upload to {self.url} did not answer {{"url": ...}}')
        return url

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def local_inputs(request: EditRequest) -> list[str]:
    """The fields of ``request``'s images that are not public URLs (files, bytes, data)."""
    return [f"images[{i}]" for i, image in enumerate(request.images) if image_kind(image) != "url"]
