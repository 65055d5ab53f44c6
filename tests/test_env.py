"""Configuration from the environment: provider, base URL, log switch, proxies."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider
from tests._bulk_support import FakeServer, cli_env, run_cli

URL = "https://example.com/a.png"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without the variables under test (a developer may have them set)."""
    for name in ("QWEN_EDIT_PROVIDER", "QWEN_EDIT_BASE_URL", "QWEN_EDIT_LOG", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_provider_comes_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QWEN_EDIT_PROVIDER picks the provider of a client that names none; an argument wins;
    neither gives dashscope."""
    assert qe.QwenEditClient(api_key=API_KEY).provider.name == "dashscope"
    monkeypatch.setenv("QWEN_EDIT_PROVIDER", "vtrix")
    assert qe.QwenEditClient(api_key=API_KEY).provider.name == "vtrix"
    assert qe.QwenEditClient("evolink", api_key=API_KEY).provider.name == "evolink"
    monkeypatch.setenv("QWEN_EDIT_PROVIDER", "nope")
    with pytest.raises(qe.ConfigurationError, match="unknown provider 'nope'"):
        qe.QwenEditClient(api_key=API_KEY)


async def test_base_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """QWEN_EDIT_BASE_URL points a client that gives no base_url at the fake."""
    async with FakeProvider(api_key=API_KEY, latency=0.01) as fake:
        monkeypatch.setenv("QWEN_EDIT_BASE_URL", fake.url)
        monkeypatch.setenv("QWEN_EDIT_PROVIDER", "vtrix")
        async with qe.QwenEditClient(api_key=API_KEY, poll_initial=0.05) as client:
            assert client.provider.base_url == fake.url
            assert (await client.edit([URL], "from the environment")).images
        assert fake.stats.creates == 1
    explicit = qe.QwenEditClient("vtrix", api_key=API_KEY, base_url="http://127.0.0.1:9")
    assert explicit.provider.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("value", ["ftp://example.com", "dashscope-intl.aliyuncs.com"])
def test_a_bad_base_url_variable_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """QWEN_EDIT_BASE_URL is checked like base_url, and the error names the variable."""
    monkeypatch.setenv("QWEN_EDIT_BASE_URL", value)
    with pytest.raises(qe.ConfigurationError, match=r"^QWEN_EDIT_BASE_URL: .*http"):
        qe.QwenEditClient("vtrix", api_key=API_KEY)


async def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY sends the client's requests through the proxy (here the fake, which
    answers absolute-form requests), so an unreachable host still answers; NO_PROXY
    naming that host sends it direct again, where it cannot be reached."""
    async with FakeProvider(api_key=API_KEY, latency=0.01) as fake:
        monkeypatch.setenv("HTTP_PROXY", fake.url)
        options = {"api_key": API_KEY, "base_url": "http://provider.invalid", "max_attempts": 1}
        async with qe.QwenEditClient("dashscope", **options) as client:  # type: ignore[arg-type]
            assert (await client.edit([URL], "through the proxy")).images
        assert fake.stats.creates == 1
        monkeypatch.setenv("NO_PROXY", "provider.invalid")
        async with qe.QwenEditClient("dashscope", **options) as client:  # type: ignore[arg-type]
            with pytest.raises(qe.TransportError):
                await client.edit([URL], "direct")
        assert fake.stats.creates == 1


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import qwen_edit_async as qe
    from qwen_edit_async.testing import FakeProvider

    async def main():
        async with FakeProvider(api_key=sys.argv[1], latency=0.01) as fake:
            async with qe.QwenEditClient(
                "vtrix", api_key=sys.argv[1], base_url=fake.url, poll_initial=0.05
            ) as client:
                await client.edit(["https://example.com/a.png"], "logged")

    asyncio.run(main())
    """
)


def run_logged(level: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "QWEN_EDIT_LOG"}
    if level is not None:
        env["QWEN_EDIT_LOG"] = level
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, API_KEY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_qwen_edit_log_debug_shows_each_exchange_and_never_the_key() -> None:
    """QWEN_EDIT_LOG=debug logs every request (method, path, status) to stderr; the key
    is nowhere in it. Unset, the library prints nothing."""
    done = run_logged("debug")
    assert done.returncode == 0, done.stderr
    assert "DEBUG qwen_edit_async: POST /model/v1/generation -> 200" in done.stderr
    assert "GET /model/v1/generation/task/" in done.stderr
    assert API_KEY not in done.stderr
    quiet = run_logged(None)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_qwen_edit_log_info_hides_debug_and_bad_values_warn() -> None:
    """info leaves the per-request lines out; a value that is no level is a warning that
    names the variable, and nothing is logged."""
    info = run_logged("info")
    assert info.returncode == 0, info.stderr
    assert "DEBUG" not in info.stderr
    loud = run_logged("loud")
    assert loud.returncode == 0
    assert "QWEN_EDIT_LOG='loud' is not one of debug, info" in loud.stderr
    assert "POST" not in loud.stderr


def test_qwen_edit_log_applies_to_the_command_line(tmp_path: pathlib.Path) -> None:
    """The CLI honours QWEN_EDIT_LOG too: a demo run logs its requests at debug."""
    env = {**os.environ, "QWEN_EDIT_LOG": "debug"}
    done = subprocess.run(
        [sys.executable, "-m", "qwen_edit_async", "demo", "--out", str(tmp_path), "--jobs", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DEBUG qwen_edit_async: POST " in done.stderr


@pytest.mark.slow
def test_cli_run_takes_provider_and_base_url_from_the_environment(
    tmp_path: pathlib.Path,
) -> None:
    """qwen-edit run with no --provider/--base-url uses QWEN_EDIT_PROVIDER and
    QWEN_EDIT_BASE_URL; a bad QWEN_EDIT_BASE_URL is refused before any job, naming it."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "a", "images": ["https://example.com/a.png"], "prompt": "x"}\n', encoding="utf-8"
    )
    server = FakeServer()
    try:
        env = cli_env(QWEN_EDIT_PROVIDER="vtrix", QWEN_EDIT_BASE_URL=server.url)
        done = run_cli("run", manifest, "--out", tmp_path / "out", "--progress", "none", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        jobs = server.stats(jobs=True)["jobs"]
        assert [job["dialect"] for job in jobs] == ["vtrix"]
        bad = cli_env(QWEN_EDIT_BASE_URL="127.0.0.1:8765")
        refused = run_cli("run", manifest, "--out", tmp_path / "bad", "--progress", "none", env=bad)
        assert refused.returncode != 0
        assert "127.0.0.1:8765" in refused.stderr
        assert len(server.stats(jobs=True)["jobs"]) == 1
    finally:
        server.close()
