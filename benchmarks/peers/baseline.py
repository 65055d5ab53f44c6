"""Peer: the hand-written pattern most users write today.

One ``aiohttp.ClientSession`` (its connector sized for the concurrency, as a careful user
does), an ``asyncio.Semaphore``, and ``asyncio.gather`` over every job. Sync dialect
(DashScope): each job holds one POST open until the answer. Task dialect (Evolink): each job
creates its task, then asks for its status at once and every 1.0 s until it ends.

With local files (the memory scenario, DashScope) each job does what such code does with a
photo on disk, once it holds its semaphore slot: read the file, ``base64`` it, put the data
URI in the JSON body and POST it (``json=``).

Spec keys: ``url``, ``provider`` (``dashscope`` or ``evolink``), ``jobs``, ``in_flight``,
``record``, ``poll_interval`` (1.0); for local inputs ``files``: ``{"dir": ..., "distinct":
N}`` (job ``i`` sends ``dir/img-{i % N}.png``) plus ``rss_checkpoints`` (job counts at which
to sample the RSS).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
import time
from typing import Any

import aiohttp

from ._common import IMAGE_URL, MODEL, PROMPT, Meter, current_rss_mb, main

DASHSCOPE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
HEADERS = {"Authorization": "Bearer bench"}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    base, provider = spec["url"], spec["provider"]
    interval = spec.get("poll_interval", 1.0)
    record = spec.get("record", True)
    meter = Meter()
    records: list[tuple[str, float]] = []
    errors: list[str] = []
    files = spec.get("files")
    checkpoints = sorted(spec.get("rss_checkpoints", ()))
    rss_samples: list[tuple[int, float]] = []
    done = 0
    sem = asyncio.Semaphore(spec["in_flight"])
    connector = aiohttp.TCPConnector(limit=spec["in_flight"])

    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        def sync_body(image: str) -> dict[str, Any]:
            return {
                "model": MODEL,
                "input": {
                    "messages": [{"role": "user", "content": [{"image": image}, {"text": PROMPT}]}]
                },
            }

        async def sync_job(index: int) -> None:
            async with sem:
                if files is None:
                    image = IMAGE_URL
                else:
                    path = os.path.join(files["dir"], f"img-{index % files['distinct']}.png")
                    mime = mimetypes.guess_type(path)[0] or "image/png"
                    with open(path, "rb") as fh:
                        image = f"data:{mime};base64,{base64.b64encode(fh.read()).decode()}"
                async with session.post(base + DASHSCOPE_PATH, json=sync_body(image)) as resp:
                    data = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {data}")
            if record:
                records.append((data["request_id"], time.time()))

        async def task_job(index: int) -> None:
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

        async def guarded(index: int) -> None:
            nonlocal done
            try:
                await job(index)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            done += 1
            if checkpoints and done == checkpoints[0]:
                rss_samples.append((checkpoints.pop(0), current_rss_mb()))

        meter.start()
        await asyncio.gather(*(guarded(i) for i in range(spec["jobs"])))
        measured = meter.stop()
    return {
        **measured,
        "ok": spec["jobs"] - len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "records": records,
        "rss_samples": rss_samples,
    }


if __name__ == "__main__":
    main(run)
