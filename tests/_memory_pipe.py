"""An in-memory pipe for tests: requests are answered by functions, nothing touches a socket.

It stands where the client's HTTP pipe stands (``client._calls.pipe``), so everything above
it runs for real: the dialect builds and reads, the retry policy resends, the limits pace.
It records each request as it would have gone on the wire (key included)::

    pipe = MemoryPipe()
    pipe.route("POST", BASE + "/v1/images/generations", lambda sent: (200, {}, b"{...}"))
    async with install(qe.QwenEditClient("modelstream", api_key=KEY, base_url=BASE), pipe) as c:
        await c.edit([...], "x")
    (sent,) = pipe.sent
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qwen_edit_async._body import StreamedBody
from qwen_edit_async._http import Answer
from qwen_edit_async.providers._base import HttpRequest

__all__ = ["MemoryPipe", "Sent", "install", "json_answer"]

C = TypeVar("C")


@dataclass(frozen=True)
class Sent:
    """One request as the pipe received it: the headers the conversation added included."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None

    def json(self) -> Any:
        assert self.body is not None
        return json.loads(self.body)


#: What a route answers: ``(status, headers, body)``, an :class:`Answer`, or an exception to
#: raise (a pipe failure such as ``NotSent``/``Lost``).
Reply = tuple[int, Mapping[str, str], bytes] | Answer | BaseException
Handler = Callable[[Sent], Reply]


def json_answer(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Answer:
    return Answer(status, dict(headers or {}), json.dumps(payload).encode())


@dataclass
class _Opened:
    status: int
    headers: Mapping[str, str]
    url: str
    body: bytes

    @property
    def content_length(self) -> int | None:
        return len(self.body)

    async def chunks(self, size: int = 256 * 1024) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), size):
            yield self.body[start : start + size]


@dataclass
class MemoryPipe:
    """Routes by ``(method, url)``; an unknown route answers 404. ``sent``: every request."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    opened: bool = False

    def route(self, method: str, url: str, handler: Handler | Reply) -> None:
        """Answer ``method url`` with ``handler(sent)``, or with the same reply each time."""
        self.routes[method, url] = handler if callable(handler) else (lambda _sent: handler)

    async def open(self) -> None:
        self.opened = True

    async def aclose(self) -> None:
        self.opened = False

    def _answer(self, sent: Sent) -> Answer:
        self.sent.append(sent)
        handler = self.routes.get((sent.method, sent.url.split("?", 1)[0]))
        reply = handler(sent) if handler is not None else (404, {}, b'{"error": "no route"}')
        if isinstance(reply, BaseException):
            raise reply
        return reply if isinstance(reply, Answer) else Answer(*reply)

    async def send(
        self,
        request: HttpRequest,
        *,
        read_timeout: float,
        cap: int,
        headers: Mapping[str, str] | None = None,
        total: float | None = None,
        stream: StreamedBody | None = None,
    ) -> Answer:
        assert self.opened, "the client sent a request before opening its pipe"
        body = request.body
        if stream is not None:
            body = b"".join([chunk async for chunk in stream.chunks()])
        sent = Sent(request.method, request.url, {**request.headers, **(headers or {})}, body)
        return self._answer(sent)

    @asynccontextmanager
    async def stream(self, url: str, *, read_timeout: float) -> AsyncIterator[_Opened]:
        answer = self._answer(Sent("GET", url, {}, None))
        yield _Opened(answer.status, answer.headers, url, answer.body)


def install(client: C, pipe: MemoryPipe) -> C:  # client: a QwenEditClient
    """Put ``pipe`` in place of ``client``'s HTTP pipe, before the client is opened (it then
    opens and closes ``pipe``, and never makes a session of its own); returns ``client``."""
    client._calls.pipe = pipe  # type: ignore[attr-defined]
    return client
