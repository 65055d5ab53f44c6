"""An aiohttp backend holding one QwenEditClient for the life of the app, on the app's own
``ClientSession``.

Run it (the key is read by the library from QWEN_EDIT_API_KEY or the provider's variable)::

    QWEN_EDIT_PROVIDER=vtrix VTRIX_API_KEY=... python examples/aiohttp_app.py --port 8000
    curl -F images=@cat.png -F prompt="Give the cat a red hat" localhost:8000/edits

The same endpoints and error answers as ``fastapi_app.py``: ``POST /edits``, ``POST /jobs``
(202 + id), ``GET /jobs/{id}?wait=SECONDS`` (re-attaches ids it does not know, on task
providers), ``GET /healthz``. With ``QWEN_EDIT_CALLBACK_URL=https://api.example.com/qe``
(Evolink), the app also serves ``POST /qe/{token}``: the provider's completion callbacks.

Lifecycle: two ``cleanup_ctx`` entries. The first opens the app's ``ClientSession`` (which
the app's other outgoing calls may use too); the second opens the client on it with
``session=``. aiohttp unwinds them in reverse: the client closes first and leaves the
session open, then the app closes the session.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from _backend import (
    MAX_BODY_BYTES,
    MAX_WAIT,
    NOT_FOUND,
    EditInput,
    JobRegistry,
    Settings,
    callback_receiver,
    check_upload_count,
    check_upload_size,
    error_response,
    health_view,
    job_view,
    result_view,
    unknown_task,
    wait_done,
)
from aiohttp import web

import qwen_edit_async as qe

CLIENT = web.AppKey("qwen_client", qe.QwenEditClient)
JOBS = web.AppKey("qwen_jobs", JobRegistry)
SESSION = web.AppKey("http_session", aiohttp.ClientSession)
SETTINGS = web.AppKey("qwen_settings", Settings)
CLIENT_OPTIONS = web.AppKey("qwen_client_options", dict)

routes = web.RouteTableDef()


# -- lifecycle ----------------------------------------------------------------------------


async def http_session(app: web.Application) -> AsyncIterator[None]:
    """The app's one outgoing HTTP session, closed by the app when it stops."""
    # Sized for the client's own needs: jobs in flight + status requests + downloads
    # (aiohttp's default of 100 would quietly cap them), plus room for the app's calls.
    defaults = qe.ClientConfig()
    # Status requests: up to max_in_flight at once unless poll_concurrency is set.
    limit = 2 * app[SETTINGS].max_in_flight
    limit += defaults.download_concurrency + 32
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:
        app[SESSION] = session
        yield


async def qwen_client(app: web.Application) -> AsyncIterator[None]:
    """The app's one client on the shared session; it never closes that session."""
    client = app[SETTINGS].client(session=app[SESSION], **app[CLIENT_OPTIONS])
    async with client:
        app[CLIENT] = client
        app[JOBS] = JobRegistry(client)
        yield
    # Unfinished jobs are cancelled here (their tasks can be re-attached by id).


# -- errors -------------------------------------------------------------------------------


@web.middleware
async def library_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every library error becomes the HTTP answer of ``_backend.error_response``."""
    try:
        return await handler(request)
    except qe.QwenEditError as exc:
        answer = error_response(exc)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)


# -- input --------------------------------------------------------------------------------


def _number(form: Any, name: str, kind: type[int] | type[float]) -> Any:
    text = form.get(name)
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return kind(text)
    except (TypeError, ValueError):
        word = "an integer" if kind is int else "a number"
        raise qe.ValidationError(f"{name}: {text!r} is not {word}", field=name) from None


async def read_edit(request: web.Request) -> EditInput:
    """The multipart form: ``images`` (1-3 files), ``prompt``, ``n``, ``size``, ``seed``,
    ``model``, ``job_timeout``; 422 naming the field for anything out of rule."""
    if request.content_type != "multipart/form-data":
        raise qe.ValidationError(
            "images: send a multipart/form-data body with 1 to 3 image files", field="images"
        )
    form = await request.post()
    files = [f for f in form.getall("images", []) if isinstance(f, web.FileField)]
    check_upload_count(len(files))
    images = []
    for index, upload in enumerate(files):
        data = upload.file.read()  # already spooled by request.post(), within client_max_size
        check_upload_size(index, data)
        images.append(data)
    prompt = form.get("prompt", "")
    return EditInput.build(
        images,
        prompt if isinstance(prompt, str) else "",
        n=_number(form, "n", int),
        size=_text(form, "size"),
        seed=_number(form, "seed", int),
        model=_text(form, "model"),
        job_timeout=_number(form, "job_timeout", float),
    )


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value.strip() else None


# -- handlers -----------------------------------------------------------------------------


@routes.post("/edits")
async def create_edit(request: web.Request) -> web.Response:
    """Edit and wait for the result (fine for short edits; else use ``POST /jobs``)."""
    client = request.app[CLIENT]
    edit = await read_edit(request)
    req = edit.request
    result = await client.edit(
        req.images,
        req.prompt,
        model=edit.model,
        job_timeout=edit.timeout(client),
        n=req.n,
        size=req.size,
        seed=req.seed,
    )
    return web.json_response(result_view(result))


@routes.post("/jobs")
async def create_job(request: web.Request) -> web.Response:
    """Start an edit; answer 202 with its id once the provider accepted it."""
    client = request.app[CLIENT]
    edit = await read_edit(request)
    job = await client.submit(edit.request, model=edit.model, job_timeout=edit.timeout(client))
    request.app[JOBS].add(job)
    return web.json_response(
        await job_view(job), status=202, headers={"Location": f"/jobs/{job.id}"}
    )


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """A job's status, and its result or error once it ended (a failed job is still 200)."""
    jobs = request.app[JOBS]
    job_id = request.match_info["job_id"]
    wait = _number(request.query, "wait", float) or 0.0
    if not 0 <= wait <= MAX_WAIT:
        raise qe.ValidationError(f"wait: {wait:g} must be from 0 to {MAX_WAIT:g}", field="wait")
    job = await jobs.find(job_id)
    if job is not None and wait:
        await wait_done(job, wait)
    if job is None or unknown_task(job):
        jobs.forget(job_id)
        return web.json_response(NOT_FOUND, status=404)
    return web.json_response(await job_view(job))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response(health_view(request.app[CLIENT]))


def create_app(settings: Settings | None = None, **client_options: Any) -> web.Application:
    """The app. ``settings`` default to the environment (:meth:`Settings.from_env`);
    ``client_options`` go to :class:`qe.QwenEditClient` (``uploader=``, ``job_timeout=``...)."""
    app = web.Application(middlewares=[library_errors], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings or Settings.from_env()
    receiver = callback_receiver(app[SETTINGS])
    if receiver is not None:
        # Each job's end is POSTed to <path>/<its token>; the receiver completes the job.
        app.router.add_post(receiver.path + "/{token}", receiver.aiohttp_handler)
        client_options = {**client_options, "callbacks": receiver}
    app[CLIENT_OPTIONS] = client_options
    app.cleanup_ctx.append(http_session)
    app.cleanup_ctx.append(qwen_client)  # after the session: it is closed before it
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port)
