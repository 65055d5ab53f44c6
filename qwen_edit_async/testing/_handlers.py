"""The aiohttp routes of the fake: creates and polls for every dialect, and the file host.

A create goes: read body -> API key -> rate limit and burst guard -> fault decision
(script or draw) -> transport faults -> validation -> concurrency quota -> job created and
billed -> answer (sync: after the latency; task: at once, status computed from the clock
at each poll). The routes are the same for every dialect; what differs is asked of its
:class:`FakeDialect` (``_fake_dialects``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from ._callbacks import CALLBACKS, CallbackSender
from ._control import add_control_routes
from ._dialects import FAILURE_MESSAGES, task_failure_problem
from ._fake_dialects import FAKE_DIALECTS, FakeDialect
from ._faults import OK, OUTCOMES, Decision, Faults, prompt_magic
from ._jobs import Job
from ._png import colour_for, png_bytes
from ._problems import Problem
from ._relay import REFUSALS
from ._state import FakeState
from ._validate import EditSpec

__all__ = ["build_app"]

#: Largest request body accepted (a 10 MB image as base64 is about 13.4 MB, times 3).
CLIENT_MAX_SIZE = 48 * 1024 * 1024
MALFORMED_BODY = b'{"output": {"choices": [{"message": '
_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode
_BAD = object()  # a body that did not decode
_TOO_LARGE = object()  # a body over the size limit
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    status: int, body: Any, request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with the request id header every answer carries."""
    resp = web.Response(body=_ENCODE(body), status=status, content_type="application/json")
    resp.headers["X-Request-Id"] = request_id
    if headers:
        resp.headers.update(headers)
    return resp


def drop_connection(request: web.BaseRequest, *, reset: bool = False) -> web.StreamResponse:
    """Close the connection with no answer at all; the client sees a disconnect.

    ``reset=True`` aborts with a TCP RST (SO_LINGER 0), as a server does that refuses a
    request it never processed: the client may safely resend. Without it the connection is
    closed cleanly after the request was read, which tells the client nothing about whether
    the job exists (a job accepted and then lost).
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if reset and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # Cancelling stops aiohttp from trying to write a response to the dead transport.
    raise asyncio.CancelledError


def _fault_problem(decision: Decision, faults: Faults) -> Problem | None:
    """The refusal an injected fault answers with, or ``None`` for the other fates."""
    kind = decision.kind
    if kind == "rate_limit":
        retry = int(decision.arg) if decision.arg else faults.retry_after
        return Problem(
            "rate_limit",
            "Requests rate limit exceeded, please try again later.",
            retry_after=retry,
        )
    if kind == "refuse":
        canned = REFUSALS[decision.arg or ""]
        return Problem("upstream", canned.message, status=canned.status, code=canned.code)
    if kind == "server_error":
        status = int(decision.arg) if decision.arg else faults.server_status
        return Problem(
            "server_error",
            "An internal error has occurred, please try again later.",
            status=status,
        )
    return None


class _Routes:
    def __init__(self, fake: FakeState, dialects: dict[str, FakeDialect]) -> None:
        self.fake = fake
        self.stats = fake.stats
        self.dialects = dialects
        self.callbacks = CallbackSender(fake, self._callback_body)

    def _callback_body(self, job: Job, now: float) -> Any:
        """What a task dialect POSTs to a callback: the status answer of the ended task."""
        fake = self.fake
        dialect = self.dialects[job.dialect]
        body, _ = dialect.task(job, now, self._urls, fake.faults, fake.evolink_estimated_time)
        return body

    # -- shared steps ------------------------------------------------------------------

    def _check_auth(self, request: web.Request, dialect: FakeDialect) -> None:
        value = request.headers.get(dialect.auth_header, "")
        if dialect.auth_scheme is None:
            scheme, key = None, value.strip()
        else:
            scheme, _, key = value.partition(" ")
            key = key.strip()
        expected = self.fake.api_key
        wrong_scheme = scheme is not None and scheme.lower() != (dialect.auth_scheme or "").lower()
        if wrong_scheme or not key or (expected is not None and key != expected):
            raise Problem("auth", "Invalid API-key provided.")

    def _error(self, dialect: FakeDialect, problem: Problem, request_id: str) -> web.Response:
        status, body = dialect.error(problem, request_id, self.fake.faults)
        headers = None
        if problem.retry_after is not None:
            headers = {"Retry-After": str(problem.retry_after)}
        return json_response(status, body, request_id, headers)

    def _refuse(self, dialect: FakeDialect, problem: Problem, request_id: str) -> web.Response:
        """A refused create, counted by its status."""
        response = self._error(dialect, problem, request_id)
        if response.status == 429:
            self.stats.rate_limited += 1
        elif response.status >= 500:
            self.stats.server_errors += 1
        else:
            self.stats.rejected += 1
        return response

    async def _read(self, request: web.Request) -> bytes | object:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _TOO_LARGE

    def _new_job(
        self, dialect: FakeDialect, spec: EditSpec, outcome: Decision, request_id: str
    ) -> Job:
        fake = self.fake
        serial = fake.next_job_serial()
        fail_code = outcome.arg if outcome.kind == "fail" else None
        if outcome.kind == "fail" and fail_code is None:
            fail_code = fake.faults.fail_code
        job = Job(
            id=dialect.job_id(serial, fake.rng, request_id),
            serial=serial,
            dialect=dialect.name,
            model=spec.model,
            n=spec.n,
            width=spec.width,
            height=spec.height,
            prompt=spec.prompt,
            revised_prompt=spec.revised_prompt,
            latency=fake.latency(fake.rng),
            outcome=outcome.kind,
            fail_code=fail_code,
            request_id=request_id,
            sync=dialect.sync,
        )
        self.stats.jobs[job.id] = job
        self.stats.jobs_created += 1
        return job

    # -- creates -----------------------------------------------------------------------

    def _admit(self, request: web.Request, dialect: FakeDialect) -> Decision:
        """The checks before the body is read: key, rate guard, dialect headers; then the
        create's fate. Raises the :class:`Problem` of a refusal."""
        fake = self.fake
        self._check_auth(request, dialect)
        refusal = fake.rate_guard.check(
            now=time.monotonic(), max_rate=fake.max_rate, burst=fake.burst
        )
        if refusal is not None:
            self.stats.refused_rate += 1
            raise Problem("rate_quota", refusal)
        dialect.check_headers(request.headers)
        return fake.next_decision()

    def _accept(
        self, dialect: FakeDialect, decision: Decision, raw: bytes | object, body: Any
    ) -> tuple[EditSpec, Decision]:
        """Validate the body and the account's limits; the job's outcome. Raises the
        :class:`Problem` of a refusal (nothing is created or billed then)."""
        fake = self.fake
        problem = _fault_problem(decision, fake.faults)
        if problem is not None:
            raise problem
        if raw is _TOO_LARGE:
            raise Problem("too_large", "The request body is too large.")
        if body is _BAD:
            raise Problem("bad_json", "The request body is not valid JSON.")
        spec = dialect.parse(body, fake.files.lookup)
        outcome = decision if decision.kind in OUTCOMES else OK
        if outcome.kind == "ok":
            outcome = prompt_magic(spec.prompt) or outcome
        limit = fake.max_running
        if limit is not None and self.stats.running >= limit:
            self.stats.refused_concurrency += 1
            raise Problem(
                "concurrency", f"Too many concurrent tasks: at most {limit} may run at once."
            )
        if outcome.kind == "quota" or (dialect.sync and outcome.kind == "content_filter"):
            # Refused at submission: no job, nothing billed. (An empty balance is checked
            # before any task is created; moderation of a task fails it.)
            raise Problem(outcome.kind, FAILURE_MESSAGES[outcome.kind])  # type: ignore[arg-type]
        return spec, outcome

    async def _create(
        self, request: web.Request, dialect: FakeDialect, raw: bytes | object, body: Any
    ) -> web.StreamResponse:
        fake = self.fake
        self.stats.creates += 1
        request_id = fake.next_request_id()
        try:
            decision = self._admit(request, dialect)
            if decision.kind == "drop_before_accept":
                self.stats.dropped += 1
                return drop_connection(request, reset=True)
            spec, outcome = self._accept(dialect, decision, raw, body)
        except Problem as problem:
            return self._refuse(dialect, problem, request_id)
        job = self._new_job(dialect, spec, outcome, request_id)
        if dialect.sync:
            return await self._run_sync(request, dialect, job, decision.kind)
        return self._start_task(request, dialect, job, decision.kind, body)

    def _start_task(
        self, request: web.Request, dialect: FakeDialect, job: Job, kind: str, body: Any
    ) -> web.StreamResponse:
        self.stats.task_started(job)
        callback_url = dialect.callback_url(body)
        if callback_url is not None:
            self.callbacks.schedule(job, callback_url)
        if kind == "drop_after_accept":
            self.stats.dropped += 1
            return drop_connection(request)
        if kind == "malformed":
            self.stats.malformed += 1
            return _malformed(job.request_id)
        answer = dialect.created(job, self.fake.evolink_estimated_time)
        return json_response(200, answer, job.request_id)

    async def _run_sync(
        self, request: web.Request, dialect: FakeDialect, job: Job, kind: str
    ) -> web.StreamResponse:
        fake, stats = self.fake, self.stats
        request_id = job.request_id
        if kind == "drop_after_accept":
            stats.dropped += 1
            return drop_connection(request)
        stats.sync_started()
        try:
            if job.outcome == "stuck":
                # Held until the client gives up (the handler is cancelled) or the fake closes.
                await fake.closing.wait()
                stats.dropped += 1
                return drop_connection(request)
            if job.latency > 0:
                await asyncio.sleep(job.latency)
            job.sync_finished_at = time.time()
        finally:
            stats.sync_ended()
        if kind == "malformed":
            stats.malformed += 1
            return _malformed(request_id)
        job.first_seen_completed_at = job.sync_finished_at
        if job.outcome != "ok":
            return self._refuse(dialect, task_failure_problem(job), request_id)
        urls = fake.files.result_urls(job, job.sync_finished_at, fake.url_lifetime)
        b64 = None
        if fake.b64_json and dialect.inline_images:
            b64 = [
                base64.b64encode(png_bytes(job.width, job.height, _colour(url))).decode()
                for url in urls
            ]
        answer = dialect.success(job, urls, request_id, fake.faults, b64)
        return json_response(200, answer, request_id)

    def create_route(self, group: list[FakeDialect]) -> _Handler:
        """The handler of a create path; on a path several dialects share, the first that
        claims the body answers (else the last)."""

        async def create(request: web.Request) -> web.StreamResponse:
            raw = await self._read(request)
            body: Any = _BAD
            if isinstance(raw, bytes):
                with contextlib.suppress(msgspec.DecodeError):
                    body = _DECODE(raw)
            dialect = next((d for d in group if d.claims(body)), group[-1])
            return await self._create(request, dialect, raw, body)

        return create

    # -- polls -------------------------------------------------------------------------

    def _poll(self, request: web.Request, dialect: FakeDialect) -> web.Response:
        fake, stats = self.fake, self.stats
        stats.polls += 1
        request_id = fake.next_request_id()
        task_id = request.match_info["task_id"]
        try:
            self._check_auth(request, dialect)
            p = fake.faults.poll_error
            if p > 0.0 and fake.poll_rng.random() < p:
                raise Problem("poll_error", "Service temporarily unavailable.", status=503)
            job = stats.jobs.get(task_id)
            if job is None or job.dialect != dialect.name:
                raise Problem("not_found", f"Task {task_id[:80]} does not exist.", param="task_id")
        except Problem as problem:
            return self._error(dialect, problem, request_id)
        job.polls += 1
        body, done = dialect.task(
            job, time.monotonic(), self._urls, fake.faults, fake.evolink_estimated_time
        )
        if done:
            if job.first_seen_completed_at is None:
                job.first_seen_completed_at = time.time()
        else:
            stats.polls_before_completion += 1
        return json_response(200, body, request_id)

    def poll_route(self, dialect: FakeDialect) -> _Handler:
        async def poll(request: web.Request) -> web.StreamResponse:
            return self._poll(request, dialect)

        return poll

    def _urls(self, job: Job) -> list[str]:
        return self.fake.files.result_urls(
            job, job.created_at + job.latency, self.fake.url_lifetime
        )

    # -- files -------------------------------------------------------------------------

    async def result_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        request_id = self.fake.next_request_id()
        try:
            ref = self.fake.files.check_result(
                name, request.query.get("Expires"), request.query.get("Signature")
            )
        except FileNotFoundError:
            return _oss_error(404, "NoSuchKey", "The specified key does not exist.", request_id)
        except PermissionError as exc:
            return _oss_error(403, exc.args[0], exc.args[1], request_id)
        data = png_bytes(ref.width, ref.height, colour_for(name))
        self.stats.downloads += 1
        resp = web.Response(body=data, content_type="image/png")
        resp.headers["x-oss-request-id"] = request_id
        return resp

    async def upload_file(self, request: web.Request) -> web.StreamResponse:
        entry = self.fake.files.get_upload(request.match_info["name"])
        if entry is None:
            return _oss_error(
                404, "NoSuchKey", "The specified key does not exist.", self.fake.next_request_id()
            )
        return web.Response(body=entry[0], content_type=entry[1].split(";")[0])


def _colour(url: str) -> int:
    return colour_for(url.rsplit("/", 1)[-1].split("?", 1)[0])


def _malformed(request_id: str) -> web.Response:
    resp = web.Response(body=MALFORMED_BODY, status=200, content_type="application/json")
    resp.headers["X-Request-Id"] = request_id
    return resp


def _oss_error(status: int, code: str, message: str, request_id: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n"
        f"  <RequestId>{request_id}</RequestId>\n  <HostId>127.0.0.1</HostId>\n</Error>\n"
    )
    resp = web.Response(text=body, status=status, content_type="application/xml")
    resp.headers["x-oss-request-id"] = request_id
    return resp


def build_app(fake: FakeState) -> web.Application:
    """The aiohttp application serving every dialect of :data:`FAKE_DIALECTS` (as it is
    now), the file host and ``/_fake/*``."""
    dialects = dict(FAKE_DIALECTS)
    routes = _Routes(fake, dialects)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[CALLBACKS] = routes.callbacks
    add = app.router
    by_path: dict[str, list[FakeDialect]] = {}
    for dialect in dialects.values():
        by_path.setdefault(dialect.create_path, []).append(dialect)
    for path, group in by_path.items():
        add.add_post(path, routes.create_route(group))
    for dialect in dialects.values():
        if dialect.status_path is not None:
            add.add_get(dialect.status_path, routes.poll_route(dialect))
    add.add_get("/files/results/{name}", routes.result_file)
    add.add_get("/files/uploads/{name}", routes.upload_file)
    add_control_routes(app, fake)
    return app
