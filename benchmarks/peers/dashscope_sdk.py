"""Peer: the official ``dashscope`` SDK, ``AioMultiModalConversation.call``, with its defaults.

Pointed at the fake the way its documentation says: ``dashscope.base_http_api_url``. Jobs
are bounded by an ``asyncio.Semaphore`` and run with ``asyncio.gather``, as a user would.
The SDK keeps one shared aiohttp session per event loop with aiohttp's default connector
(at most 100 connections), which is what this peer measures. DashScope route only.

Spec keys: ``url``, ``jobs``, ``in_flight``, ``record``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dashscope
from dashscope import AioMultiModalConversation

from ._common import IMAGE_URL, MODEL, PROMPT, Meter, main


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    dashscope.base_http_api_url = spec["url"] + "/api/v1"
    record = spec.get("record", True)
    meter = Meter()
    records: list[tuple[str, float]] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(spec["in_flight"])

    async def job() -> None:
        messages = [{"role": "user", "content": [{"image": IMAGE_URL}, {"text": PROMPT}]}]
        try:
            async with sem:
                response: Any = await AioMultiModalConversation.call(
                    model=MODEL, messages=messages, api_key="bench"
                )
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.message}")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        if record:
            records.append((response.request_id, time.time()))

    meter.start()
    await asyncio.gather(*(job() for _ in range(spec["jobs"])))
    measured = meter.stop()
    return {
        **measured,
        "ok": spec["jobs"] - len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "records": records,
    }


if __name__ == "__main__":
    main(run)
