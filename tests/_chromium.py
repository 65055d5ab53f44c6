"""A real headless Chromium driven over the DevTools protocol (on a pipe: no port, no network).

Just enough of the protocol for the report tests: open a page, evaluate script, wait for a
condition, collect console errors, take a screenshot (read with Pillow).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def chromium_path() -> str:
    """The Chromium to use; skips (or, in CI, fails) when there is none."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    message = (
        "chromium is not installed: the report is tested in a real headless Chromium "
        "(Debian: apt-get update && apt-get install -y chromium)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must install it (.ci/run does)")
    pytest.skip(message)


class CDPError(Exception):
    """An error answer from the browser, or a script that threw."""


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, profile: Path, *, width: int = 1400, height: int = 1000) -> None:
        exe = chromium_path()
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            read_end, write_end = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # fds 3 and 4 must reach it; Python's own fds are not inheritable
            preexec_fn=wire_fds,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(CDPError, OSError, TimeoutError):
                self.call("Browser.close", session=False, timeout=5)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._to_child = self._from_child = -1

    # -- the protocol --------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise CDPError(f"chromium closed its pipe (exit {self.proc.poll()})")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, *, session: bool = True, timeout: float = 30, **params: Any
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self.events.append(answer)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        seen = len(self.events)
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)

    # -- pages ---------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise CDPError(f"navigation failed: {answer['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The JSON value of ``expression`` (promises awaited)."""
        answer = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            timeout=timeout,
        )
        if "exceptionDetails" in answer:
            raise CDPError(f"script threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_until(self, condition: str, timeout: float = 20) -> None:
        """Wait, inside the page, until the JS ``condition`` is truthy."""
        limit_ms, label = int(timeout * 1000), json.dumps(condition)
        script = (
            f"new Promise((resolve, reject) => {{ const end = Date.now() + {limit_ms};"
            f" (function check() {{ let ok = false; try {{ ok = !!({condition}); }} catch (e) {{}}"
            " if (ok) return resolve(true);"
            f" if (Date.now() > end) return reject(new Error({label}));"
            " requestAnimationFrame(check); })(); })"
        )
        self.evaluate(script, timeout=timeout + 5)

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def requests(self) -> list[str]:
        """URLs the page asked for since it was opened."""
        return [
            event["params"]["request"]["url"]
            for event in self.events
            if event["method"] == "Network.requestWillBeSent"
        ]

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page reported."""
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args")))
            elif method == "Runtime.exceptionThrown":
                errors.append(json.dumps(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(json.dumps(params["entry"]))
        return errors


def read_png(data: bytes) -> Any:
    """The screenshot as an RGB ``PIL.Image``."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


#: Resolves once every image in the viewport is loaded, decoded and painted (two frames).
VISIBLE_IMAGES_DRAWN = """
(async () => {
  const visible = Array.from(document.images).filter(img => {
    const box = img.getBoundingClientRect();
    return box.bottom > 0 && box.top < innerHeight && box.width > 0;
  });
  const deadline = Date.now() + 15000;
  while (!visible.every(img => img.complete) && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 20));
  }
  await Promise.all(visible.map(img => img.decode().catch(() => null)));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return visible.map(img => [img.naturalWidth, img.naturalHeight]);
})()
"""
