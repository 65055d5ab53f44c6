"""qwen_edit_async: an asyncio-first client for the qwen-image-edit-plus image-editing API.

One typed, validated interface over the providers that sell the model (DashScope,
ModelStream, OneToken, Evolink, Vtrix), built for bulk work: bounded jobs in flight, one
poller for every pending task, retries that never double-charge.

>>> import qwen_edit_async as qe
>>> async with qe.QwenEditClient("dashscope-intl") as client:      # doctest: +SKIP
...     result = await client.edit(["cat.png"], "Give the cat a red hat")
...     await client.download(result, "out/")
"""

from . import providers
from ._callbacks import CallbackReceiver, CallbackStatistics
from ._client import QwenEditClient
from ._config import ClientConfig
from ._config import log_from_env as _log_from_env
from ._defaults import USE_CLIENT_DEFAULT
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentFilterError,
    DownloadError,
    InsufficientQuotaError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    PermissionDeniedError,
    QwenEditError,
    RateLimitError,
    ServerError,
    SubmitUncertainError,
    TaskNotFoundError,
    TransportError,
    ValidationError,
)
from ._job import Job, JobStatus
from ._models import EditRequest, EditResult, GeneratedImage, Outcome, Size, Usage
from ._retry import set_testing
from ._statistics import ClientStatistics
from ._sync import SyncJob, SyncQwenEditClient
from ._version import __version__

_log_from_env()  # QWEN_EDIT_LOG=debug|info: the library's log on stderr

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CallbackReceiver",
    "CallbackStatistics",
    "ClientConfig",
    "ClientStatistics",
    "ConfigurationError",
    "ContentFilterError",
    "DownloadError",
    "EditRequest",
    "EditResult",
    "GeneratedImage",
    "InsufficientQuotaError",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobStatus",
    "JobTimeoutError",
    "Outcome",
    "PermissionDeniedError",
    "QwenEditClient",
    "QwenEditError",
    "RateLimitError",
    "ServerError",
    "Size",
    "SubmitUncertainError",
    "SyncJob",
    "SyncQwenEditClient",
    "TaskNotFoundError",
    "TransportError",
    "USE_CLIENT_DEFAULT",
    "Usage",
    "ValidationError",
    "__version__",
    "providers",
    "set_testing",
]
