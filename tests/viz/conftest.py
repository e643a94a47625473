"""A headless Chromium for the views' tests, driven through the DevTools protocol."""

from __future__ import annotations

import base64
import fcntl
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_SITE_CHECK = Path(__file__).resolve().parents[1] / "docs" / "site_check.py"


def _site_check() -> Any:
    spec = importlib.util.spec_from_file_location("site_check", _SITE_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _find() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _chromium() -> str | None:
    if (path := _find()) is not None or os.geteuid() != 0:
        return path
    # As .ci/docs.sh does: root on a fresh machine installs Debian's chromium. One test
    # process at a time (pytest-xdist workers would fight over apt's lock).
    with open(Path(tempfile.gettempdir()) / "pcflow-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path := _find()) is not None:
            return path
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return _find()


class Page:
    """One tab of the browser with a page loaded."""

    def __init__(self, devtools: Any, session: str, target: str) -> None:
        self.devtools, self.session, self.target = devtools, session, target

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        reply = self.devtools.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=self.session,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def drag(self, x: float, y: float, dx: float, dy: float, steps: int = 8) -> None:
        """Drag the left mouse button from (x, y) by (dx, dy) CSS pixels, as a user would."""

        def mouse(kind: str, px: float, py: float, buttons: int) -> None:
            self.devtools.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": px, "y": py, "button": "left", "buttons": buttons,
                 "clickCount": 1},
                session=self.session,
            )  # fmt: skip

        mouse("mouseMoved", x, y, 0)
        mouse("mousePressed", x, y, 1)
        for i in range(1, steps + 1):
            mouse("mouseMoved", x + dx * i / steps, y + dy * i / steps, 1)
        mouse("mouseReleased", x + dx, y + dy, 0)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed requests of this page so far."""
        self.devtools.send("Runtime.evaluate", {"expression": "0"}, session=self.session)
        return self.check._problems_from_events(self.devtools.events, self.session)

    def screenshot(self, path: Path) -> None:
        shot = self.devtools.send("Page.captureScreenshot", {"format": "png"}, session=self.session)
        path.write_bytes(base64.b64decode(shot["data"]))


class Browser:
    """Opens pages in headless Chromium and waits until their views have drawn."""

    def __init__(self, executable: str, user_data_dir: str) -> None:
        self.check = _site_check()
        self.devtools = self.check.DevTools(executable, user_data_dir)

    def open(self, path: Path, timeout: float = 30.0) -> Page:
        devtools = self.devtools
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = session["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            devtools.send(f"{domain}.enable", session=session)
        devtools.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        devtools.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        page = Page(devtools, session, target)
        page.check = self.check
        deadline = time.monotonic() + timeout
        while not page.evaluate("document.body && document.body.dataset.pcflowReady === '1'"):
            error = page.evaluate("window.pcflowError || null")
            if error or time.monotonic() > deadline:
                raise AssertionError(
                    f"the view did not draw within {timeout} s: {error or page.problems()}"
                )
            time.sleep(0.05)
        return page

    def close_page(self, page: Page) -> None:
        self.devtools.send("Target.closeTarget", {"targetId": page.target})

    def close(self) -> None:
        self.devtools.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    if executable is None:
        pytest.skip(
            "Chromium is not installed and this user cannot install it "
            "(as root: apt-get install chromium; or set CHROMIUM=/path/to/it)"
        )
    with tempfile.TemporaryDirectory(prefix="pcflow-viz-chromium-") as user_data_dir:
        browser = Browser(executable, user_data_dir)
        try:
            yield browser
        finally:
            browser.close()
