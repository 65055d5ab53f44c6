"""The CLI's event loop: uvloop when installed (the ``speed`` extra), else asyncio."""

from __future__ import annotations

import asyncio
import sys

import pytest

from qwen_edit_async._loop import run_async


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_cli_runs_on_uvloop_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("QWEN_EDIT_LOOP", raising=False)
    assert run_async(_loop_module()).startswith("uvloop")


def test_qwen_edit_loop_asyncio_forces_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_EDIT_LOOP", "asyncio")
    assert run_async(_loop_module()).startswith("asyncio")


def test_without_uvloop_the_cli_uses_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_EDIT_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert run_async(_loop_module()).startswith("asyncio")
