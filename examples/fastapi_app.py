"""A FastAPI backend holding one QwenEditClient for the life of the app.

Run it (the key is read by the library from QWEN_EDIT_API_KEY or the provider's variable)::

    QWEN_EDIT_PROVIDER=dashscope-intl DASHSCOPE_API_KEY=sk-... \\
        uvicorn fastapi_app:app --app-dir examples --port 8000

    # or against a local fake provider:
    python -m qwen_edit_async.testing --port 8001 &
    QWEN_EDIT_PROVIDER=vtrix QWEN_EDIT_BASE_URL=http://127.0.0.1:8001 QWEN_EDIT_API_KEY=any \\
        uvicorn fastapi_app:app --app-dir examples --port 8000

    curl -F images=@cat.png -F prompt="Give the cat a red hat" -F n=2 localhost:8000/edits

Endpoints:

- ``POST /edits`` (multipart: ``images`` 1-3 files, ``prompt``, optional ``n``, ``size``,
  ``seed``, ``model``, ``job_timeout``) waits for the edit and answers its image URLs.
- ``POST /jobs`` (same form) answers ``202`` with the job id once the provider accepted it;
  ``GET /jobs/{id}?wait=SECONDS`` reports its status and result. An id this process does
  not know is re-attached (task providers: Evolink, Vtrix), so ids survive a restart.
- ``GET /healthz``: the client's counters.
- With ``QWEN_EDIT_CALLBACK_URL=https://api.example.com/qe`` (Evolink): ``POST /qe/{token}``
  receives the provider's completion callbacks (the receiver is an ASGI app, mounted).

Library errors become HTTP answers in one place, ``_backend.error_response``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

from _backend import (
    MAX_IMAGE_BYTES,
    MAX_WAIT,
    NOT_FOUND,
    EditInput,
    HttpError,
    JobRegistry,
    Settings,
    callback_receiver,
    check_upload_count,
    check_upload_size,
    error_response,
    health_view,
    invalid,
    job_view,
    result_view,
    unknown_task,
    wait_done,
)
from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import qwen_edit_async as qe


class State(TypedDict):
    """What the lifespan hands to every request (``request.state``)."""

    qwen: qe.QwenEditClient
    jobs: JobRegistry


def get_client(request: Request) -> qe.QwenEditClient:
    """The app's one client (a dependency: ``client: Client``)."""
    client: qe.QwenEditClient = request.state.qwen
    return client


def get_jobs(request: Request) -> JobRegistry:
    jobs: JobRegistry = request.state.jobs
    return jobs


Client = Annotated[qe.QwenEditClient, Depends(get_client)]
Jobs = Annotated[JobRegistry, Depends(get_jobs)]


async def edit_input(
    images: Annotated[list[UploadFile], File(description="1 to 3 images, in prompt order")],
    prompt: Annotated[str, Form(description="the instruction")],
    n: Annotated[int | None, Form(description="output images, 1-6")] = None,
    size: Annotated[str | None, Form(description="'W*H', each side 512-2048")] = None,
    seed: Annotated[int | None, Form()] = None,
    model: Annotated[str | None, Form(description="override the app's model")] = None,
    job_timeout: Annotated[float | None, Form(description="seconds; at most the app's")] = None,
) -> EditInput:
    """The multipart form, checked by the library's own rules (422 naming the field)."""
    check_upload_count(len(images))
    data = []
    for index, upload in enumerate(images):
        content = await upload.read(MAX_IMAGE_BYTES + 1)
        check_upload_size(index, content)
        data.append(content)
    return EditInput.build(
        data, prompt, n=n, size=size, seed=seed, model=model, job_timeout=job_timeout
    )


Edit = Annotated[EditInput, Depends(edit_input)]
router = APIRouter()


@router.post("/edits")
async def create_edit(client: Client, edit: Edit) -> dict[str, Any]:
    """Edit and wait for the result (fine for short edits; else use ``POST /jobs``)."""
    request = edit.request
    result = await client.edit(
        request.images,
        request.prompt,
        model=edit.model,
        job_timeout=edit.timeout(client),
        n=request.n,
        size=request.size,
        seed=request.seed,
    )
    return result_view(result)


@router.post("/jobs", status_code=202)
async def create_job(client: Client, jobs: Jobs, edit: Edit) -> JSONResponse:
    """Start an edit; answer its id once the provider accepted it."""
    job = await client.submit(edit.request, model=edit.model, job_timeout=edit.timeout(client))
    jobs.add(job)
    return JSONResponse(
        await job_view(job), status_code=202, headers={"Location": f"/jobs/{job.id}"}
    )


@router.get("/jobs/{job_id}")
async def get_job(
    jobs: Jobs,
    job_id: str,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="seconds to wait for the end")] = 0,
) -> JSONResponse:
    """A job's status, and its result or error once it ended (a failed job is still 200)."""
    job = await jobs.find(job_id)
    if job is not None and wait:
        await wait_done(job, wait)
    if job is None or unknown_task(job):
        jobs.forget(job_id)
        return JSONResponse(NOT_FOUND, status_code=404)
    return JSONResponse(await job_view(job))


@router.get("/healthz")
async def healthz(client: Client) -> dict[str, Any]:
    return health_view(client)


def _json(answer: HttpError) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


async def on_library_error(request: Request, exc: Exception) -> JSONResponse:
    return _json(error_response(exc))


async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own checks (n=abc, no prompt) answer in the same shape as the library's.
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    names = [part for part in first.get("loc", ()) if isinstance(part, str)]
    field = names[-1] if names else "request"
    return _json(invalid(field, str(first.get("msg", "invalid"))))


def create_app(settings: Settings | None = None, **client_options: Any) -> FastAPI:
    """The app. ``settings`` default to the environment (:meth:`Settings.from_env`),
    read at startup; ``client_options`` go to :class:`qe.QwenEditClient` (``uploader=``,
    ``poll_initial=``...)."""

    receiver = callback_receiver(settings)
    if receiver is not None:
        client_options = {**client_options, "callbacks": receiver}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        # A missing key or unknown provider fails here, at startup, not on every request.
        client = (settings or Settings.from_env()).client(**client_options)
        async with client:
            yield {"qwen": client, "jobs": JobRegistry(client)}
        # Leaving the block cancels unfinished jobs (their tasks can be re-attached by id)
        # and closes the client's HTTP session.

    app = FastAPI(title="qwen-image-edit backend", lifespan=lifespan)
    app.include_router(router)
    if receiver is not None:
        # Each job's end is POSTed to <path>/<its token>; the receiver completes the job.
        app.mount(receiver.path, receiver)
    app.add_exception_handler(qe.QwenEditError, on_library_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
