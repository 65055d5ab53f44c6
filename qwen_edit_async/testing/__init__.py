"""A fake qwen-image-edit-plus provider for tests, demos and benchmarks.

An independent reimplementation of the *servers* (of the client library it takes only the
paths each dialect declares), listening on 127.0.0.1, speaking every dialect at its
documented path::

    POST /api/v1/services/aigc/multimodal-generation/generation   DashScope (sync)
    POST /v1/images/generations   nested body (input.messages)   ModelStream (sync)
    POST /v1/images/generations   flat body (prompt, image_urls)  Evolink (task)
    GET  /v1/tasks/{id}                                           Evolink poll
    POST /v1/images/edits                                         OneToken (sync)
    POST /model/v1/generation                                     Vtrix (task)
    GET  /model/v1/generation/task/{id}                           Vtrix poll
    GET  /files/results/<name>.png?Expires=..&Signature=..        result images (403 once expired)
    POST /_fake/upload, GET /files/uploads/<name>                 inputs for URL-only providers
    /_fake/stats, /_fake/reset, /_fake/faults, /_fake/script, /_fake/config   control
    POST /_fake/clock {"advance": seconds}                        the fake's clock, forward

Example::

    from qwen_edit_async.testing import FakeProvider, Faults

    async with FakeProvider(latency=0.05) as fake:
        fake.script("rate_limit", "ok")           # the next two creates
        fake.faults = Faults(drop_after_accept=0.01)
        ...                                      # point a client at fake.url
        print(fake.stats.snapshot(jobs=False))

Validation follows the providers' documented rules: exactly one text, 1-3 images, ``n`` 1-6,
``size`` sides 512-2048 (``W*H``; Evolink ``WxH``) snapped to multiples of 16 (ties down),
otherwise about 1024x1024 pixels at the last image's aspect ratio (read from data URIs and
the fake's own files; other URLs count as 1:1). Image URLs on hosts ending in ``.invalid``,
and URLs on the fake that do not exist or have expired, fail to download. Evolink refuses
data URIs and prompts over 2000 characters; DashScope truncates prompts at 800.

Magic words in a prompt force an outcome when no fault was injected for that create:
``[fail]`` (or ``[fail:CODE]``), ``[filter]`` (content moderation), ``[quota]`` (out of
funds), ``[stuck]`` (never finishes). Every dialect refuses ``[quota]`` at submission; sync
dialects refuse ``[filter]`` at submission too and answer ``[fail]`` with an error after the
latency; task dialects report those as failed tasks.

Answers of real relays and providers are switched on like the other faults:
``Faults(relay=True)`` (a new-api relay in front of DashScope), ``Faults(results_delay=2)``
(Evolink completes before its results), ``Faults(vtrix_item_type="image_url")``, and the
script word ``refuse:NAME`` (DashScope's free-tier, IP-infringement, allocation-quota, burst
and arrears refusals).

``HostileProvider`` is a provider that misbehaves on purpose (keys echoed in errors, huge,
deeply nested and dripping answers, unusable result URLs), to test a client against it.

Run it standalone with ``python -m qwen_edit_async.testing --port 0`` (prints
``serving on http://127.0.0.1:PORT``). For pytest, the package's plugin gives every test
suite a ``qwen_fake`` fixture; the async ``fake_provider`` and ``fake_provider_factory``
(pytest-asyncio) are imported into a conftest:
``from qwen_edit_async.testing import fake_provider, fake_provider_factory``.
``pip install "qwen-edit-async[testing]"`` brings what they need. Blocking code (the
``SyncQwenEditClient``) can run the fake on its own thread: ``with fake_in_thread() as fake:``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cli import main
from ._clock import FakeClock
from ._faults import Faults
from ._hostile import HostileProvider
from ._latency import Latency
from ._png import png_bytes
from ._server import FakeProvider
from ._stats import FakeStats
from ._thread import fake_in_thread

if TYPE_CHECKING:
    from ._pytest import fake_provider, fake_provider_factory, qwen_fake

__all__ = [
    "FakeClock",
    "FakeProvider",
    "FakeStats",
    "Faults",
    "HostileProvider",
    "Latency",
    "fake_in_thread",
    "fake_provider",
    "fake_provider_factory",
    "main",
    "png_bytes",
    "qwen_fake",
]

_FIXTURES = ("fake_provider", "fake_provider_factory", "qwen_fake")


def __getattr__(name: str) -> Any:
    # The fixtures need pytest (and the async ones pytest-asyncio); import them only when
    # someone asks for them, and say what to install when they are missing.
    if name in _FIXTURES:
        from . import _pytest

        if name != "qwen_fake" and not _pytest.HAS_PYTEST_ASYNCIO:
            raise ImportError(_pytest.MISSING_ASYNCIO)
        return getattr(_pytest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
