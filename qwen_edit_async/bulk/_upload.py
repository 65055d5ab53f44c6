"""Uploads for URL-only providers (Evolink) in bulk runs: the ``--upload-url`` endpoint.

An upload endpoint takes an image's bytes in a POST (with its ``Content-Type``) and answers
``{"url": "https://..."}``, a URL the provider can fetch. The fake provider has one
(``FakeProvider.upload_url``); a run is given it like any other, never guesses it.
"""

from __future__ import annotations

import json
from typing import Any

from .._errors import ConfigurationError
from .._http import HttpPipe, Lost, NotSent
from .._images import image_kind
from .._models import EditRequest
from ..providers._base import HttpRequest

__all__ = ["HttpUploader", "local_inputs"]

#: The longest silence while an upload's answer is read, and the largest answer read.
_READ_TIMEOUT = 60.0
_ANSWER_CAP = 64 * 1024


class HttpUploader:
    """``await uploader(data, mime) -> url`` by POSTing to ``url``; close with :meth:`aclose`.

    >>> uploader = HttpUploader("http://127.0.0.1:8000/_fake/upload")   # doctest: +SKIP
    >>> await uploader(png_bytes, "image/png")                           # doctest: +SKIP
    'http://127.0.0.1:8000/files/uploads/3f2a.png'
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._pipe: HttpPipe | None = None

    async def __call__(self, data: bytes, mime: str) -> str:
        if self._pipe is None:
            self._pipe = HttpPipe(connect_timeout=10.0)
            await self._pipe.open()
        request = HttpRequest("POST", self.url, data, {"Content-Type": mime})
        try:
            answer = await self._pipe.send(request, read_timeout=_READ_TIMEOUT, cap=_ANSWER_CAP)
        except (NotSent, Lost) as exc:
            raise ConfigurationError(f"the upload to {self.url} failed: {exc}") from exc
        if answer.status >= 400:
            raise ConfigurationError(f"the upload to {self.url} failed with HTTP {answer.status}")
        try:
            payload: Any = json.loads(answer.body)
        except (ValueError, RecursionError) as exc:
            raise ConfigurationError(f"the upload to {self.url} failed: {exc}") from exc
        url = payload.get("url") if isinstance(payload, dict) else None
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f'the upload to {self.url} did not answer {{"url": ...}}')
        return url

    async def aclose(self) -> None:
        if self._pipe is not None:
            await self._pipe.aclose()
            self._pipe = None


def local_inputs(request: EditRequest) -> list[str]:
    """The fields of ``request``'s images that are not public URLs (files, bytes, data)."""
    return [f"images[{i}]" for i, image in enumerate(request.images) if image_kind(image) != "url"]
