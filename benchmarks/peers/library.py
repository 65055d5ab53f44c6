"""Peer: this library, ``QwenEditClient.edit_many`` over a generator of requests.

The client runs with its DEFAULT configuration (only ``max_in_flight`` is set): what users
get is what is measured. Spec keys: ``url``, ``provider``, ``jobs``, ``in_flight``,
``record`` (per-job receive times), ``callbacks`` (a ``CallbackReceiver`` served on
a free loopback port, given to the client); and for local inputs ``files``:
``{"dir": ..., "distinct": N}`` (job ``i`` sends ``dir/img-{i % N}.png``) plus
``rss_checkpoints`` (job counts at which to sample the RSS).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import qwen_edit_async as qe

from ._common import IMAGE_URL, PROMPT, Meter, current_rss_mb, main


def _requests(spec: dict[str, Any]) -> Iterator[qe.EditRequest]:
    files = spec.get("files")
    if files is None:
        for _ in range(spec["jobs"]):
            yield qe.EditRequest(images=[IMAGE_URL], prompt=PROMPT)
        return
    folder, distinct = files["dir"], files["distinct"]
    for i in range(spec["jobs"]):
        path = os.path.join(folder, f"img-{i % distinct}.png")
        yield qe.EditRequest(images=[path], prompt=PROMPT)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    meter = Meter()
    receiver = None
    async with contextlib.AsyncExitStack() as stack:
        if spec.get("callbacks"):
            # The receiver served standalone in this process, where the fake can POST.
            port = _free_port()
            receiver = qe.CallbackReceiver(f"http://127.0.0.1:{port}/qe")
            await stack.enter_async_context(receiver.listen("127.0.0.1", port))
        result = await _run(spec, meter, receiver)
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _run(
    spec: dict[str, Any], meter: Meter, receiver: qe.CallbackReceiver | None
) -> dict[str, Any]:
    checkpoints = sorted(spec.get("rss_checkpoints", ()))
    rss_samples: list[tuple[int, float]] = []
    records: list[tuple[str | None, float]] = []
    record = spec.get("record", True)
    ok = errors = 0
    first_error: str | None = None
    async with qe.QwenEditClient(
        spec["provider"],
        api_key="bench",
        base_url=spec["url"],
        max_in_flight=spec["in_flight"],
        callbacks=receiver,
    ) as client:
        sync = not client.provider.is_task
        meter.start()
        async for outcome in client.edit_many(_requests(spec)):
            if outcome.result is not None:
                ok += 1
                if record:
                    result = outcome.result
                    records.append((result.request_id if sync else result.task_id, time.time()))
            else:
                errors += 1
                if first_error is None:
                    first_error = f"{type(outcome.error).__name__}: {outcome.error}"
            if checkpoints and ok + errors == checkpoints[0]:
                rss_samples.append((checkpoints.pop(0), current_rss_mb()))
        measured = meter.stop()
        statistics = client.statistics()
    return {
        **measured,
        "ok": ok,
        "errors": errors,
        "first_error": first_error,
        "client_status_requests": statistics.status_requests,
        "completed_by_callback": statistics.completed_by_callback,
        "completed_by_poll": statistics.completed_by_poll,
        "library_file": qe.__file__,
        "records": records,
        "rss_samples": rss_samples,
    }


if __name__ == "__main__":
    main(run)
