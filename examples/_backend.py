"""What the FastAPI and aiohttp examples share, so both answer the same way.

- :class:`Settings`: provider, base URL, in-flight cap... from ``QWEN_EDIT_*`` variables.
- :func:`error_response`: the one library error -> HTTP status table.
- :class:`EditInput`: an upload (1-3 images, a prompt, options) checked before any work.
- :class:`JobRegistry`: the jobs this process started or re-attached to, by id.
- :func:`result_view`, :func:`job_view`, :func:`health_view`: the JSON bodies.

Neither framework is imported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import anyio

import qwen_edit_async as qe

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_WAIT",
    "NOT_FOUND",
    "EditInput",
    "HttpError",
    "JobRegistry",
    "Settings",
    "callback_receiver",
    "check_upload_count",
    "check_upload_size",
    "error_response",
    "health_view",
    "invalid",
    "job_view",
    "result_view",
    "unknown_task",
    "wait_done",
]

logger = logging.getLogger("qwen_edit_async.examples")

# The API's own limits (1-3 images, 10 MB each), checked here too so that a request with
# 50 files or a 2 GB file is refused before it is read into memory.
MAX_IMAGES = 3
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES = MAX_IMAGES * MAX_IMAGE_BYTES + 1024 * 1024
#: The longest ``GET /jobs/{id}?wait=`` a caller may ask for, in seconds.
MAX_WAIT = 30.0


# -- settings -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """How the app's one client is built.

    ``api_key=None`` leaves the key to the library: ``QWEN_EDIT_API_KEY``, else the
    provider's own variable (``DASHSCOPE_API_KEY``, ``EVOLINK_API_KEY``...). The app never
    reads, stores or prints it.
    """

    provider: str = "dashscope"
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    model: str | None = None
    max_in_flight: int = 16
    #: Seconds per job; ``None`` keeps the library's default. Callers may only shorten it.
    job_timeout: float | None = None
    #: The public https URL at which the provider reaches this app's callback receiver
    #: (Evolink only), e.g. ``https://api.example.com/qe``; ``None``: jobs are polled.
    callback_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """``QWEN_EDIT_PROVIDER``, ``QWEN_EDIT_BASE_URL``, ``QWEN_EDIT_MODEL``,
        ``QWEN_EDIT_MAX_IN_FLIGHT``, ``QWEN_EDIT_JOB_TIMEOUT``, ``QWEN_EDIT_CALLBACK_URL``
        (all optional)."""
        env = os.environ if environ is None else environ

        def number(name: str, kind: type[int] | type[float]) -> Any:
            text = env.get(name, "").strip()
            if not text:
                return None
            try:
                return kind(text)
            except ValueError:
                raise qe.ConfigurationError(f"{name}={text!r} is not a number") from None

        return cls(
            provider=env.get("QWEN_EDIT_PROVIDER", "").strip() or "dashscope",
            base_url=env.get("QWEN_EDIT_BASE_URL", "").strip() or None,
            model=env.get("QWEN_EDIT_MODEL", "").strip() or None,
            max_in_flight=_or(number("QWEN_EDIT_MAX_IN_FLIGHT", int), 16),
            job_timeout=number("QWEN_EDIT_JOB_TIMEOUT", float),
            callback_url=_callback_url(env),
        )

    def client(self, **options: Any) -> qe.QwenEditClient:
        """A new (not yet opened) client; ``options`` go to :class:`qe.QwenEditClient`
        (``session=``, ``uploader=``, any :class:`qe.ClientConfig` field)."""
        if self.job_timeout is not None:
            options.setdefault("job_timeout", self.job_timeout)
        return qe.QwenEditClient(
            # A name read at run time is a plain str: the registry turns it into a provider
            # (the client's ``provider`` takes the known names or a Provider, for mypy).
            qe.providers.get_provider(self.provider),
            api_key=self.api_key,
            base_url=self.base_url,
            model=self.model,
            max_in_flight=self.max_in_flight,
            **options,
        )


def _callback_url(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("QWEN_EDIT_CALLBACK_URL", "").strip() or None


def callback_receiver(settings: Settings | None) -> qe.CallbackReceiver | None:
    """The app's callback receiver when a callback URL is set (``settings`` ``None``: from
    ``QWEN_EDIT_CALLBACK_URL``). The app serves it at the URL's path, and the client gets
    it as ``callbacks=``: each job then ends as soon as the provider calls back."""
    url = settings.callback_url if settings is not None else _callback_url()
    return qe.CallbackReceiver(url) if url else None


def _or(value: Any, default: Any) -> Any:
    # Not ``value or default``: an explicit 0 must reach the library and be refused there.
    return default if value is None else value


# -- errors -> HTTP -----------------------------------------------------------------------


class HttpError(NamedTuple):
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


# First match wins, so subclasses come before their bases. A ``None`` message means the
# library's message is shown; a text replaces it where the detail is ours, not the caller's
# (a refused key, an empty balance) or the provider's internals.
_TABLE: tuple[tuple[type[BaseException], int, str | None], ...] = (
    (qe.ValidationError, 422, None),
    (qe.ContentFilterError, 422, None),
    (qe.BadRequestError, 422, None),  # the provider refused this input
    (qe.RateLimitError, 429, None),
    (qe.AuthenticationError, 500, "the image service is misconfigured"),
    (qe.PermissionDeniedError, 500, "the image service is misconfigured"),
    (qe.ConfigurationError, 500, "the image service is misconfigured"),
    (qe.InsufficientQuotaError, 503, "the image service is unavailable"),
    (qe.JobCancelledError, 503, "the server is shutting down; try again"),
    (qe.JobTimeoutError, 504, None),
    (
        qe.SubmitUncertainError,
        502,
        "the image provider did not answer; the edit may have been created anyway",
    ),
    (qe.TransportError, 502, "the image provider could not be reached"),
    (qe.ServerError, 502, "the image provider failed; try again later"),
    (qe.JobFailedError, 502, "the image provider could not make this edit"),
    (qe.DownloadError, 502, "a result image could not be fetched"),
    (qe.QwenEditError, 502, "the image provider failed"),
)

#: The body of ``GET /jobs/{id}`` for an id that is no job here nor a task of the provider.
NOT_FOUND: dict[str, Any] = {"error": {"type": "NotFound", "message": "no such job"}}

#: ``Retry-After`` sent with a 429 when the provider did not say how long to wait.
DEFAULT_RETRY_AFTER = 5


def error_response(exc: BaseException) -> HttpError:
    """The HTTP answer for a library error: status, headers and a JSON body.

    The body is ``{"error": {"type", "message", ...}}`` with ``field`` (422 validation),
    ``retry_after`` (429), ``task_id`` and ``request_id`` when known. Nothing in it comes
    from the API key, and 5xx answers do not repeat the provider's message.
    """
    status, public = 500, "internal error"
    for cls, code, text in _TABLE:
        if isinstance(exc, cls):
            status, public = code, text if text is not None else _message(exc)
            break
    error: dict[str, Any] = {"type": type(exc).__name__, "message": public}
    headers: dict[str, str] = {}
    if isinstance(exc, qe.ValidationError) and exc.field:
        error["field"] = exc.field
    if isinstance(exc, qe.RateLimitError):
        wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
        error["retry_after"] = max(1, math.ceil(wait))
        headers["Retry-After"] = str(error["retry_after"])
    if isinstance(exc, qe.QwenEditError):
        if exc.code is not None and status < 500:
            error["code"] = exc.code
        for name in ("task_id", "request_id"):
            if getattr(exc, name) is not None:
                error[name] = getattr(exc, name)
        if isinstance(exc, qe.JobTimeoutError) and exc.task_id:
            error["status_url"] = f"/jobs/{exc.task_id}"
    if status >= 500:
        # str(exc) never holds the key, but a refused key's echo in a provider message
        # might: for our own misconfiguration log the class and ids only.
        detail = exc if status != 500 else f"code={getattr(exc, 'code', None)}"
        logger.warning("%s -> HTTP %d: %s", type(exc).__name__, status, detail)
    return HttpError(status, headers, {"error": error})


def invalid(field: str, message: str) -> HttpError:
    """A 422 for input the framework refused before the library saw it (``n=abc``)."""
    return error_response(qe.ValidationError(f"{field}: {message}", field=field))


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, qe.QwenEditError) else str(exc)


# -- input --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EditInput:
    """One edit as received: validated by :class:`qe.EditRequest` on construction."""

    request: qe.EditRequest
    model: str | None = None
    job_timeout: float | None = None

    @classmethod
    def build(
        cls,
        images: Sequence[bytes],
        prompt: str,
        *,
        n: int | None = None,
        size: str | None = None,
        seed: int | None = None,
        model: str | None = None,
        job_timeout: float | None = None,
    ) -> EditInput:
        """Raise :class:`qe.ValidationError` naming the field for anything out of rule."""
        if job_timeout is not None and not (math.isfinite(job_timeout) and job_timeout > 0):
            raise qe.ValidationError(
                f"job_timeout: {job_timeout} must be a number of seconds above 0",
                field="job_timeout",
            )
        request = qe.EditRequest(
            images=list(images), prompt=prompt, n=n, size=size or None, seed=seed
        )
        return cls(request, model or None, job_timeout)

    def timeout(self, client: qe.QwenEditClient) -> Any:
        """The job timeout for this call: the caller's, capped by the app's own.

        Note ``None`` would *disable* the deadline: "not given" is ``USE_CLIENT_DEFAULT``.
        """
        if self.job_timeout is None:
            return qe.USE_CLIENT_DEFAULT
        limit = client.config.job_timeout
        if limit is not None and self.job_timeout > limit:
            raise qe.ValidationError(
                f"job_timeout: {self.job_timeout:g} s is above this server's limit of {limit:g} s",
                field="job_timeout",
            )
        return self.job_timeout


def check_upload_count(count: int) -> None:
    """Refuse more than three files before reading any of them."""
    if count > MAX_IMAGES:
        raise qe.ValidationError(
            f"images: {count} given; an edit takes 1 to {MAX_IMAGES} images", field="images"
        )


def check_upload_size(index: int, data: bytes) -> None:
    """Refuse a file larger than the API takes (read at most ``MAX_IMAGE_BYTES + 1``)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise qe.ValidationError(
            f"images[{index}]: larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB",
            field=f"images[{index}]",
        )


# -- jobs ---------------------------------------------------------------------------------


class JobRegistry:
    """The jobs of this process by id, and re-attachment to tasks it does not know.

    Unfinished jobs hold a client slot, so there are at most about ``max_in_flight`` of
    them; finished ones are kept for lookups until ``capacity``, oldest dropped first (the
    task can still be re-attached by id on task providers). Attaching takes a client slot
    like any job, so while all ``max_in_flight`` slots are busy a lookup of an unknown id
    waits for one.
    """

    def __init__(self, client: qe.QwenEditClient, *, capacity: int = 10_000) -> None:
        self._client = client
        self._capacity = capacity
        self._jobs: OrderedDict[str, qe.Job] = OrderedDict()
        # One attach at a time: two GETs for the same unknown id must not watch it twice.
        self._attach = anyio.Lock()

    def add(self, job: qe.Job) -> None:
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        if len(self._jobs) > self._capacity:
            for key in [k for k, j in self._jobs.items() if j.done()]:
                del self._jobs[key]
                if len(self._jobs) <= self._capacity:
                    break

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def find(self, job_id: str) -> qe.Job | None:
        """The job with this id: known here, else re-attached (task providers only).

        A job that ended by its local deadline is re-attached too: the task may have
        finished since. ``None`` when the id cannot be a job here.
        """
        job = self._jobs.get(job_id)
        if job is not None and not self._stale(job):
            return job
        if not self._client.provider.is_task:
            return job
        async with self._attach:
            job = self._jobs.get(job_id)
            if job is not None and not self._stale(job):
                return job
            try:
                job = await self._client.attach(job_id)
            except (qe.ValidationError, qe.TaskNotFoundError):
                return None  # attach asked the provider: there is no such task
            self.add(job)
            return job

    @staticmethod
    def _stale(job: qe.Job) -> bool:
        return job.task_id is not None and isinstance(
            job.exception(), (qe.JobTimeoutError, qe.JobCancelledError)
        )


async def wait_done(job: qe.Job, seconds: float) -> None:
    """Wait up to ``seconds`` for ``job`` to end, without raising its error."""
    with anyio.move_on_after(seconds), contextlib.suppress(Exception):
        await job.result()


def unknown_task(job: qe.Job) -> bool:
    """Whether the provider said it has no such task (HTTP 404 to the status request)."""
    error = job.exception()
    return isinstance(error, qe.APIError) and error.status == 404


# -- views --------------------------------------------------------------------------------


def result_view(result: qe.EditResult) -> dict[str, Any]:
    """``{"urls": [...], "images": [...], "task_id", "request_id", "provider", "model"}``."""
    return {
        "urls": result.urls,
        "images": [_image_view(image) for image in result.images],
        "task_id": result.task_id,
        "request_id": result.request_id,
        "provider": result.provider,
        "model": result.model,
    }


def _image_view(image: qe.GeneratedImage) -> dict[str, Any]:
    fields = {"url": image.url, "b64_json": image.b64_json, "revised_prompt": image.revised_prompt}
    return {name: value for name, value in fields.items() if value is not None}


def health_view(client: qe.QwenEditClient) -> dict[str, Any]:
    """``GET /healthz``: the client's counters (jobs in flight, waiting for a slot...)."""
    stats = client.statistics()
    return {
        "status": "ok",
        "in_flight": stats.in_flight,
        "waiting": stats.waiting,
        "polling": stats.polling,
        "completed": stats.completed,
        "failed": stats.failed,
        "completed_by_callback": stats.completed_by_callback,
        "completed_by_poll": stats.completed_by_poll,
    }


async def job_view(job: qe.Job) -> dict[str, Any]:
    """``{"id", "status", "task_id", "result" | "error"}`` (the error as :func:`error_response`
    renders it, with the HTTP status it would have had)."""
    view: dict[str, Any] = {"id": job.id, "status": job.status.value, "task_id": job.task_id}
    if job.done():
        error = job.exception()
        if error is None:
            view["result"] = result_view(await job.result())
        else:
            answer = error_response(error)
            view["error"] = {**answer.body["error"], "http_status": answer.status}
    return view
