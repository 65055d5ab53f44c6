"""Provider dialects: pure, sans-I/O translations between an edit and each provider's wire.

Each dialect builds :class:`HttpRequest` values and reads ``(status, headers, body)`` back;
the transport does the I/O. Pick one by name with :func:`get_provider`::

    >>> from qwen_edit_async.providers import get_provider
    >>> get_provider("evolink")
    Evolink(base_url='https://api.evolink.ai', model='qwen-image-edit-plus')
    >>> get_provider("dashscope-intl", model="qwen-image-edit-max").model
    'qwen-image-edit-max'

Adding a provider is one module with a :class:`Provider` subclass and one line in
:data:`PROVIDERS`.
"""

from __future__ import annotations

from .._errors import ConfigurationError
from ._base import HttpRequest, ProtocolError, Provider, TaskAccepted, TaskState, TaskStatus
from ._dashscope import DashScope, DashScopeIntl
from ._evolink import Evolink
from ._openai import ModelStream, OneToken
from ._vtrix import Vtrix

__all__ = [
    "DashScope",
    "DashScopeIntl",
    "Evolink",
    "HttpRequest",
    "ModelStream",
    "OneToken",
    "PROVIDERS",
    "ProtocolError",
    "Provider",
    "TaskAccepted",
    "TaskState",
    "TaskStatus",
    "Vtrix",
    "get_provider",
]

#: The providers known by name.
PROVIDERS: dict[str, type[Provider]] = {
    "dashscope": DashScope,
    "dashscope-intl": DashScopeIntl,
    "modelstream": ModelStream,
    "onetoken": OneToken,
    "evolink": Evolink,
    "vtrix": Vtrix,
}


def get_provider(
    provider: str | Provider | type[Provider],
    *,
    base_url: str | None = None,
    model: str | None = None,
) -> Provider:
    """The provider for a registry name (any case) or a provider object or class.

    ``base_url`` and ``model`` override the provider's defaults; a provider object given
    with overrides is copied, never changed. An unknown name raises
    :class:`~qwen_edit_async.ConfigurationError` listing the known ones.

    >>> get_provider("vtrix", base_url="http://127.0.0.1:8000/").base_url
    'http://127.0.0.1:8000'
    >>> get_provider(get_provider("evolink"), model="qwen-image-edit-max")
    Evolink(base_url='https://api.evolink.ai', model='qwen-image-edit-max')
    """
    if isinstance(provider, Provider):
        if base_url is None and model is None:
            return provider
        return provider.replace(base_url=base_url, model=model)
    if isinstance(provider, type) and issubclass(provider, Provider):
        return provider(base_url=base_url, model=model)
    if isinstance(provider, str):
        cls = PROVIDERS.get(provider.strip().lower())
        if cls is not None:
            return cls(base_url=base_url, model=model)
    known = ", ".join(sorted(PROVIDERS))
    raise ConfigurationError(f"unknown provider {provider!r}; known providers: {known}")
