"""The keyword options of the client and of an edit, as types a user's checker can read.

``QwenEditClient(**options)`` takes any :class:`ClientConfig` field and ``edit(**options)``
any optional :class:`EditRequest` field: typed with ``Unpack[...]``, a misspelt option or a
value of the wrong type is an error in the user's editor and in mypy, not only at run time.
A test holds these lists to the fields of ``ClientConfig`` and ``EditRequest``.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from ._models import SizeLike

__all__ = ["ClientOptions", "EditOptions", "ProviderName"]

#: The providers known by name (the keys of ``providers.PROVIDERS``).
ProviderName = Literal["dashscope", "dashscope-intl", "modelstream", "onetoken", "evolink", "vtrix"]


class EditOptions(TypedDict, total=False):
    """The optional fields of an :class:`EditRequest`, as ``edit(**options)`` takes them."""

    negative_prompt: str | None
    n: int | None
    size: SizeLike | None
    prompt_extend: bool | None
    watermark: bool | None
    seed: int | None
    callback_url: str | None


class ClientOptions(TypedDict, total=False):
    """The :class:`ClientConfig` fields, as ``QwenEditClient(**options)`` takes them."""

    connect_timeout: float
    sync_read_timeout: float
    read_timeout: float
    job_timeout: float | None
    status_timeout: float
    download_timeout: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    retry_after_max: float
    retry_uncertain: bool
    max_resubmits: int
    poll_initial: float
    poll_growth: float
    poll_max_interval: float
    poll_jitter: float
    poll_concurrency: int | None
    poll_rate: float | None
    submit_rate: float | None
    max_response_bytes: int
    adaptive_limits: bool
    lease_ttl: float
    download_max_bytes: int
    download_concurrency: int
    image_cache_bytes: int
