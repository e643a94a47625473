"""The HTML views in a real headless Chromium (network off: file:// pages): they draw, count,
colour and turn together, and the flow's steps and log-densities reach the page intact."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcflow.flows import dpf_flow
from pcflow.viz import (
    flow_trajectory,
    point_log_density,
    view_flow,
    view_point_clouds,
    view_sample_reconstructions,
)

# viridis' ends (matplotlib's table, as sRGB bytes): the colours of the lowest and highest value.
LOW, HIGH = (68, 1, 84), (253, 231, 37)

_PIXELS_JS = """
(() => {
  const canvas = window.pcflowViews[%d].canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const near = (i, c) => Math.abs(data[i] - c[0]) <= 3 && Math.abs(data[i + 1] - c[1]) <= 3
    && Math.abs(data[i + 2] - c[2]) <= 3;
  let drawn = 0, low = 0, high = 0;
  const rows = new Array(canvas.height).fill(0);
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] === 255 && data[i + 1] === 255 && data[i + 2] === 255) continue;
    drawn++;
    rows[Math.floor(i / 4 / canvas.width)]++;
    if (near(i, %s)) low++;
    if (near(i, %s)) high++;
  }
  return {drawn, low, high, rows};
})()
"""


def pixels(page, index: int) -> dict:
    return page.evaluate(_PIXELS_JS % (index, list(LOW), list(HIGH)))


def two_valued_clouds(sizes: tuple[int, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(n, 3)) * [1.0, 0.5, 0.8] for n in sizes]
    values = [(rng.random(n) < 0.5).astype(np.float32) for n in sizes]
    return clouds, values


def test_views_draw_every_point_in_the_value_colours(browser, tmp_path: Path) -> None:
    sizes = (2000, 1500, 1000)
    clouds, values = two_valued_clouds(sizes)
    path = tmp_path / "view.html"
    view_point_clouds(clouds, path, values=values, titles=["a", "b", "c"], point_size=3)
    page = browser.open(path)
    try:
        assert page.evaluate("window.pcflowViews.length") == 3
        for i, n in enumerate(sizes):
            assert page.evaluate(f"window.pcflowViews[{i}].count") == n
            found = pixels(page, i)
            assert found["drawn"] > 500, f"panel {i} is (nearly) blank: {found['drawn']} pixels"
            # Values 0 and 1 span the colour range: every drawn pixel is one of its two ends.
            assert found["low"] > 100 and found["high"] > 100
            assert found["low"] + found["high"] >= 0.99 * found["drawn"]
        page.evaluate("window.pcflowView.setColour('height')")
        # By height, the colours run through the ramp: the two ends are no longer all there is.
        found = pixels(page, 0)
        assert found["low"] + found["high"] < 0.5 * found["drawn"]
        assert page.problems() == []
    finally:
        browser.close_page(page)


def test_positions_decode_within_the_quantisation_bound(browser, tmp_path: Path) -> None:
    cloud = np.random.default_rng(1).uniform(-2, 3, size=(3000, 3))
    path = tmp_path / "view.html"
    view_point_clouds([cloud], path)
    page = browser.open(path)
    try:
        shown = np.array(page.evaluate("Array.from(window.pcflowViews[0].positions)"))
    finally:
        browser.close_page(page)
    side = cloud.max(0) - cloud.min(0)
    # 16 bits over each axis's span: half a step of rounding, plus float32's own rounding.
    bound = side / 65535 / 2 + np.abs(cloud).max(0) * 2.0**-23
    assert np.all(np.abs(shown.reshape(-1, 3) - cloud) <= bound * 1.01)


def test_turning_one_view_turns_the_others(browser, tmp_path: Path) -> None:
    clouds, values = two_valued_clouds((2000, 2000, 2000))
    path = tmp_path / "view.html"
    view_point_clouds(clouds, path, values=values)
    page = browser.open(path)
    try:
        before = [pixels(page, i)["rows"] for i in range(3)]
        camera = page.evaluate("window.pcflowView.camera.position.toArray()")
        box = page.evaluate(
            "(() => { const r = window.pcflowViews[0].canvas.getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; })()"
        )
        page.drag(box[0] + box[2] / 2, box[1] + box[3] / 2, 120, 40)
        page.evaluate("new Promise((done) => requestAnimationFrame(() => setTimeout(done, 50)))")
        after = [pixels(page, i)["rows"] for i in range(3)]
        assert page.evaluate("window.pcflowView.camera.position.toArray()") != camera
        for i in range(3):
            assert after[i] != before[i], f"panel {i} did not turn with panel 0"
        page.evaluate("window.pcflowView.reset(); window.pcflowView.render()")
        assert [pixels(page, i)["rows"] for i in range(3)] == before
    finally:
        browser.close_page(page)


def test_snapshot_is_a_png_of_every_panel(browser, tmp_path: Path) -> None:
    clouds, values = two_valued_clouds((500, 500))
    path = tmp_path / "view.html"
    view_point_clouds(clouds, path, values=values, panel_size=200)
    page = browser.open(path)
    try:
        url = page.evaluate("window.pcflowView.snapshot()")
    finally:
        browser.close_page(page)
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as picture:
        assert picture.size == (400, 224)  # two 200 px panels side by side, a caption below
        rgb = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert (np.abs(rgb - LOW).max(1) <= 3).sum() > 50
    assert (np.abs(rgb - HIGH).max(1) <= 3).sum() > 50


def test_gallery_shows_images_and_the_flows_log_density(browser, tmp_path: Path) -> None:
    torch.manual_seed(0)
    flow = dpf_flow(context_features=8, num_layers=6, hidden_features=16)
    latents = torch.randn(2, 8)
    predictions = flow.sample(800, latents)
    with torch.no_grad():
        expected = flow.log_prob(predictions, latents, per_point=True)
    samples = [
        {"image": torch.rand(3, 24, 24), "points": torch.randn(600, 3), "category_name": name}
        for name in ("chair", "lamp")
    ]
    path = tmp_path / "gallery.html"
    view_sample_reconstructions(
        samples, {"flow": list(predictions)}, path,
        log_densities={"flow": list(point_log_density(flow, predictions, latents))},
    )  # fmt: skip
    page = browser.open(path)
    try:
        assert page.evaluate("document.querySelectorAll('img.pcflow-image').length") == 2
        assert page.evaluate("window.pcflowViews.map((v) => v.count)") == [800, 600, 800, 600]
        for row in range(2):
            shown = np.array(page.evaluate(f"Array.from(window.pcflowViews[{2 * row}].values)"))
            np.testing.assert_array_equal(shown, expected[row].numpy())  # float32 both ways
            assert page.evaluate(f"window.pcflowViews[{2 * row + 1}].values") is None
        assert page.evaluate("document.querySelector('select').value") == "value"
        assert all(pixels(page, i)["drawn"] > 300 for i in range(4))
        assert page.problems() == []
    finally:
        browser.close_page(page)


def test_flow_view_moves_points_from_the_base_draws_to_the_shape(browser, tmp_path: Path) -> None:
    torch.manual_seed(0)
    flow = dpf_flow(context_features=8, num_layers=6, hidden_features=16)
    latents = torch.randn(1, 8)
    path = tmp_path / "flow.html"
    view_flow(flow, latents, path, num_points=700, seed=3, scale=2.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        steps = flow_trajectory(flow, 700, latents)[:, 0].numpy() * 2.0
    page = browser.open(path)
    try:
        bound = (steps.max((0, 1)) - steps.min((0, 1))) / 65535 / 2 * 1.01 + 1e-6
        for step in (0, 3, 6):
            page.evaluate(f"window.pcflowView.showStep({step}); window.pcflowView.render()")
            shown = np.array(page.evaluate("Array.from(window.pcflowViews[0].positions)"))
            assert np.all(np.abs(shown.reshape(-1, 3) - steps[step]) <= bound), step
        label = page.evaluate("document.querySelector('.pcflow-step').textContent")
        assert label.startswith("after layer 6 of 6: PointAffineCoupling moves")
        page.evaluate("window.pcflowView.showStep(2.5)")  # halfway between two layers
        shown = np.array(page.evaluate("Array.from(window.pcflowViews[0].positions)"))
        np.testing.assert_allclose(
            shown.reshape(-1, 3), (steps[2] + steps[3]) / 2, atol=float(bound.max()) + 1e-5
        )
        assert page.problems() == []
    finally:
        browser.close_page(page)


@pytest.mark.slow
def test_first_frame_of_three_clouds_of_100k_points(browser, tmp_path: Path) -> None:
    # A generous bound (the budget is 3 s; benchmarks/test_viewer.py measures it).
    rng = np.random.default_rng(0)
    path = tmp_path / "big.html"
    view_point_clouds([rng.normal(size=(100_000, 3)) for _ in range(3)], path)
    page = browser.open(path, timeout=60)
    try:
        assert page.evaluate("window.pcflowViews.map((v) => v.count)") == [100_000] * 3
        assert page.evaluate("window.pcflowFirstFrame") < 10_000
    finally:
        browser.close_page(page)
