"""CallbackReceiver: a provider's completion callbacks -> the jobs waiting for them.

Each job gets its own URL, ``<public_url>/<token>``: an 11-character public key that finds
the job, then a 32-character secret compared in constant time. A POST there is read with the
dialect's own status parser, so a job completed by callback gets exactly what polling would
have given it. Nothing in a callback can touch another job:

- unknown key or wrong secret: 404; a token whose job has ended (used): 410;
- a body for another task id: 409; unreadable or not a task answer: 400; too large: 413;
- a callback that arrives before the create's answer (the task id is not known yet) is held
  (202) and checked against the task id once it is known.

None of these changes a job, and a duplicate or late delivery finds its token used. Polling
goes on as the safety net at a long interval (:class:`~._safety.SafetyNet`), so a callback
that never comes costs time, not the job.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from ._errors import ConfigurationError, QwenEditError
from ._urls import is_http_url
from .providers._base import Provider, TaskState, TaskStatus

__all__ = ["CallbackReceiver", "CallbackStatistics"]

logger = logging.getLogger("qwen_edit_async")

_KEY_CHARS, _SECRET_CHARS = 11, 32  # token_urlsafe(8) and token_urlsafe(24)
_TOKEN_CHARS = _KEY_CHARS + _SECRET_CHARS
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class CallbackStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a receiver's work (``receiver.statistics()``)."""

    #: POSTs received, and those that completed a job.
    received: int
    completed: int
    #: Callbacks held because they came before the create's answer.
    early: int
    #: Answers 2xx that changed nothing (a task still running).
    ignored: int
    #: Refused (4xx): unknown or wrong token, token already used, wrong task, bad body.
    refused: int
    #: Tokens issued and not yet ended.
    active: int


class _Ident(msgspec.Struct):
    """The task id of a callback body (tolerant: ``id`` or ``task_id``)."""

    id: str | None = None
    task_id: str | None = None


_IDENT = msgspec.json.Decoder(_Ident)


class _Ticket:
    """One job's callback token, from before its create to its end."""

    __slots__ = (
        "accepted",
        "deliver",
        "early",
        "elapsed",
        "key",
        "mask",
        "provider",
        "receiver",
        "secret",
        "task_id",
        "url",
    )

    def __init__(
        self,
        receiver: CallbackReceiver,
        provider: Provider,
        mask: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.receiver = receiver
        self.provider = provider
        #: Masks the client's key in a callback body, as the transport does for answers.
        self.mask = mask
        self.key = secrets.token_urlsafe(8)
        self.secret = secrets.token_urlsafe(24).encode()
        self.url = f"{receiver.public_url}/{self.key}{self.secret.decode()}"
        self.task_id: str | None = None
        self.accepted = 0.0
        #: Completes the waiting job; set by the poller once it watches the task.
        self.deliver: Callable[[TaskStatus], bool] | None = None
        #: Seconds from acceptance to the callback that completed the job, if one did.
        self.elapsed: float | None = None
        #: A callback that came before the task id was known: (headers, body).
        self.early: tuple[dict[str, str], bytes] | None = None

    def bind(self, task_id: str) -> None:
        """The provider accepted the create: callbacks must now name ``task_id``."""
        self.task_id = task_id
        self.accepted = time.monotonic()

    def connect(self, deliver: Callable[[TaskStatus], bool]) -> None:
        """Called by the poller when it starts watching the task."""
        self.deliver = deliver
        if self.early is not None:
            headers, body = self.early
            self.early = None
            status, why = self.receiver._apply(self, headers, body)
            if status >= 400:
                logger.warning("a callback held for task %s was refused: %s", self.task_id, why)


class CallbackReceiver:
    """Receives a provider's completion callbacks and completes the jobs they belong to.

    ``public_url`` is where the provider can reach the receiver (``https://``; plain
    ``http://`` only on a loopback address, for a local fake provider). Each job's
    ``callback_url`` is ``<public_url>/<token>``. Give the receiver to a client, then expose
    it one of three ways:

    - aiohttp: ``app.router.add_post(receiver.path + "/{token}", receiver.aiohttp_handler)``
    - FastAPI / Starlette (or any ASGI server): the receiver is an ASGI app,
      ``app.mount(receiver.path, receiver)``
    - standalone: ``async with receiver.listen("127.0.0.1", 8080): ...`` (behind a reverse
      proxy or tunnel that forwards ``public_url``)

    >>> receiver = CallbackReceiver("https://hooks.example.com/qe")
    >>> receiver.path
    '/qe'
    >>> async with receiver.listen("127.0.0.1", 8080):                # doctest: +SKIP
    ...     async with QwenEditClient("evolink", callbacks=receiver) as client:
    ...         result = await client.edit(["https://example.com/cat.png"], "Add a hat")

    ``max_body``: the largest callback body read, in bytes (larger: 413). ``remember``: how
    many used tokens are told apart from unknown ones (410 rather than 404).
    """

    def __init__(
        self, public_url: str, *, max_body: int = 1024 * 1024, remember: int = 100_000
    ) -> None:
        self.public_url = _check_public_url(public_url)
        self.path = urlsplit(self.public_url).path
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1024:
            raise ConfigurationError(f"max_body: {max_body!r} must be a byte count of 1024 or more")
        self.max_body = max_body
        self._remember = max(1, remember)
        self._active: dict[str, _Ticket] = {}
        self._used: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._received = self._completed = self._early = self._ignored = self._refused = 0

    def __repr__(self) -> str:
        return f"CallbackReceiver({self.public_url!r}, active={len(self._active)})"

    def statistics(self) -> CallbackStatistics:
        """A frozen snapshot of the receiver's counters."""
        return CallbackStatistics(
            received=self._received,
            completed=self._completed,
            early=self._early,
            ignored=self._ignored,
            refused=self._refused,
            active=len(self._active),
        )

    # -- used by the client ---------------------------------------------------------------

    def _issue(self, provider: Provider, mask: Callable[[bytes], bytes] | None = None) -> _Ticket:
        ticket = _Ticket(self, provider, mask)
        self._active[ticket.key] = ticket
        return ticket

    def _retire(self, ticket: _Ticket) -> None:
        if self._active.pop(ticket.key, None) is None:
            return
        ticket.early = None
        ticket.deliver = None
        used = self._used
        used[ticket.key] = None
        if len(used) > self._remember:
            used.popitem(last=False)

    # -- one POST -------------------------------------------------------------------------

    def receive(self, token: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """Handle one callback POST whatever the framework: ``(HTTP status, reason)``.

        ``token`` is the last segment of the URL path; ``body`` at most ``max_body`` bytes
        (the adapters answer 413 above that).
        """
        self._received += 1
        status, why = self._receive(token, headers, body)
        if status >= 400:
            self._refused += 1
            logger.debug("callback refused (%d): %s", status, why)
        return status, why

    def _receive(self, token: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        if len(token) != _TOKEN_CHARS or not _URLSAFE.issuperset(token):
            return 404, "unknown callback token"
        key, secret = token[:_KEY_CHARS], token[_KEY_CHARS:].encode()
        ticket = self._active.get(key)
        if ticket is None:
            if key in self._used:
                return 410, "callback token already used"
            return 404, "unknown callback token"
        if not hmac.compare_digest(secret, ticket.secret):
            return 404, "unknown callback token"
        if len(body) > self.max_body:
            return 413, "callback body too large"
        if ticket.task_id is None or ticket.deliver is None:
            # Before the create's answer: keep the first for the moment the id is known.
            try:
                ident = _IDENT.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                return 400, "callback body is not a task object"
            if not (ident.id or ident.task_id):
                return 400, "callback body names no task"
            if ticket.early is None:
                ticket.early = (_plain(headers), body)
                self._early += 1
            return 202, "held until the task is accepted"
        return self._apply(ticket, headers, body)

    def _apply(self, ticket: _Ticket, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        if ticket.mask is not None:
            body = ticket.mask(body)  # provider text enters here: no key goes further
        try:
            ident = _IDENT.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return 400, "callback body is not a task object"
        named = ident.id or ident.task_id
        if named is None:
            return 400, "callback body names no task"
        task_id = ticket.task_id
        assert task_id is not None
        if not hmac.compare_digest(named.encode(), task_id.encode()):
            return 409, "callback is for another task"
        try:
            status = ticket.provider.parse_status(task_id, 200, headers, body)
        except QwenEditError as exc:
            return 400, f"unreadable task answer: {exc.message}"
        if not status.state.done or (status.state is TaskState.SUCCEEDED and status.result is None):
            # Running, or completed before its results were attached: the status checks
            # (the safety net) collect the results.
            self._ignored += 1
            return 202, "task still running"
        deliver = ticket.deliver
        if deliver is None or not deliver(status):
            return 410, "job already ended"
        ticket.elapsed = time.monotonic() - ticket.accepted
        self._completed += 1
        self._retire(ticket)
        return 200, "ok"

    # -- aiohttp --------------------------------------------------------------------------

    async def aiohttp_handler(self, request: web.Request) -> web.Response:
        """An aiohttp handler: ``app.router.add_post(receiver.path + "/{token}", handler)``.

        The token is the last path segment, however the route is named.
        """
        if request.method != "POST":
            return _aiohttp_answer(405, "method not allowed")
        token = request.match_info.get("token") or request.path.rstrip("/").rsplit("/", 1)[-1]
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._too_large_aiohttp()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.max_body:
                return self._too_large_aiohttp()
            chunks.append(chunk)
        status, why = self.receive(token, request.headers, b"".join(chunks))
        return _aiohttp_answer(status, why)

    def _too_large_aiohttp(self) -> web.Response:
        self._received += 1
        self._refused += 1
        return _aiohttp_answer(413, "callback body too large")

    @contextlib.asynccontextmanager
    async def listen(self, host: str = "127.0.0.1", port: int = 8080) -> AsyncIterator[int]:
        """Serve the receiver on ``host:port`` (its own aiohttp server) for the block;
        yields the bound port (``port=0`` picks a free one).

        It answers POSTs to ``<path>/<token>``, the path of ``public_url``, and to
        ``/<token>`` (a proxy that strips the prefix).
        """
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/{token}", self.aiohttp_handler)
        if self.path not in ("", "/"):
            app.router.add_post(self.path + "/{token}", self.aiohttp_handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            bound = runner.addresses[0][1]
            logger.info("callback receiver listening on %s:%d for %s", host, bound, self.public_url)
            yield int(bound)
        finally:
            await runner.cleanup()

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """The receiver as an ASGI app (FastAPI/Starlette ``app.mount(receiver.path,
        receiver)``, or served alone by uvicorn)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("method") != "POST":
            await _asgi_answer(send, 405, "method not allowed")
            return
        token = str(scope.get("path", "")).rstrip("/").rsplit("/", 1)[-1]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            self._received += 1
            self._refused += 1
            await _asgi_answer(send, 413, "callback body too large")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                self._received += 1
                self._refused += 1
                await _asgi_answer(send, 413, "callback body too large")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        status, why = self.receive(token, headers, b"".join(chunks))
        await _asgi_answer(send, status, why)


def _plain(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().endswith("request-id")}


def _body(status: int, why: str) -> bytes:
    key = "status" if status < 400 else "error"
    return msgspec.json.encode({key: why})


def _aiohttp_answer(status: int, why: str) -> web.Response:
    return web.Response(status=status, body=_body(status, why), content_type="application/json")


async def _asgi_answer(send: ASGISend, status: int, why: str) -> None:
    body = _body(status, why)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _check_public_url(url: object) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"public_url: {url!r} is not a URL")
    parts = urlsplit(url.strip())
    if not is_http_url(url.strip()) or not parts.hostname:
        raise ConfigurationError(
            f"public_url: {url!r} must be an https:// URL at which the provider can reach "
            "this receiver, e.g. 'https://hooks.example.com/qe'"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"public_url: {url!r} must have no query or fragment")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigurationError(
            f"public_url: {url!r}: providers only call https:// URLs (plain http:// is allowed "
            "on a loopback address only, for a local fake provider)"
        )
    public = url.strip().rstrip("/")
    # The token adds 44 characters; Evolink takes callback URLs of at most 2048.
    if len(public) + 1 + _TOKEN_CHARS > 2048:
        raise ConfigurationError(f"public_url: {len(public)} characters; at most 2003 fit")
    return public


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
