"""Each provider's answers: error shapes and statuses, sync results, task objects.

Pure functions from neutral inputs (a :class:`Problem`, a :class:`Job`) to
``(status, body)``; the server encodes the body as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._faults import Faults
from ._jobs import Job
from ._problems import Kind, Problem
from ._relay import relay_error, vtrix_balance_body

__all__ = [
    "FAILURE_MESSAGES",
    "dashscope_refusal",
    "dashscope_success",
    "evolink_created",
    "evolink_refusal",
    "evolink_task",
    "gateway_refusal",
    "openai_success",
    "task_failure_problem",
    "vtrix_created",
    "vtrix_refusal",
    "vtrix_task",
]

FAILURE_MESSAGES: dict[str, str] = {
    "content_filter": "Input data may contain inappropriate content.",
    "quota": "Access denied, please make sure your account is in good standing.",
    "fail": "Generation failed: the model returned no image.",
}

# DashScope: (HTTP status, code). ModelStream and OneToken relay these codes.
_DASHSCOPE: dict[Kind, tuple[int, str]] = {
    "invalid": (400, "InvalidParameter"),
    "bad_json": (400, "InvalidParameter"),
    "empty_model": (400, "BadRequest.EmptyModel"),
    "empty_input": (400, "BadRequest.EmptyInput"),
    "unknown_model": (400, "InvalidParameter"),
    "bad_url": (400, "InvalidURL"),
    "download_failed": (415, "BadRequest.InputDownloadFailed"),
    "unsupported_format": (415, "BadRequest.UnsupportedFileFormat"),
    "too_large": (413, "BadRequest.TooLarge"),
    "auth": (401, "InvalidApiKey"),
    "async_refused": (403, "AccessDenied"),
    "rate_limit": (429, "Throttling"),
    "concurrency": (429, "Throttling.RateQuota"),
    "rate_quota": (429, "Throttling.RateQuota"),
    "server_error": (500, "InternalError"),
    "content_filter": (400, "DataInspectionFailed"),
    "quota": (400, "Arrearage"),
    "generation_failed": (500, "InternalError.Algo"),
    "not_found": (404, "NotFound"),
    "poll_error": (503, "ServiceUnavailable"),
    "upstream": (400, "InvalidParameter"),
}

# The gateways' own codes where the gateway (not DashScope) refuses the request.
_GATEWAY_CODES: dict[Kind, str] = {
    "auth": "invalid_api_key",
    "bad_json": "invalid_request",
    "unknown_model": "model_not_found",
    "empty_model": "model_not_found",
    "rate_limit": "rate_limit_exceeded",
    "concurrency": "rate_limit_exceeded",
    "rate_quota": "rate_limit_exceeded",
}

_EVOLINK: dict[Kind, tuple[int, str]] = {
    "invalid": (400, "invalid_parameters"),
    "bad_json": (400, "invalid_request"),
    "empty_model": (400, "invalid_parameters"),
    "empty_input": (400, "invalid_parameters"),
    "unknown_model": (400, "model_not_found"),
    "bad_url": (400, "invalid_parameters"),
    "download_failed": (400, "invalid_parameters"),
    "unsupported_format": (400, "invalid_parameters"),
    "too_large": (413, "request_too_large"),
    "auth": (401, "unauthorized"),
    "async_refused": (403, "forbidden"),
    "rate_limit": (429, "rate_limit_exceeded"),
    "concurrency": (429, "rate_limit_exceeded"),
    "rate_quota": (429, "rate_limit_exceeded"),
    "server_error": (500, "internal_error"),
    "content_filter": (400, "content_policy_violation"),
    "quota": (402, "quota_exceeded"),
    "generation_failed": (500, "generation_failed_no_content"),
    "not_found": (404, "invalid_task_id"),
    "poll_error": (503, "service_unavailable"),
    "upstream": (400, "invalid_parameters"),
}

_VTRIX_STATUS: dict[Kind, int] = {
    "auth": 401,
    "quota": 403,
    "async_refused": 403,
    "rate_limit": 429,
    "concurrency": 429,
    "rate_quota": 429,
    "not_found": 404,
    "too_large": 413,
    "download_failed": 400,
    "unsupported_format": 400,
    "server_error": 500,
    "generation_failed": 500,
    "poll_error": 503,
}

_SERVER_CODES = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def dashscope_refusal(problem: Problem, request_id: str) -> tuple[int, dict[str, Any]]:
    """DashScope's flat ``{"request_id", "code", "message"}`` error."""
    status, code = _DASHSCOPE[problem.kind]
    body = {"request_id": request_id, "code": problem.code or code, "message": problem.message}
    return problem.status or status, body


def gateway_refusal(problem: Problem, faults: Faults) -> tuple[int, dict[str, Any]]:
    """ModelStream's and OneToken's OpenAI-shaped error around DashScope's code, or the
    relay's rewrapped one (``faults.relay``) where DashScope refused the request."""
    kind = problem.kind
    status, code = _DASHSCOPE[kind]
    status = problem.status or status
    if faults.relay and kind not in _GATEWAY_CODES:
        # DashScope refused it: the relay keeps the status and message, not the code.
        return status, relay_error(status, problem.message, faults.relay_code)
    code = _GATEWAY_CODES.get(kind, problem.code or code)
    error = {
        "message": problem.message,
        "type": _openai_type(status),
        "param": problem.param,
        "code": code,
    }
    return status, {"error": error}


def evolink_refusal(problem: Problem, faults: Faults) -> tuple[int, dict[str, Any]]:
    """Evolink's OpenAI-shaped error; ``faults.evolink_int_codes``: the older integer codes."""
    kind = problem.kind
    status, code = _EVOLINK[kind]
    status = problem.status or status
    if kind == "server_error":
        code = _SERVER_CODES.get(status, code)
    code = problem.code or code
    wire_code: str | int = status if faults.evolink_int_codes else code
    error: dict[str, Any] = {
        "code": wire_code,
        "message": problem.message,
        "type": "invalid_request_error" if status < 500 else "api_error",
    }
    if status in (401, 429):
        error["type"] = _openai_type(status)
    error["param"] = "task_id" if kind == "not_found" else problem.param
    return status, {"error": error}


def vtrix_refusal(problem: Problem, request_id: str) -> tuple[int, dict[str, Any]]:
    """Vtrix: a bare ``{"message": ...}`` for refusals, ``{"error": ...}`` for server
    failures, its balance body for an empty account."""
    kind = problem.kind
    status = problem.status or _VTRIX_STATUS.get(kind, 400)
    if kind == "quota":
        return status, vtrix_balance_body(request_id)
    key = "error" if status >= 500 else "message"
    body = {key: problem.message, "request_id": request_id}
    if problem.code is not None and kind == "upstream":
        body["code"] = problem.code
    return status, body


def task_failure_problem(job: Job) -> Problem:
    """The refusal a sync dialect sends for a job whose outcome is a failure."""
    if job.outcome == "content_filter":
        return Problem("content_filter", FAILURE_MESSAGES["content_filter"])
    if job.outcome == "quota":
        return Problem("quota", FAILURE_MESSAGES["quota"])
    return Problem("generation_failed", FAILURE_MESSAGES["fail"], code=job.fail_code)


def dashscope_success(job: Job, urls: list[str], request_id: str) -> dict[str, Any]:
    """The native answer: every image in one choice's content, plus ``usage``."""
    return {
        "output": {
            "choices": [
                {
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": [{"image": url} for url in urls],
                    },
                }
            ]
        },
        "usage": {"width": job.width, "height": job.height, "image_count": len(urls)},
        "request_id": request_id,
    }


def openai_success(
    job: Job, urls: list[str] | None, b64: list[str] | None = None
) -> dict[str, Any]:
    """ModelStream/OneToken: ``{"created", "data": [{"url", "b64_json", "revised_prompt"}]}``."""
    items: list[dict[str, Any]] = []
    for i in range(job.n):
        items.append(
            {
                "url": urls[i] if urls is not None else None,
                "b64_json": b64[i] if b64 is not None else None,
                "revised_prompt": job.revised_prompt,
            }
        )
    return {"created": int(job.created_at), "data": items}


_EVOLINK_TASK_CODES = {"content_filter": "content_policy_violation", "quota": "quota_exceeded"}


def _evolink_usage(job: Job) -> dict[str, Any]:
    return {"billing_rule": "per_call", "credits_reserved": job.n, "user_group": "default"}


def evolink_created(job: Job, estimated_time: int | None) -> dict[str, Any]:
    """The task object Evolink answers a create with (``pending``, progress 0)."""
    task_info: dict[str, Any] = {"can_cancel": True}
    if estimated_time is not None:
        task_info["estimated_time"] = estimated_time
    return {
        "created": int(job.created_at),
        "id": job.id,
        "model": job.model,
        "object": "image.generation.task",
        "progress": 0,
        "status": "pending",
        "task_info": task_info,
        "type": "image",
        "usage": _evolink_usage(job),
    }


def evolink_task(
    job: Job,
    now: float,
    urls: Callable[[Job], list[str]],
    estimated_time: int | None,
    results_delay: float = 0.0,
) -> tuple[dict[str, Any], bool]:
    """The polled task object and whether it is finished.

    For ``results_delay`` seconds after it succeeds, the task says ``completed`` with
    ``results`` null and progress below 100, as Evolink does before attaching results.
    """
    phase = job.phase(now)
    body: dict[str, Any] = {
        "created": int(job.created_at),
        "id": job.id,
        "model": job.model,
        "object": "image.generation.task",
        "type": "image",
        "usage": _evolink_usage(job),
    }
    if phase == "succeeded" and now < job.end_mono + results_delay:
        body.update(status="completed", progress=95, results=None, task_info={"can_cancel": False})
        return body, False
    if phase == "succeeded":
        body.update(
            status="completed", progress=100, results=urls(job), task_info={"can_cancel": False}
        )
        return body, True
    if phase == "failed":
        code = job.fail_code or _EVOLINK_TASK_CODES.get(job.outcome, "generation_failed_no_content")
        message = FAILURE_MESSAGES.get(job.outcome, FAILURE_MESSAGES["fail"])
        body.update(
            status="failed",
            progress=0,
            task_info={"can_cancel": False},
            error={"code": code, "message": message, "type": "task_error"},
        )
        return body, True
    task_info: dict[str, Any] = {"can_cancel": True}
    if estimated_time is not None:
        task_info["estimated_time"] = estimated_time
    if phase == "pending":
        body.update(status="pending", progress=0, task_info=task_info)
    else:
        progress = max(1, min(99, int(job.progress(now) * 100)))
        body.update(status="processing", progress=progress, task_info=task_info)
    return body, False


def vtrix_created(job: Job) -> dict[str, Any]:
    """Vtrix's create answer."""
    return {"id": job.id, "status": "in_progress", "model": job.model}


_VTRIX_INT_CODES = {"content_filter": 1301, "quota": 1402, "fail": 1500}
_VTRIX_STR_CODES = {
    "content_filter": "DataInspectionFailed",
    "quota": "Arrearage",
    "fail": "InternalError.Algo",
}


def _vtrix_error(job: Job, form: str) -> Any:
    outcome = job.outcome if job.outcome in FAILURE_MESSAGES else "fail"
    message = FAILURE_MESSAGES[outcome]
    str_code = job.fail_code or _VTRIX_STR_CODES[outcome]
    if form == "string":
        return f"{str_code}: {message}"
    if form == "int_code":
        return {"code": _VTRIX_INT_CODES[outcome], "error_message": message}
    return {"code": str_code, "message": message}


def vtrix_task(
    job: Job,
    now: float,
    urls: Callable[[Job], list[str]],
    error_form: str,
    item_type: str = "image",
) -> tuple[dict[str, Any], bool]:
    """The polled Vtrix task and whether it is finished. ``item_type="image_url"`` writes
    result items as its CLI shows them: ``{"type": "image_url", "image_url": {"url": ...}}``."""
    phase = job.phase(now)
    body: dict[str, Any] = {"id": job.id, "model": job.model}
    if phase == "succeeded":
        if item_type == "image_url":
            items = [{"type": "image_url", "image_url": {"url": url}} for url in urls(job)]
        else:
            items = [{"type": "image", "url": url} for url in urls(job)]
        body.update(
            status="completed",
            progress=1,
            output=[{"content": items}],
            usage={"cost": f"{0.03 * job.n:.2f}", "quantity": job.n, "unit_price": "0.03"},
            metadata={},
        )
        return body, True
    if phase == "failed":
        body.update(status="failed", progress=0, error=_vtrix_error(job, error_form), metadata={})
        return body, True
    body.update(status="in_progress", progress=round(job.progress(now), 3))
    return body, False
