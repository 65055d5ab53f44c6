"""A refusal in neutral terms; each dialect renders it in its own status and error shape."""

from __future__ import annotations

from typing import Literal

__all__ = ["Kind", "Problem"]

Kind = Literal[
    "invalid",  # a parameter breaks a documented rule
    "bad_json",  # the body is not a JSON object
    "empty_model",  # no model given
    "empty_input",  # no input / messages given
    "unknown_model",  # a model id this dialect does not sell
    "bad_url",  # an image reference that is not a URL or data URI this dialect takes
    "download_failed",  # an image URL the provider cannot fetch
    "unsupported_format",  # image bytes that are not a known image format
    "too_large",  # body or image over the size limit
    "auth",  # missing or wrong API key
    "async_refused",  # DashScope: X-DashScope-Async on a sync-only model
    "rate_limit",  # injected throttling
    "concurrency",  # max_running reached
    "rate_quota",  # max_rate or the burst guard refused the request
    "server_error",  # injected 5xx
    "content_filter",  # moderation
    "quota",  # out of funds
    "generation_failed",  # the model failed
    "not_found",  # unknown task id
    "poll_error",  # injected failure of a status request
    "upstream",  # a real refusal by name (status, code and message given)
]


class Problem(Exception):
    """Raised by validation and fault handling; caught by the route and rendered."""

    def __init__(
        self,
        kind: Kind,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: Kind = kind
        self.message = message
        self.param = param
        #: Overrides the dialect's status for this kind (used for injected 5xx).
        self.status = status
        #: Overrides the dialect's code for this kind (used for ``fail_code``).
        self.code = code
        self.retry_after = retry_after
