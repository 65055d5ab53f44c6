"""What holds for every dialect: the registry, purity, headers, and the cost of a big body."""

from __future__ import annotations

import ast
import base64
import pathlib
import tracemalloc

import msgspec
import pytest

import qwen_edit_async.providers as providers
from qwen_edit_async._errors import ConfigurationError
from qwen_edit_async._models import EditRequest
from qwen_edit_async.providers import (
    PROVIDERS,
    DashScope,
    DashScopeIntl,
    Evolink,
    ModelStream,
    OneToken,
    Provider,
    Vtrix,
    get_provider,
)

PACKAGE = pathlib.Path(providers.__file__).parent
REQUEST = EditRequest(images=["https://e.com/a.png"], prompt="x", n=1)


def every_provider() -> list[Provider]:
    return [cls(base_url="http://127.0.0.1:8000") for cls in PROVIDERS.values()]


def test_registry_holds_the_six_providers_under_their_names() -> None:
    """Each registry key is the class's own ``name``, for the six documented providers."""
    assert {
        "dashscope": DashScope,
        "dashscope-intl": DashScopeIntl,
        "modelstream": ModelStream,
        "onetoken": OneToken,
        "evolink": Evolink,
        "vtrix": Vtrix,
    } == PROVIDERS
    assert all(cls.name == name for name, cls in PROVIDERS.items())


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted, every name in it exists, and it exports every registered class."""
    assert providers.__all__ == sorted(providers.__all__)
    assert all(hasattr(providers, name) for name in providers.__all__)
    expected = {cls.__name__ for cls in PROVIDERS.values()} | {
        "PROVIDERS",
        "HttpRequest",
        "ProtocolError",
        "Provider",
        "TaskAccepted",
        "TaskState",
        "TaskStatus",
        "get_provider",
    }
    assert set(providers.__all__) == expected


def test_no_module_imports_aiohttp() -> None:
    """The dialects are sans-I/O: no module under providers/ imports aiohttp."""
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "aiohttp" for name in names), path


@pytest.mark.parametrize("name", [n for n in PROVIDERS if n != "onetoken"])
def test_get_provider_by_name_uses_the_defaults(name: str) -> None:
    """A name gives a fresh instance of its class with the default base URL and model."""
    provider = get_provider(name)
    cls = PROVIDERS[name]
    assert type(provider) is cls
    assert provider.base_url == cls.default_base_url
    assert provider.model == "qwen-image-edit-plus"


def test_get_provider_name_is_case_and_space_insensitive() -> None:
    """`` DashScope-Intl `` finds the Singapore provider."""
    assert type(get_provider(" DashScope-Intl ")) is DashScopeIntl


def test_get_provider_overrides() -> None:
    """``base_url`` and ``model`` override the defaults; the trailing slash is dropped."""
    provider = get_provider("vtrix", base_url="http://127.0.0.1:9/", model="qwen-image-edit-max")
    assert (provider.base_url, provider.model) == ("http://127.0.0.1:9", "qwen-image-edit-max")
    onetoken = get_provider("onetoken", base_url="https://gw.example.com")
    assert onetoken.base_url == "https://gw.example.com"


def test_get_provider_onetoken_needs_a_base_url() -> None:
    """OneToken by name without base_url is a ConfigurationError that says what to pass."""
    with pytest.raises(ConfigurationError, match="base_url"):
        get_provider("onetoken")


def test_get_provider_object_is_returned_as_is() -> None:
    """A provider object without overrides is used as given."""
    provider = Evolink()
    assert get_provider(provider) is provider


def test_get_provider_object_with_overrides_is_copied() -> None:
    """Overrides on an object give a copy; the original is unchanged."""
    original = DashScopeIntl(model="qwen-image-edit-max")
    copy = get_provider(original, base_url="http://127.0.0.1:1")
    assert copy is not original
    assert type(copy) is DashScopeIntl
    assert (copy.base_url, copy.model) == ("http://127.0.0.1:1", "qwen-image-edit-max")
    assert original.base_url == "https://dashscope-intl.aliyuncs.com"


def test_get_provider_class() -> None:
    """A provider class is instantiated with the overrides."""
    provider = get_provider(ModelStream, model="qwen-image-edit-max")
    assert type(provider) is ModelStream and provider.model == "qwen-image-edit-max"


@pytest.mark.parametrize("value", ["openai", "", 42])
def test_get_provider_unknown_lists_the_known_names(value: object) -> None:
    """An unknown name is a ConfigurationError listing every known provider."""
    with pytest.raises(ConfigurationError) as info:
        get_provider(value)  # type: ignore[arg-type]
    for name in PROVIDERS:
        assert name in str(info.value)


@pytest.mark.parametrize("provider", every_provider(), ids=lambda p: p.name)
def test_requests_never_carry_the_api_key(provider: Provider) -> None:
    """Create requests send only Content-Type; status requests send no headers at all."""
    create = provider.build_create(REQUEST, ["https://e.com/a.png"])
    assert dict(create.headers) == {"Content-Type": "application/json"}
    assert create.url.startswith("http://127.0.0.1:8000/")
    if provider.is_task:
        status = provider.build_status("t-1")
        assert status.method == "GET" and status.body is None
        assert dict(status.headers) == {}
        assert status.url.startswith("http://127.0.0.1:8000/")
    else:
        with pytest.raises(NotImplementedError):
            provider.build_status("t-1")


@pytest.mark.parametrize("provider", every_provider(), ids=lambda p: p.name)
def test_shared_headers_cannot_be_mutated(provider: Provider) -> None:
    """Requests share one read-only header mapping, so no caller can alter another's."""
    headers = provider.build_create(REQUEST, ["https://e.com/a.png"]).headers
    with pytest.raises(TypeError):
        headers["Authorization"] = "Bearer leak"  # type: ignore[index]


@pytest.mark.parametrize(
    "provider", [p for p in every_provider() if p.accepts_data_uri], ids=lambda p: p.name
)
def test_big_inline_images_are_copied_once(provider: Provider) -> None:
    """Three 2 MB data URIs build a body with peak memory under twice the payload.

    The body itself is one copy; a second copy of the images (pre-encoding them, joining
    parts) would push the peak past 2x.
    """
    images = [
        "data:image/png;base64," + base64.b64encode(bytes([i]) * 1_500_000).decode()
        for i in range(3)
    ]
    payload = sum(map(len, images))
    tracemalloc.start()
    try:
        built = provider.build_create(REQUEST, images)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert built.body is not None
    assert payload < len(built.body) < payload + 1000
    assert peak < 2 * payload
    content = msgspec.json.decode(built.body)["input"]["messages"][0]["content"]
    assert [item.get("image") for item in content[:3]] == images
