"""The HTML views' contents, checked in Python: what the page holds, its size, and bad input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pcflow.viz import view_point_clouds, view_sample_reconstructions


def page_data(page: str) -> dict:
    found = re.search(
        r'<script type="application/json" id="pcflow-data">(.*?)</script>', page, re.S
    )
    assert found is not None
    return json.loads(found.group(1))


def decoded(panel: dict) -> np.ndarray:
    codes = np.frombuffer(base64.b64decode(panel["positions"]), dtype="<u2").reshape(-1, 3)
    return np.asarray(panel["offset"]) + codes * np.asarray(panel["scale"])


def test_page_holds_the_points_values_and_images() -> None:
    rng = np.random.default_rng(0)
    clouds = [rng.uniform(-1, 2, size=(500, 3)), torch.randn(300, 3)]
    values = [rng.normal(size=500), None]
    page = view_point_clouds(
        clouds, titles=["a", "b"], values=values, images=[torch.rand(3, 8, 8), None]
    )
    data = page_data(page)
    first, second = data["panels"]
    assert [first["count"], second["count"]] == [500, 300]
    assert first["image"].startswith("data:image/png;base64,") and "image" not in second
    side = clouds[0].max(0) - clouds[0].min(0)
    assert np.all(np.abs(decoded(first) - clouds[0]) <= side / 65535 / 2 * (1 + 1e-9))
    stored = np.frombuffer(base64.b64decode(first["values"]), dtype="<f4")
    np.testing.assert_array_equal(stored, values[0].astype(np.float32))
    assert "values" not in second
    assert data["valueRange"] == pytest.approx(np.percentile(values[0], [1, 99]).tolist())
    assert data["colour"] == "auto"


def test_page_is_self_contained() -> None:
    page = view_point_clouds([torch.randn(10, 3)], title="a </script> title")
    # Nothing is fetched: no external script, stylesheet, font or image.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", page)
    assert "Three.js Authors" in page and "MIT License" in page
    assert page_data(page)["title"] == "a </script> title"  # escaped inside the data


def test_three_clouds_of_10k_points_fit_in_5_mb() -> None:
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(10_000, 3)) for _ in range(3)]
    page = view_point_clouds(clouds, values=[c[:, 0] for c in clouds])
    assert len(page.encode()) <= 5 * 2**20


def test_written_pages_never_replace_a_users_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "view.html"
    view_point_clouds([torch.randn(10, 3)], path)
    first = path.read_text()
    view_point_clouds([torch.randn(20, 3)], path)  # our own page: replaced
    assert path.read_text() != first
    theirs = tmp_path / "notes.html"
    theirs.write_text("<p>mine</p>")
    with pytest.raises(FileExistsError, match=r"notes\.html"):
        view_point_clouds([torch.randn(10, 3)], theirs)
    assert theirs.read_text() == "<p>mine</p>"


def test_gallery_rows_are_image_predictions_truth() -> None:
    samples = [
        {"image": torch.rand(3, 8, 8), "points": torch.randn(50, 3), "category_name": name}
        for name in ("chair", "lamp")
    ]
    predictions = {"A": [torch.randn(40, 3)] * 2, "B": [torch.randn(30, 3)] * 2}
    page = view_sample_reconstructions(
        samples, predictions, log_densities={"A": [torch.zeros(40), torch.ones(40)]}
    )
    data = page_data(page)
    assert data["columns"] == 4 and data["valueName"] == "log-density"
    titles = [panel["title"] for panel in data["panels"]]
    assert titles == [
        "chair: image", "chair: A", "chair: B", "chair: truth",
        "lamp: image", "lamp: A", "lamp: B", "lamp: truth",
    ]  # fmt: skip
    has_values = ["values" in panel for panel in data["panels"]]
    assert has_values == [False, True, False, False] * 2
    assert "positions" not in data["panels"][0] and "image" in data["panels"][0]


def test_bad_input() -> None:
    cloud = torch.randn(5, 3)
    with pytest.raises(ValueError, match="empty"):
        view_point_clouds([])
    with pytest.raises(ValueError, match=r"clouds\[1\] must have shape \(N, 3\)"):
        view_point_clouds([cloud, torch.randn(5, 2)])
    with pytest.raises(ValueError, match=r"values\[0\] must have shape \(5,\).*got shape \(4,\)"):
        view_point_clouds([cloud], values=[torch.zeros(4)])
    with pytest.raises(ValueError, match=r"values\[0\] holds NaN"):
        view_point_clouds([cloud], values=[torch.full((5,), float("nan"))])
    with pytest.raises(ValueError, match="titles has 2 entries but there are 1 clouds"):
        view_point_clouds([cloud], titles=["a", "b"])
    with pytest.raises(ValueError, match="colour must be 'auto', 'height' or 'value', got 'red'"):
        view_point_clouds([cloud], colour="red")
    with pytest.raises(ValueError, match="colour='value' needs per-point values"):
        view_point_clouds([cloud], colour="value")
    with pytest.raises(ValueError, match="panel_size must be an integer of at least 64"):
        view_point_clouds([cloud], panel_size=10)
    sample = {"image": torch.rand(3, 8, 8), "points": cloud}
    with pytest.raises(ValueError, match="log_densities names 'B', which predictions lack"):
        view_sample_reconstructions([sample], {"A": [cloud]}, log_densities={"B": [cloud[:, 0]]})
    with pytest.raises(ValueError, match="A has 2 entries but there are 1 samples"):
        view_sample_reconstructions([sample], {"A": [cloud, cloud]})
    with pytest.raises(ValueError, match=r"predictions\['A'\]\[0\] must have shape \(N, 3\)"):
        view_sample_reconstructions([sample], {"A": [torch.randn(5, 2)]})
    with pytest.raises(ValueError, match=r"log_densities\['A'\]\[0\] must have shape \(5,\)"):
        view_sample_reconstructions([sample], {"A": [cloud]}, log_densities={"A": [cloud]})
    with pytest.raises(TypeError, match=r"unexpected option.*dpi"):
        view_sample_reconstructions([sample], [cloud], dpi=10)
