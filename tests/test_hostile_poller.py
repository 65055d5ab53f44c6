"""Status answers from a hostile provider (real server on 127.0.0.1): answers that drip
end at ``status_timeout``, never starve other tasks' checks, and end with their job."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _wait import until

import qwen_edit_async as qe
from qwen_edit_async.testing import HostileProvider

pytestmark = pytest.mark.timeout(30)

KEY = "sk-hostile-0123456789abcdef"
URL = "https://example.com/in.png"


def client(server: HostileProvider, **options: Any) -> qe.QwenEditClient:
    options.setdefault("poll_initial", 0.05)
    return qe.QwenEditClient("evolink", api_key=KEY, base_url=server.url, **options)


async def test_a_dripping_status_answer_ends_at_status_timeout_and_is_asked_again() -> None:
    """One byte every 0.1 s, forever: each status request ends after status_timeout=0.3 s
    and the task is asked again; the job ends at its deadline, not never."""
    async with (
        HostileProvider(status="drip", drip_interval=0.1) as server,
        client(server, status_timeout=0.3) as c,
    ):
        with pytest.raises(qe.JobTimeoutError):
            await c.edit([URL], "x", job_timeout=1.5)
        assert sum(server.polled.values()) >= 2


async def test_dripping_status_answers_do_not_starve_a_healthy_task() -> None:
    """With one status worker, two tasks whose answers drip do not delay the third task's
    check past its deadline: it is collected while they still drip."""
    async with (
        HostileProvider(drip_interval=0.2) as server,
        client(server, poll_concurrency=1, status_timeout=20) as c,
    ):
        slow = [await c.submit(qe.EditRequest(images=[URL], prompt=f"[drip] {i}")) for i in (1, 2)]
        await until(lambda: server.dripping == 2, 5)
        started = time.monotonic()
        result = await c.edit([URL], "healthy", job_timeout=6)
        assert result.images
        assert time.monotonic() - started < 6
        assert server.dripping >= 1  # the slow answers were still dripping
        for job in slow:
            job.cancel()


@pytest.mark.parametrize("how", ["job_timeout", "cancel"])
async def test_a_watch_that_ends_cancels_its_status_request_in_flight(how: str) -> None:
    """The job's deadline passes (or its caller cancels) while its status answer drips: the
    request is closed then, not left running until status_timeout (30 s by default)."""
    async with HostileProvider(status="drip", drip_interval=0.1) as server, client(server) as c:
        if how == "job_timeout":
            with pytest.raises(qe.JobTimeoutError):
                await c.edit([URL], "x", job_timeout=1.0)
        else:
            job = await c.submit(qe.EditRequest(images=[URL], prompt="x"))
            await until(lambda: server.dripping == 1, 5)
            job.cancel()
        await until(lambda: server.dripping == 0 and sum(server.polled.values()) == 1, 3)
        assert c.statistics().polling == 0
