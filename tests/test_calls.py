"""The conversation above the pipe (``_calls``), with an in-memory pipe: what is resent after
each kind of failure, what is never resent, and the key masked in whatever comes back."""

from __future__ import annotations

from typing import Any

import pytest
from _memory_pipe import MemoryPipe, Sent, install, json_answer

import qwen_edit_async as qe
from qwen_edit_async._http import Lost, NotSent

pytestmark = pytest.mark.timeout(20)

KEY = "sk-calls-0123456789abcdef"
BASE = "https://gateway.test"
CREATE = BASE + "/v1/images/generations"
URL = "https://example.com/a.png"
DONE = {"created": 1, "data": [{"url": "https://r/x.png"}]}


def script(*replies: Any) -> tuple[list[Sent], Any]:
    """A route handler playing ``replies`` in order (the last one repeats)."""
    seen: list[Sent] = []

    def handler(sent: Sent) -> Any:
        seen.append(sent)
        return replies[min(len(seen), len(replies)) - 1]

    return seen, handler


def client(pipe: MemoryPipe, provider: str = "modelstream", **options: Any) -> qe.QwenEditClient:
    return install(qe.QwenEditClient(provider, api_key=KEY, base_url=BASE, **options), pipe)


async def test_a_create_not_sent_is_sent_again() -> None:
    seen, handler = script(NotSent("could not connect"), json_answer(DONE))
    pipe = MemoryPipe()
    pipe.route("POST", CREATE, handler)
    async with client(pipe) as c:
        result = await c.edit([URL], "x")
    assert len(seen) == 2 and result.urls == ["https://r/x.png"]


async def test_a_create_to_an_unusable_url_is_not_sent_again() -> None:
    seen, handler = script(NotSent("the URL cannot be requested", final=True))
    pipe = MemoryPipe()
    pipe.route("POST", CREATE, handler)
    async with client(pipe) as c:
        with pytest.raises(qe.TransportError, match="cannot be requested") as info:
            await c.edit([URL], "x")
    assert len(seen) == 1 and not info.value.retryable
    assert not isinstance(info.value, qe.SubmitUncertainError)


@pytest.mark.parametrize("reply", [Lost("no answer within 30 s"), (200, {}, b"{not json")])
async def test_a_create_whose_answer_was_lost_or_unreadable_is_uncertain_and_not_resent(
    reply: Any,
) -> None:
    """The job may exist (and be billed): SubmitUncertainError after one request."""
    seen, handler = script(reply, json_answer(DONE))
    pipe = MemoryPipe()
    pipe.route("POST", CREATE, handler)
    async with client(pipe) as c:
        with pytest.raises(qe.SubmitUncertainError, match="may have been created"):
            await c.edit([URL], "x")
    assert len(seen) == 1


async def test_retry_uncertain_resends_a_lost_create() -> None:
    seen, handler = script(Lost("the server closed the connection"), json_answer(DONE))
    pipe = MemoryPipe()
    pipe.route("POST", CREATE, handler)
    async with client(pipe, retry_uncertain=True) as c:
        result = await c.edit([URL], "x")
    assert len(seen) == 2 and result.urls == ["https://r/x.png"]


async def test_max_attempts_bounds_the_resends_of_a_refused_create() -> None:
    busy = json_answer({"error": {"message": "busy", "code": "server_error"}}, 503)
    seen, handler = script(busy)
    pipe = MemoryPipe()
    pipe.route("POST", CREATE, handler)
    async with client(pipe, max_attempts=3) as c:
        with pytest.raises(qe.ServerError):
            await c.edit([URL], "x")
    assert len(seen) == 3


async def test_a_status_request_is_retried_after_a_lost_answer() -> None:
    """Attaching reads the task's status: a GET, so a lost answer is simply asked again."""
    status = BASE + "/v1/tasks/task-1"
    done = {"id": "task-1", "status": "completed", "progress": 100, "results": [URL]}
    seen, handler = script(Lost("the answer was cut off"), json_answer(done))
    pipe = MemoryPipe()
    pipe.route("GET", status, handler)
    async with client(pipe, "evolink") as c:
        job = await c.attach("task-1")
        result = await job.result()
    assert len(seen) == 2 and result.urls == [URL]
    assert c.statistics().status_requests == 1  # one answer read


async def test_the_key_a_provider_echoes_is_masked_before_anyone_reads_it() -> None:
    echo = json_answer(
        {"error": {"message": f"Invalid key Bearer {KEY} ({KEY})", "code": "invalid_api_key"}},
        401,
    )
    pipe = MemoryPipe()
    pipe.route("POST", CREATE, echo)
    async with client(pipe) as c:
        with pytest.raises(qe.AuthenticationError) as info:
            await c.edit([URL], "x")
    assert KEY not in str(info.value) and KEY not in repr(info.value.body)
    (sent,) = pipe.sent
    assert sent.headers["Authorization"] == f"Bearer {KEY}"  # it went out, it did not come back
