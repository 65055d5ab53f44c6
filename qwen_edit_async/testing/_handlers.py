"""The aiohttp routes of the provider dialects and the file host.

A create goes: read body -> API key -> rate limit and burst guard -> fault decision
(script or draw) -> transport faults -> validation -> concurrency quota -> job created and
billed -> answer (sync: after the latency; task: at once, status computed from the clock
at each poll).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from ._callbacks import CallbackSender
from ._dialects import (
    FAILURE_MESSAGES,
    dashscope_success,
    evolink_created,
    evolink_task,
    openai_success,
    render_error,
    task_failure_problem,
    vtrix_created,
    vtrix_task,
)
from ._faults import OK, OUTCOMES, Decision, prompt_magic
from ._jobs import SYNC_DIALECTS, Job
from ._png import colour_for, png_bytes
from ._problems import Problem
from ._relay import REFUSALS, relay_success
from ._validate import HYPHEN_MODELS, UNDERSCORE_MODELS, EditSpec, parse_flat, parse_nested

if TYPE_CHECKING:
    from ._server import FakeProvider

__all__ = ["DASHSCOPE_PATH", "build_app"]

DASHSCOPE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
#: Largest request body accepted (a 10 MB image as base64 is about 13.4 MB, times 3).
CLIENT_MAX_SIZE = 48 * 1024 * 1024
MALFORMED_BODY = b'{"output": {"choices": [{"message": '
_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode
_BAD = object()  # a body that did not decode
_TOO_LARGE = object()  # a body over the size limit
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 36)
        out.append(_B36[digit])
    return "".join(reversed(out))


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


class _Routes:
    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake
        self.stats = fake.stats
        self.callbacks = CallbackSender(fake, self._callback_body)

    def _callback_body(self, job: Job, now: float) -> dict[str, Any]:
        """What Evolink POSTs to a callback: the status answer of the ended task."""
        faults = self.fake.faults
        body, _ = evolink_task(
            job, now, self._urls, self.fake.evolink_estimated_time, faults.results_delay
        )
        return body

    # -- shared steps ------------------------------------------------------------------

    def _check_auth(self, request: web.Request) -> None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        expected = self.fake.api_key
        if scheme.lower() != "bearer" or not key or (expected is not None and key != expected):
            raise Problem("auth", "Invalid API-key provided.")

    def _error(self, dialect: str, problem: Problem, request_id: str) -> web.Response:
        status, body = render_error(dialect, problem, request_id, self.fake.faults)
        headers = None
        if problem.retry_after is not None:
            headers = {"Retry-After": str(problem.retry_after)}
        return json_response(status, body, request_id, headers)

    def _count_refusal(self, problem: Problem, status: int) -> None:
        if status == 429:
            self.stats.rate_limited += 1
        elif status >= 500:
            self.stats.server_errors += 1
        else:
            self.stats.rejected += 1

    async def _read(self, request: web.Request) -> bytes | object:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _TOO_LARGE

    def _parse(self, dialect: str, body: Any) -> EditSpec:
        lookup = self.fake.files.lookup
        if dialect == "evolink":
            return parse_flat(body, lookup=lookup)
        if dialect == "vtrix":
            return parse_nested(body, models=UNDERSCORE_MODELS, lookup=lookup, allow_oss=False)
        return parse_nested(
            body, models=HYPHEN_MODELS, lookup=lookup, allow_oss=dialect != "modelstream"
        )

    def _new_job(self, dialect: str, spec: EditSpec, outcome: Decision, request_id: str) -> Job:
        fake = self.fake
        serial = fake.next_job_serial()
        if dialect == "evolink":
            suffix = _b36(serial, 4) + _b36(fake.rng.getrandbits(20), 4)
            job_id = f"task-unified-{int(time.time())}-{suffix}"
        elif dialect == "vtrix":
            job_id = f"task-{serial:06d}{fake.rng.getrandbits(40):010x}"
        else:
            job_id = request_id
        fail_code = outcome.arg if outcome.kind == "fail" else None
        if outcome.kind == "fail" and fail_code is None:
            fail_code = fake.faults.fail_code
        job = Job(
            id=job_id,
            serial=serial,
            dialect=dialect,
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
        )
        self.stats.jobs[job_id] = job
        self.stats.jobs_created += 1
        return job

    # -- creates -----------------------------------------------------------------------

    async def _create(
        self, request: web.Request, dialect: str, raw: bytes | object, body: Any = _BAD
    ) -> web.StreamResponse:
        fake, stats = self.fake, self.stats
        stats.creates += 1
        request_id = fake.next_request_id()
        sync = dialect in SYNC_DIALECTS
        try:
            self._check_auth(request)
            refusal = fake.rate_guard.check(
                now=time.monotonic(), max_rate=fake.max_rate, burst=fake.burst
            )
            if refusal is not None:
                stats.refused_rate += 1
                raise Problem("rate_quota", refusal)
            if dialect == "dashscope" and request.headers.get("X-DashScope-Async") == "enable":
                raise Problem(
                    "async_refused", "current user api does not support asynchronous calls"
                )
            decision = fake.next_decision()
            kind = decision.kind
            if kind == "drop_before_accept":
                stats.dropped += 1
                return drop_connection(request, reset=True)
            if kind == "rate_limit":
                retry = int(decision.arg) if decision.arg else fake.faults.retry_after
                raise Problem(
                    "rate_limit",
                    "Requests rate limit exceeded, please try again later.",
                    retry_after=retry,
                )
            if kind == "refuse":
                canned = REFUSALS[decision.arg or ""]
                raise Problem("upstream", canned.message, status=canned.status, code=canned.code)
            if kind == "server_error":
                status = int(decision.arg) if decision.arg else fake.faults.server_status
                raise Problem(
                    "server_error",
                    "An internal error has occurred, please try again later.",
                    status=status,
                )
            if raw is _TOO_LARGE:
                raise Problem("too_large", "The request body is too large.")
            if body is _BAD:
                try:
                    body = _DECODE(raw)  # type: ignore[arg-type]
                except msgspec.DecodeError:
                    raise Problem("bad_json", "The request body is not valid JSON.") from None
            spec = self._parse(dialect, body)
            outcome = decision if kind in OUTCOMES else OK
            if outcome.kind == "ok":
                outcome = prompt_magic(spec.prompt) or outcome
            limit = fake.max_running
            if limit is not None and stats.running >= limit:
                stats.refused_concurrency += 1
                raise Problem(
                    "concurrency",
                    f"Too many concurrent tasks: at most {limit} may run at once.",
                )
            if outcome.kind == "quota" or (sync and outcome.kind == "content_filter"):
                # Refused at submission: no job, nothing billed. (An empty balance is
                # checked before any task is created; moderation of a task fails it.)
                raise Problem(
                    outcome.kind,  # type: ignore[arg-type]
                    FAILURE_MESSAGES[outcome.kind],
                )
            job = self._new_job(dialect, spec, outcome, request_id)
        except Problem as problem:
            status, _ = render_error(dialect, problem, request_id, fake.faults)
            self._count_refusal(problem, status)
            return self._error(dialect, problem, request_id)

        if sync:
            return await self._run_sync(request, job, kind)
        stats.task_started(job)
        callback_url = body.get("callback_url") if dialect == "evolink" else None
        if isinstance(callback_url, str):
            self.callbacks.schedule(job, callback_url)
        if kind == "drop_after_accept":
            stats.dropped += 1
            return drop_connection(request)
        if kind == "malformed":
            stats.malformed += 1
            return _malformed(request_id)
        if dialect == "evolink":
            return json_response(200, evolink_created(job, fake.evolink_estimated_time), request_id)
        return json_response(200, vtrix_created(job), request_id)

    async def _run_sync(self, request: web.Request, job: Job, kind: str) -> web.StreamResponse:
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
            problem = task_failure_problem(job)
            status, _ = render_error(job.dialect, problem, request_id, fake.faults)
            self._count_refusal(problem, status)
            return self._error(job.dialect, problem, request_id)
        urls = fake.files.result_urls(job, job.sync_finished_at, fake.url_lifetime)
        if job.dialect == "dashscope":
            return json_response(200, dashscope_success(job, urls, request_id), request_id)
        b64 = None
        if fake.b64_json:
            b64 = [
                base64.b64encode(png_bytes(job.width, job.height, _colour(url))).decode()
                for url in urls
            ]
        if fake.faults.relay:
            answer = relay_success(job, dashscope_success(job, urls, request_id), b64)
            return json_response(200, answer, request_id)
        if b64 is not None:
            return json_response(200, openai_success(job, None, b64), request_id)
        return json_response(200, openai_success(job, urls), request_id)

    async def dashscope(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "dashscope", await self._read(request))

    async def onetoken(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "onetoken", await self._read(request))

    async def vtrix(self, request: web.Request) -> web.StreamResponse:
        return await self._create(request, "vtrix", await self._read(request))

    async def generations(self, request: web.Request) -> web.StreamResponse:
        """ModelStream (nested body) and Evolink (flat body) share this path."""
        raw = await self._read(request)
        body: Any = _BAD
        if isinstance(raw, bytes):
            try:
                body = _DECODE(raw)
            except msgspec.DecodeError:
                body = _BAD
        flat = (
            isinstance(body, dict)
            and "input" not in body
            and ("prompt" in body or "image_urls" in body)
        )
        return await self._create(request, "evolink" if flat else "modelstream", raw, body)

    # -- polls -------------------------------------------------------------------------

    def _poll(self, request: web.Request, dialect: str) -> web.Response:
        fake, stats = self.fake, self.stats
        stats.polls += 1
        request_id = fake.next_request_id()
        task_id = request.match_info["task_id"]
        try:
            self._check_auth(request)
            p = fake.faults.poll_error
            if p > 0.0 and fake.poll_rng.random() < p:
                raise Problem("poll_error", "Service temporarily unavailable.", status=503)
            job = stats.jobs.get(task_id)
            if job is None or job.dialect != dialect:
                raise Problem("not_found", f"Task {task_id[:80]} does not exist.", param="task_id")
        except Problem as problem:
            return self._error(dialect, problem, request_id)
        job.polls += 1
        now = time.monotonic()
        faults = fake.faults
        if dialect == "evolink":
            body, done = evolink_task(
                job, now, self._urls, fake.evolink_estimated_time, faults.results_delay
            )
        else:
            body, done = vtrix_task(
                job, now, self._urls, faults.vtrix_error_form, faults.vtrix_item_type
            )
        if done:
            if job.first_seen_completed_at is None:
                job.first_seen_completed_at = time.time()
        else:
            stats.polls_before_completion += 1
        return json_response(200, body, request_id)

    def _urls(self, job: Job) -> list[str]:
        return self.fake.files.result_urls(
            job, job.created_at + job.latency, self.fake.url_lifetime
        )

    async def evolink_poll(self, request: web.Request) -> web.StreamResponse:
        return self._poll(request, "evolink")

    async def vtrix_poll(self, request: web.Request) -> web.StreamResponse:
        return self._poll(request, "vtrix")

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


def build_app(fake: FakeProvider) -> web.Application:
    """The aiohttp application serving every dialect, the file host and ``/_fake/*``."""
    from ._control import add_control_routes
    from ._server import CALLBACKS

    routes = _Routes(fake)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[CALLBACKS] = routes.callbacks
    add = app.router
    add.add_post(DASHSCOPE_PATH, routes.dashscope)
    add.add_post("/v1/images/generations", routes.generations)
    add.add_post("/v1/images/edits", routes.onetoken)
    add.add_get("/v1/tasks/{task_id}", routes.evolink_poll)
    add.add_post("/model/v1/generation", routes.vtrix)
    add.add_get("/model/v1/generation/task/{task_id}", routes.vtrix_poll)
    add.add_get("/files/results/{name}", routes.result_file)
    add.add_get("/files/uploads/{name}", routes.upload_file)
    add_control_routes(app, fake)
    return app
