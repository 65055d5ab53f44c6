"""The fake's file host: signed, expiring result URLs and uploaded input images.

Result URLs carry everything needed to serve them (job id, index, size) plus an OSS-style
``Expires`` (unix seconds) and a ``Signature`` over both, so serving one needs no lookup and
the PNG is built only when somebody downloads it.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from urllib.parse import urlsplit

import imagesize

from ._clock import FakeClock
from ._jobs import Job
from ._problems import Problem

__all__ = ["FileStore", "ResultRef"]

RESULTS_PREFIX = "/files/results/"
UPLOADS_PREFIX = "/files/uploads/"
_RESULT_NAME = re.compile(r"([A-Za-z0-9\-]+)_(\d+)_(\d+)x(\d+)\.png")
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ResultRef:
    """A parsed result file name: which job image, and its size."""

    __slots__ = ("height", "index", "job_id", "name", "width")

    def __init__(self, name: str, job_id: str, index: int, width: int, height: int) -> None:
        self.name = name
        self.job_id = job_id
        self.index = index
        self.width = width
        self.height = height


class FileStore:
    """Signs result URLs, checks them, and keeps uploaded files in memory."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        #: Where "now" comes from when a URL's expiry is checked.
        self.clock = clock if clock is not None else FakeClock()
        self._secret = os.urandom(16)
        self._uploads: dict[str, tuple[bytes, str, tuple[int, int]]] = {}
        self._upload_serial = 0
        self.base_url = ""
        self.host = "127.0.0.1"
        self.port = 0

    def clear_uploads(self) -> None:
        self._uploads.clear()

    # -- results -----------------------------------------------------------------------

    def _signature(self, name: str, expires: int) -> str:
        digest = hashlib.blake2b(f"{name}\n{expires}".encode(), key=self._secret, digest_size=10)
        return digest.hexdigest()

    def result_urls(self, job: Job, finished_at: float, lifetime: float) -> list[str]:
        """Signed URLs of ``job``'s images, valid until ``finished_at + lifetime``."""
        expires = math.ceil(finished_at + lifetime)
        urls = []
        for i in range(job.n):
            name = f"{job.id}_{i}_{job.width}x{job.height}.png"
            urls.append(
                f"{self.base_url}{RESULTS_PREFIX}{name}"
                f"?Expires={expires}&Signature={self._signature(name, expires)}"
            )
        return urls

    def check_result(self, name: str, expires: str | None, signature: str | None) -> ResultRef:
        """Validate a result file request; raises ``PermissionError`` with an OSS code."""
        match = _RESULT_NAME.fullmatch(name)
        if match is None:
            raise FileNotFoundError(name)
        if expires is None or signature is None or not expires.isdigit():
            raise PermissionError("AccessDenied", "Request is missing Expires or Signature.")
        if signature != self._signature(name, int(expires)):
            raise PermissionError(
                "SignatureDoesNotMatch", "The request signature we calculated does not match."
            )
        if self.clock.time() > int(expires):
            raise PermissionError("AccessDenied", "Request has expired.")
        return ResultRef(
            name, match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
        )

    # -- uploads -----------------------------------------------------------------------

    def add_upload(self, data: bytes, mime: str) -> str:
        """Keep ``data``; return its URL on the fake."""
        self._upload_serial += 1
        ext = _EXTENSIONS.get(mime.split(";")[0].strip().lower(), "bin")
        name = f"{self._upload_serial:06d}-{os.urandom(4).hex()}.{ext}"
        width, height = imagesize.get(io.BytesIO(data))
        self._uploads[name] = (data, mime, (int(width), int(height)))
        return f"{self.base_url}{UPLOADS_PREFIX}{name}"

    def get_upload(self, name: str) -> tuple[bytes, str] | None:
        entry = self._uploads.get(name)
        return None if entry is None else (entry[0], entry[1])

    # -- input image URLs --------------------------------------------------------------

    def lookup(self, url: str) -> tuple[int, int] | None:
        """Dimensions of an input image URL as the provider would fetch it.

        URLs on this fake are checked for real (unknown upload, bad signature, expired
        result: download fails); hosts ending in ``.invalid`` never resolve; any other URL
        is assumed fetchable with unknown (1:1) dimensions. Nothing is fetched.
        """
        try:
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            raise Problem("bad_url", f"{url[:60]!r} is not a valid URL", param="image") from None
        if not host:
            raise Problem("bad_url", f"{url[:60]!r} is not a valid URL", param="image")
        if host.endswith(".invalid"):
            raise Problem(
                "download_failed", f"Failed to download the image from {url[:80]}", param="image"
            )
        if port != self.port or host not in (_LOCAL_HOSTS | {self.host}):
            return None
        failed = Problem(
            "download_failed", f"Failed to download the image from {url[:80]}", param="image"
        )
        path = parts.path
        if path.startswith(UPLOADS_PREFIX):
            entry = self._uploads.get(path[len(UPLOADS_PREFIX) :])
            if entry is None:
                raise failed
            dims = entry[2]
            if dims[0] <= 0 or dims[1] <= 0:
                raise Problem(
                    "unsupported_format", "the image format is not supported", param="image"
                )
            return dims
        if path.startswith(RESULTS_PREFIX):
            query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
            try:
                ref = self.check_result(
                    path[len(RESULTS_PREFIX) :], query.get("Expires"), query.get("Signature")
                )
            except (PermissionError, FileNotFoundError):
                raise failed from None
            return ref.width, ref.height
        raise failed
