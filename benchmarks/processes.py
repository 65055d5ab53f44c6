"""The processes of a benchmark: the fake provider and the peers, each bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "PYTHON",
    "RESULTS",
    "ROOT",
    "Fake",
    "fake_server",
    "log",
    "run_peer",
    "run_process",
    "set_library_path",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable
#: Loopback only: no proxy may see a benchmark request (aiohttp and the SDK trust the env).
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


#: ``--library-path``: where the peers import ``qwen_edit_async`` from (the fake never moves).
_library_path: str | None = None


def set_library_path(path: Path | None) -> str:
    """Make the peers import ``qwen_edit_async`` from ``path`` (None: this checkout)."""
    global _library_path
    _library_path = None if path is None else str(path.resolve())
    return _library_path or str(ROOT)


def _env(*, peer: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    first = _library_path if peer else None
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [first, str(ROOT), env.get("PYTHONPATH")]))
    return env


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the fake, in its own process --------------------------------------------------------


class Fake:
    """``python -m qwen_edit_async.testing`` on a free port, stopped on exit."""

    def __init__(self, args: Sequence[str], workdir: Path) -> None:
        self._out = open(workdir / "fake.out", "w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "qwen_edit_async.testing", "--port", "0", "--seed", "0", *args],
            cwd=ROOT,
            env=_env(),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = self._wait_url()
        self.ps = psutil.Process(self.proc.pid)
        # Only loopback: the fake binds 127.0.0.1 and every peer is given this URL.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _wait_url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._out.seek(0)
            for line in self._out.read().splitlines():
                if line.startswith("serving on "):
                    return line.split()[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the fake did not start: {self._tail()}")

    def _tail(self) -> str:
        self._out.seek(0)
        return self._out.read()[-2000:]

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def wakeups(self) -> int:
        """Times the fake went to sleep and was woken so far (voluntary context switches of
        all its threads)."""
        return int(self.ps.num_ctx_switches().voluntary)

    def stats(self, *, jobs: bool) -> dict[str, Any]:
        url = f"{self.url}/_fake/stats?jobs={1 if jobs else 0}"
        with self._opener.open(url, timeout=120) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


@contextlib.contextmanager
def fake_server(args: Sequence[str], workdir: Path) -> Iterator[Fake]:
    fake = Fake(args, workdir)
    try:
        yield fake
    finally:
        fake.stop()


# -- a peer, in its own process ------------------------------------------------------------


def run_process(
    cmd: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None
) -> tuple[int | None, str, str]:
    """Run ``cmd`` in its own process group, bounded in time: (exit code or None if it was
    killed at the deadline, stdout, stderr). ``env``: variables added to the peer's."""
    with (
        tempfile.TemporaryDirectory(prefix="qwen-bench-peer-") as cwd,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        proc = subprocess.Popen(
            cmd,
            # Not the checkout: "python -m" puts the working directory first on sys.path,
            # which would shadow --library-path. PYTHONPATH names what the peer imports.
            cwd=cwd,
            env={**_env(peer=True), **(env or {})},
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The peer and whatever it started (its own process group, still led by it):
            # stragglers must not eat the CPU of the next scenario.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


def run_peer(
    module: str, spec: Mapping[str, Any], timeout: float, *, profile: str | None = None
) -> dict[str, Any]:
    """Run ``benchmarks.peers.<module>`` with ``spec``; its result, or why there is none."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [
            PYTHON,
            "-m",
            f"benchmarks.peers.{module}",
            json.dumps({**spec, "result_path": str(result_path)}),
        ]
        if profile is not None:
            cmd = _profiled(cmd, profile, spec["profile_out"])
        code, out, err = run_process(cmd, timeout)
        if code is None:
            return {"failed": f"timed out after {timeout:.0f} s", "timed_out": True}
        if code == 0 and result_path.exists():
            result: dict[str, Any] = json.loads(result_path.read_text())
            result["process_s"] = time.monotonic() - start
            return result
    return {"failed": f"exit {code}: {(err or out).strip()[-1500:]}"}


def _profiled(cmd: list[str], how: str, out: str) -> list[str]:
    if how == "py-spy":
        spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
        return [spy, "record", "--format", "raw", "--rate", "1000", "-o", out, "--", *cmd]
    if how == "cprofile":
        return [PYTHON, "-m", "cProfile", "-o", out, *cmd[1:]]
    raise SystemExit(f"unknown profiler {how!r}")
