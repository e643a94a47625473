"""File size and time to first frame of an HTML view: pcflow's (three.js) against plotly's.

Run ``PYTHONPATH=. .venv/bin/python benchmarks/viewer_table.py`` (``--help`` for sizes); it
prints a Markdown table. Both pages hold the same clouds (3 per page, Gaussian, coloured by
height) and open offline from file:// in headless Chromium (SwiftShader WebGL, as in CI).
pcflow's page is `pcflow.viz.view_point_clouds`; plotly's is a ``Scatter3d`` figure with one
scene per cloud written by ``write_html(include_plotlyjs=True)`` (PyTorch3D's choice), skipped
when plotly is not importable (it is not a pcflow dependency: ``pip install --target DIR
plotly`` and put DIR on ``PYTHONPATH``). The time to first frame is ``performance.now()``
(milliseconds since the navigation started) when the page's first draw has returned: the end of
pcflow's first render, or plotly's ``newPlot`` promise; the median of ``--repeats`` loads, each
in a fresh tab.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pcflow.viz import view_point_clouds

_SITE_CHECK = Path(__file__).resolve().parents[1] / "tests" / "docs" / "site_check.py"


def pcflow_page(clouds: list[np.ndarray], path: Path) -> None:
    """pcflow's view of the clouds."""
    view_point_clouds(clouds, path)


def plotly_page(clouds: list[np.ndarray], path: Path) -> None:
    """plotly's view of the clouds: one 3D scene each, plotly.js inlined."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(clouds), specs=[[{"type": "scene"}] * len(clouds)])
    for i, cloud in enumerate(clouds):
        marker = {"size": 2, "color": cloud[:, 1], "colorscale": "Viridis"}
        figure.add_trace(
            go.Scatter3d(x=cloud[:, 0], y=cloud[:, 1], z=cloud[:, 2], mode="markers",
                         marker=marker),
            row=1, col=i + 1,
        )  # fmt: skip
    figure.update_layout(width=1000, height=360, showlegend=False)
    figure.write_html(
        path, include_plotlyjs=True, full_html=True,
        post_script="window.pcflowFirstFrame = performance.now();",
    )  # fmt: skip


def first_frame_ms(devtools, path: Path, timeout: float = 120.0) -> float:
    """Milliseconds from navigation to the first frame, in a fresh tab."""
    target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})
    session = session["sessionId"]
    devtools.send("Page.enable", session=session)
    devtools.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            value = devtools.send(
                "Runtime.evaluate",
                {"expression": "window.pcflowFirstFrame || null", "returnByValue": True},
                session=session,
            )["result"].get("value")
            if value is not None:
                return float(value)
            time.sleep(0.02)
        raise TimeoutError(f"{path.name} drew nothing within {timeout:.0f} s")
    finally:
        devtools.send("Target.closeTarget", {"targetId": target})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--clouds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("site_check", _SITE_CHECK)
    site_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site_check)
    site_check.TIMEOUT = 600.0  # a page that parses and draws for minutes blocks every reply
    writers: dict[str, Callable[[list[np.ndarray], Path], None]] = {
        "pcflow (three.js)": pcflow_page
    }
    if importlib.util.find_spec("plotly") is not None:
        import plotly

        writers[f"plotly {plotly.__version__}"] = plotly_page
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="pcflow-viewer-bench-") as folder:
        devtools = site_check.DevTools(site_check._find_chromium(), f"{folder}/profile")
        try:
            version = devtools.send("Browser.getVersion")["product"]
            print(f"{version}, headless, SwiftShader WebGL; {args.clouds} clouds per page\n")
            print("| viewer | points per cloud | file size | first frame (median) |")
            print("|---|---:|---:|---:|")
            for points in args.points:
                clouds = [rng.normal(size=(points, 3)) for _ in range(args.clouds)]
                for name, write in writers.items():
                    path = Path(folder) / f"{name.split()[0]}-{points}.html"
                    write(clouds, path)
                    times = [first_frame_ms(devtools, path) for _ in range(args.repeats)]
                    size = path.stat().st_size / 2**20
                    print(
                        f"| {name} | {points:,} | {size:.2f} MB | "
                        f"{statistics.median(times) / 1000:.2f} s |"
                    )
        finally:
            devtools.close()


if __name__ == "__main__":
    main()
