"""Peer: the hand-written pattern most users write today.

One ``aiohttp.ClientSession`` (its connector sized for the concurrency, as a careful user
does), an ``asyncio.Semaphore``, and ``asyncio.gather`` over every job. Sync dialect
(DashScope): each job holds one POST open until the answer. Task dialect (Evolink): each job
creates its task, then asks for its status at once and every 1.0 s until it ends.

Spec keys: ``url``, ``provider`` (``dashscope`` or ``evolink``), ``jobs``, ``in_flight``,
``record``, ``poll_interval`` (1.0).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from ._common import IMAGE_URL, MODEL, PROMPT, Meter, main

DASHSCOPE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
HEADERS = {"Authorization": "Bearer bench"}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    base, provider = spec["url"], spec["provider"]
    interval = spec.get("poll_interval", 1.0)
    record = spec.get("record", True)
    meter = Meter()
    records: list[tuple[str, float]] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(spec["in_flight"])
    connector = aiohttp.TCPConnector(limit=spec["in_flight"])

    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def sync_job() -> None:
            body = {
                "model": MODEL,
                "input": {
                    "messages": [
                        {"role": "user", "content": [{"image": IMAGE_URL}, {"text": PROMPT}]}
                    ]
                },
            }
            async with sem, session.post(base + DASHSCOPE_PATH, json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data}")
            if record:
                records.append((data["request_id"], time.time()))

        async def task_job() -> None:
            body = {"model": MODEL, "prompt": PROMPT, "image_urls": [IMAGE_URL]}
            async with sem:
                async with session.post(base + "/v1/images/generations", json=body) as resp:
                    task = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {task}")
                task_id = task["id"]
                while True:
                    async with session.get(f"{base}/v1/tasks/{task_id}") as resp:
                        status = await resp.json()
                    if status["status"] == "completed":
                        break
                    if status["status"] == "failed":
                        raise RuntimeError(f"task failed: {status}")
                    await asyncio.sleep(interval)
            if record:
                records.append((task_id, time.time()))

        job = sync_job if provider == "dashscope" else task_job

        async def guarded() -> None:
            try:
                await job()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        meter.start()
        await asyncio.gather(*(guarded() for _ in range(spec["jobs"])))
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
