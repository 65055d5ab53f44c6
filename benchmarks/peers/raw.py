"""Peer: a minimal raw aiohttp loop, this machine's floor for a Python asyncio client.

``in_flight`` coroutines share one session (connector sized to them); each takes the next
job number and POSTs a pre-encoded DashScope body, reads the answer and decodes its JSON,
until the jobs run out. No semaphore, no task per job, no retries, no parsing beyond
``json.loads``: nothing a real client could leave out and still be correct is left in.

Spec keys: ``url``, ``jobs``, ``in_flight``, ``record``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from ._common import IMAGE_URL, MODEL, PROMPT, Meter, main

DASHSCOPE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
BODY = json.dumps(
    {
        "model": MODEL,
        "input": {
            "messages": [{"role": "user", "content": [{"image": IMAGE_URL}, {"text": PROMPT}]}]
        },
    }
).encode()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url = spec["url"] + DASHSCOPE_PATH
    record = spec.get("record", True)
    jobs = spec["jobs"]
    meter = Meter()
    records: list[tuple[str, float]] = []
    errors: list[str] = []
    next_job = 0
    connector = aiohttp.TCPConnector(limit=spec["in_flight"])

    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def worker() -> None:
            nonlocal next_job
            while next_job < jobs:
                next_job += 1
                try:
                    async with session.post(url, data=BODY) as resp:
                        data = json.loads(await resp.read())
                        if resp.status != 200:
                            raise RuntimeError(f"HTTP {resp.status}: {data}")
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if record:
                    records.append((data["request_id"], time.time()))

        meter.start()
        await asyncio.gather(*(worker() for _ in range(min(spec["in_flight"], jobs))))
        measured = meter.stop()
    return {
        **measured,
        "ok": jobs - len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "records": records,
    }


if __name__ == "__main__":
    main(run)
