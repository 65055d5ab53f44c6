"""Peer: one request with three large local images, encoded by the library or by hand.

Modes (spec ``mode``), each in its own process so each peak RSS is its own:

- ``b64``: read the files and ``base64.b64encode`` each: the floor any client pays.
- ``library``: what the library does to produce the body: ``EditRequest`` validation
  (header reads), ``ImagePreparer.prepare_parts`` (header checks; the files stay on disk),
  the provider's ``build_create`` (the JSON around placeholders), and every chunk of the
  streamed body produced as the transport would send it (read and base64 in worker
  threads); then, in the same process, ``b64`` again so the two times are compared under
  the same conditions.
- ``edit``: ``client.edit`` end to end against the fake (latency 0): encode, send ~40 MB,
  wait for the answer.

The peak is measured on the first pass; the times are the best of ``repeat`` passes.
Spec keys: ``mode``, ``paths``, ``url`` (``edit``), ``repeat``.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import qwen_edit_async as qe
from qwen_edit_async._body import split_body
from qwen_edit_async._prepare import ImagePreparer
from qwen_edit_async.providers import get_provider

from ._common import PROMPT, Meter, main


def _b64_pass(paths: list[str]) -> tuple[float, float, int]:
    """(read seconds, encode seconds, encoded bytes) of reading and encoding ``paths``."""
    t0 = time.perf_counter()
    blobs = []
    for path in paths:
        with open(path, "rb") as fh:
            blobs.append(fh.read())
    t1 = time.perf_counter()
    encoded = [base64.b64encode(blob) for blob in blobs]
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, sum(map(len, encoded))


async def _library_pass(paths: list[str]) -> dict[str, float]:
    provider = get_provider("dashscope", base_url="http://127.0.0.1:9")
    t0 = time.perf_counter()
    request = qe.EditRequest(images=paths, prompt=PROMPT)
    t1 = time.perf_counter()
    images, sources = await ImagePreparer(accepts_data_uri=True).prepare_parts(request.images)
    http = provider.build_create(request, images)
    assert http.body is not None
    body = split_body(http.body, sources)
    assert body is not None
    t2 = time.perf_counter()
    produced = 0
    async for chunk in body.chunks():  # what the transport writes, chunk by chunk
        produced += len(chunk)
    t3 = time.perf_counter()
    assert produced == body.length
    return {
        "validate_s": t1 - t0,
        "prepare_s": t2 - t1,
        "build_s": t3 - t2,
        "encode_s": t3 - t0,
        "body_bytes": produced,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    paths: list[str] = spec["paths"]
    repeat = spec.get("repeat", 3)
    input_bytes = sum(os.path.getsize(p) for p in paths)
    meter = Meter()
    out: dict[str, Any] = {"input_bytes": input_bytes}
    meter.start()
    if spec["mode"] == "b64":
        passes = [_b64_pass(paths) for _ in range(repeat)]
        out.update(meter.stop())
        out["read_s"] = min(p[0] for p in passes)
        out["b64_s"] = min(p[1] for p in passes)
        out["encoded_bytes"] = passes[0][2]
    elif spec["mode"] == "library":
        library = [await _library_pass(paths) for _ in range(repeat)]
        out.update(meter.stop())  # the peak is the library's alone
        for key in ("validate_s", "prepare_s", "build_s", "encode_s"):
            out[key] = min(p[key] for p in library)
        out["body_bytes"] = library[0]["body_bytes"]
        b64 = [_b64_pass(paths) for _ in range(repeat)]
        out["read_s"] = min(p[0] for p in b64)
        out["b64_s"] = min(p[1] for p in b64)
    elif spec["mode"] == "edit":
        times = []
        for _ in range(repeat):
            # A fresh client each time: its preparer would otherwise serve the cached URIs.
            async with qe.QwenEditClient(
                "dashscope", api_key="bench", base_url=spec["url"], job_timeout=None
            ) as client:
                t0 = time.perf_counter()
                await client.edit(paths, PROMPT)
                times.append(time.perf_counter() - t0)
        out.update(meter.stop())
        out["edit_s"] = min(times)
    else:
        raise ValueError(f"unknown mode {spec['mode']!r}")
    out["ok"], out["errors"] = 1, 0
    return out


if __name__ == "__main__":
    main(run)
