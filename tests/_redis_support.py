"""A real redis-server on a loopback port for the tests that share limits through Redis.

Without ``redis-server`` (or the ``redis`` package) those tests skip with a message saying
how to install it, except in CI (``CI=true``), where a missing server fails the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

INSTALL = (
    "redis-server is not installed: install it (Debian: 'apt-get install redis-server') "
    "and the redis extra (pip install -e '.[redis]') to run the shared-limits tests"
)


def require_redis() -> str:
    """The path of redis-server, or skip (fail in CI) with how to install it."""
    path = shutil.which("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL + " (CI=true: a missing redis-server fails the run)")
        pytest.skip(INSTALL)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A running redis-server: its ``url``, and ``stop()`` to end it early."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start redis-server on 127.0.0.1 (no persistence); yield it; stop it after."""
    binary = require_redis()
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        argv += ["--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                        conn.sendall(b"PING\r\n")
                        if conn.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            server = RedisServer(f"redis://127.0.0.1:{port}/0", proc)
            yield server
        finally:
            RedisServer("", proc).stop()
