"""Open the built docs site in headless Chromium and check that its pages render.

Serves the built site (``site/``) on 127.0.0.1, drives Chromium through the DevTools protocol
over ``--remote-debugging-pipe`` (no extra Python package, no open debugging port), and for every
HTML page checks that it loads with no console error, no uncaught exception, no failed request
and no broken image. Interactive views (`pcflow.viz` pages, e.g. ``views/*.html``) must draw:
every panel holds its points and shows non-blank pixels; the pages named in ``EMBEDDED_VIEWS``
must embed the views they name. The pages named with ``--screenshot`` are also saved as PNG
screenshots, one of the first screen and one of the whole page, and must hold what they are
expected to show (at least one picture, or rendered API entries).

Usage (``.ci/docs.sh`` runs it after ``mkdocs build --strict``)::

    python tests/docs/site_check.py --site site --out site-screenshots

Exit status 0 when every page passes; otherwise the problems are printed, one per line.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["check_api_anchors", "check_site", "main"]

# page (relative to the site root) -> (screenshot name, CSS selector that must match, minimum
# count). The home page and the FlowGAN tutorial must show their pictures; the API page must show
# entries rendered by mkdocstrings.
SCREENSHOTS = {
    "index.html": ("home", "article img", 1),
    "api/flows/index.html": ("api-flows", "article .doc-heading", 1),
    "tutorials/flowgan/index.html": ("tutorial-flowgan", "article img", 1),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # WebGL (the pcflow.viz views) on the CPU: no GPU on CI machines.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
]
# page -> the pcflow.viz views it embeds (iframes whose src ends with these names).
EMBEDDED_VIEWS = {
    "index.html": ("views/flow-in-motion.html",),
    "tutorials/flowgan/index.html": ("views/flowgan-gallery.html",),
    "tutorials/views/index.html": ("views/flow-in-motion.html", "views/flowgan-gallery.html"),
}
WIDTH, HEIGHT = 1280, 900
TIMEOUT = 30.0

# Waits for every image (lazy ones too) to load or fail, then reports each image's state.
_IMAGES_JS = """
(async () => {
  const images = Array.from(document.images);
  images.forEach((image) => { image.loading = "eager"; });
  const settle = (image) => image.complete ? null : new Promise((resolve) => {
    image.addEventListener("load", resolve); image.addEventListener("error", resolve);
    setTimeout(resolve, 10000);
  });
  await Promise.all(images.map(settle));
  return images.map((image) => ({src: image.currentSrc || image.src,
                                 ok: image.complete && image.naturalWidth > 0}));
})()
"""


# For a pcflow.viz view: waits until it has drawn, then reports each panel's points and the
# number of its pixels that are not the white background.
_VIEWS_JS = """
(async () => {
  if (!document.getElementById("pcflow-data")) return null;
  for (let i = 0; i < 300 && document.body.dataset.pcflowReady !== "1" && !window.pcflowError; i++)
    await new Promise((resolve) => setTimeout(resolve, 100));
  if (!window.pcflowViews) return {error: window.pcflowError || "the view never drew"};
  return {views: window.pcflowViews.map((view) => {
    const canvas = view.canvas;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let drawn = 0;
    for (let i = 0; i < pixels.length; i += 4)
      if (pixels[i] < 250 || pixels[i + 1] < 250 || pixels[i + 2] < 250) drawn++;
    return {count: view.count, drawn};
  })};
})()
"""
_IFRAMES_JS = "Array.from(document.querySelectorAll('article iframe')).map((f) => f.src)"


def check_views(devtools: DevTools, session: str, page: str) -> list[str]:
    """Problems of the interactive views of ``page``: a view that does not draw, or an embedded
    view missing from a page that must show it."""
    problems = []
    found = devtools.send(
        "Runtime.evaluate",
        {"expression": _VIEWS_JS, "awaitPromise": True, "returnByValue": True},
        session=session,
    )["result"].get("value")
    if found is not None:
        if "error" in found:
            problems.append(f"view: {found['error']}")
        for i, view in enumerate(found.get("views", [])):
            if view["count"] == 0 or view["drawn"] == 0:
                problems.append(f"view: panel {i} draws nothing ({view['count']} points)")
        if found.get("views") == []:
            problems.append("view: no panel")
    sources = devtools.send(
        "Runtime.evaluate", {"expression": _IFRAMES_JS, "returnByValue": True}, session=session
    )["result"]["value"]
    for name in EMBEDDED_VIEWS.get(page, ()):
        if not any(source.endswith(name) for source in sources):
            problems.append(f"view: {name} is not embedded (iframes: {sources})")
    return problems


class DevTools:
    """A minimal client of the Chrome DevTools protocol over Chromium's debugging pipe."""

    def __init__(self, executable: str, user_data_dir: str) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_pipes() -> None:  # runs in the child: the protocol uses fds 3 (in) and 4 (out)
            read, write = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=False,  # Python's own descriptors are non-inheritable; 3 and 4 are dup2'd
            preexec_fn=wire_pipes,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_messages, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_messages(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.decode(errors="replace").rstrip())

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result, keeping every event that arrives meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._next_message(deadline, f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        """Wait for the event ``method`` of ``session`` (events seen before are kept)."""
        deadline = time.monotonic() + TIMEOUT
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._next_message(deadline, f"the event {method}")
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def _next_message(self, deadline: float, what: str) -> dict:
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"Chromium sent no {what} within {TIMEOUT:.0f} s") from None
        if message is None:
            tail = "\n".join(self.stderr_lines[-20:])
            raise RuntimeError(f"Chromium exited while waiting for {what}:\n{tail}")
        return message

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)


def _problems_from_events(events: list[dict], session: str) -> list[str]:
    problems = []
    failed_requests = {}
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            problems.append(f"uncaught exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in {"error", "assert"}:
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params["args"]
            )
            problems.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            problems.append(f"console error: {entry['text']} {entry.get('url', '')}".rstrip())
        elif method == "Network.requestWillBeSent":
            failed_requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = failed_requests.get(params["requestId"], "?")
            problems.append(f"request failed: {url} ({params['errorText']})")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            response = params["response"]
            problems.append(f"HTTP {response['status']}: {response['url']}")
    return list(dict.fromkeys(problems))


def check_page(
    devtools: DevTools,
    url: str,
    screenshot: tuple[str, str, int] | None,
    out: Path,
    page: str = "",
) -> list[str]:
    """Load ``url`` in a new tab and return its problems (an empty list when it renders well)."""
    target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})
    session = session["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        devtools.send(f"{domain}.enable", session=session)
    devtools.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    devtools.send("Page.navigate", {"url": url}, session=session)
    devtools.wait_for("Page.loadEventFired", session)
    images = devtools.send(
        "Runtime.evaluate",
        {"expression": _IMAGES_JS, "awaitPromise": True, "returnByValue": True},
        session=session,
    )["result"]["value"]
    problems = [f"broken image: {image['src']}" for image in images if not image["ok"]]
    problems += check_views(devtools, session, page)
    if screenshot is not None:
        name, selector, minimum = screenshot
        count = devtools.send(
            "Runtime.evaluate",
            {
                "expression": f"document.querySelectorAll({selector!r}).length",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        if count < minimum:
            problems.append(f"expected at least {minimum} of {selector!r}, found {count}")
        time.sleep(0.5)  # let web fonts and the theme's scripts settle before the pictures
        first_screen = devtools.send("Page.captureScreenshot", {"format": "png"}, session=session)
        (out / f"{name}.png").write_bytes(base64.b64decode(first_screen["data"]))
        size = devtools.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(size["height"], 12000), "scale": 1}
        whole = devtools.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session=session,
        )
        (out / f"{name}-full.png").write_bytes(base64.b64decode(whole["data"]))
    time.sleep(0.2)  # late console messages
    devtools.send("Runtime.evaluate", {"expression": "0"}, session=session)  # drain events
    problems += _problems_from_events(devtools.events, session)
    devtools.send("Target.closeTarget", {"targetId": target})
    return problems


def check_api_anchors(site: Path) -> list[str]:
    """Names in a pcflow subpackage's ``__all__`` that have no entry in the built API pages.

    mkdocstrings drops the members of a module it cannot load (a syntax error, a failed import)
    without a warning, so the strict build alone does not prove that every name is documented.
    """
    import importlib
    import inspect
    import pkgutil
    import re

    import pcflow

    anchors = set()
    for page in (site / "api").rglob("*.html"):
        anchors |= set(re.findall(r'id="(pcflow[\w.]*)"', page.read_text()))
    missing = []
    for info in pkgutil.iter_modules(pcflow.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"pcflow.{info.name}")
        for name in getattr(module, "__all__", []):
            if inspect.ismodule(getattr(module, name)):
                continue
            if f"pcflow.{info.name}.{name}" not in anchors:
                missing.append(f"api: pcflow.{info.name}.{name} has no entry in {site}/api/")
    return missing


def _find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    raise SystemExit("no Chromium found: install Debian's chromium or set CHROMIUM=/path/to/it")


def check_site(site: Path, out: Path, executable: str | None = None) -> dict[str, list[str]]:
    """Check every HTML page of the built ``site``; return the problems of each page."""
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site}/index.html does not exist: build the site first (mkdocs build)")
    missing = [page for page in SCREENSHOTS if not (site / page).is_file()]
    if missing:
        raise SystemExit(f"pages to screenshot are missing from {site}: {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = sorted(
        str(path.relative_to(site)) for path in site.rglob("*.html") if path.name != "404.html"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="pcflow-chromium-") as user_data_dir:
        devtools = DevTools(executable or _find_chromium(), user_data_dir)
        try:
            version = devtools.send("Browser.getVersion")["product"]
            print(f"[site-check] {version}, {len(pages)} pages at {base}")
            for page in pages:
                url = base + (page.removesuffix("index.html"))
                results[page] = check_page(devtools, url, SCREENSHOTS.get(page), out, page)
                status = "ok" if not results[page] else f"{len(results[page])} problem(s)"
                print(f"[site-check] {page}: {status}")
        finally:
            devtools.close()
            server.shutdown()
    (out / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("site"), help="the built site")
    parser.add_argument("--out", type=Path, default=Path("site-screenshots"), help="screenshots")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: found)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    problems = check_api_anchors(args.site)
    results = check_site(args.site, args.out, args.chromium)
    problems += [f"{page}: {problem}" for page, found in results.items() for problem in found]
    for line in problems:
        print(f"[site-check] FAIL {line}")
    shots = ", ".join(f"{args.out}/{name}.png" for name, _, _ in SCREENSHOTS.values())
    print(f"[site-check] screenshots: {shots} (+ -full.png); {time.monotonic() - start:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
