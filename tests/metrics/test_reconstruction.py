"""Reconstruction evaluation: metrics per category against brute-force references, the
mean-cloud baseline, and the tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch.utils.data import Dataset

from pcflow.data import sample_categories, select_per_category
from pcflow.metrics import (
    EvaluationResult,
    MeanCloudBaseline,
    comparison_table,
    evaluate_reconstruction,
)


class Clouds(Dataset):
    """Three categories of random clouds, two objects each, two views per object."""

    names = ("bowl", "chair", "lamp")

    def __init__(self, num_points: int = 20, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.objects = torch.rand(6, num_points, 3, generator=generator) - 0.5

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> dict:
        obj = index // 2
        return {
            "image": torch.full((3, 8, 8), obj / 6),
            "points": self.objects[obj],
            "category": obj // 2,
            "category_name": self.names[obj // 2],
            "model_id": f"m{obj}",
        }


def _reference(pred: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[float, ...]:
    squared = cdist(pred, truth, "sqeuclidean")
    chamfer = squared.min(1).mean() + squared.min(0).mean()
    rows, cols = linear_sum_assignment(np.sqrt(squared))
    emd = np.sqrt(squared[rows, cols]).mean()
    precision = (squared.min(1) < threshold).mean()
    recall = (squared.min(0) < threshold).mean()
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return chamfer, emd, fscore


def test_metrics_per_category_match_brute_force() -> None:
    data = Clouds()
    shift = torch.tensor([0.01, -0.02, 0.03])

    def predict(batch: dict, num_points: int) -> torch.Tensor:
        noise = torch.sin(torch.arange(num_points * 3, dtype=torch.float32)).view(num_points, 3)
        return batch["points"] + shift + 0.02 * noise

    result = evaluate_reconstruction(
        predict, data, num_points=20, batch_size=5, fscore_threshold=1e-3, progress=False
    )
    expected = {name: [] for name in Clouds.names}
    for index in range(len(data)):
        sample = data[index]
        pred = predict({"points": sample["points"][None]}, 20)[0]
        expected[sample["category_name"]].append(
            _reference(pred.double().numpy(), sample["points"].double().numpy(), 1e-3)
        )
    for name, rows in expected.items():
        values = np.mean(rows, axis=0)
        got = result.per_category[name]
        assert got["count"] == 4
        np.testing.assert_allclose([got["CD"], got["EMD"], got["F-score"]], values, rtol=1e-4)
    for column, metric in enumerate(("CD", "EMD", "F-score")):
        category_means = [np.mean(rows, axis=0)[column] for rows in expected.values()]
        assert result.mean[metric] == pytest.approx(np.mean(category_means), rel=1e-4)
    assert result.mean["count"] == 12
    assert result.settings["fscore_threshold"] == 1e-3
    assert result.settings["fscore_distances"] == "squared"


def test_perfect_prediction() -> None:
    result = evaluate_reconstruction(
        lambda batch, n: batch["points"], Clouds(), num_points=20, progress=False
    )
    assert result.mean["CD"] == 0 and result.mean["EMD"] == pytest.approx(0, abs=1e-7)
    assert result.mean["F-score"] == 1


def test_select_per_category_spreads_over_objects() -> None:
    assert select_per_category(Clouds(), None) == list(range(12))
    chosen = select_per_category(Clouds(), 2)
    assert chosen == [0, 3, 4, 7, 8, 11]  # first and last sample of each category


def test_evaluation_errors() -> None:
    data = Clouds()
    with pytest.raises(ValueError, match=r"num_points is 30"):
        evaluate_reconstruction(lambda b, n: b["points"], data, num_points=30, progress=False)
    with pytest.raises(ValueError, match=r"predict returned shape \(4, 19, 3\)"):
        evaluate_reconstruction(
            lambda b, n: b["points"][:, :19],
            data,
            num_points=20,
            batch_size=4,
            progress=False,
        )


def test_mean_cloud_baseline() -> None:
    data = Clouds(num_points=20)
    baseline = MeanCloudBaseline(num_points=30, points_per_object=20).fit(data)
    assert set(baseline.clouds) == set(Clouds.names)
    for index, name in enumerate(Clouds.names):
        cloud = baseline.clouds[name]
        pool = torch.cat([data.objects[2 * index], data.objects[2 * index + 1]])
        # Every point comes from the category's training objects, and from both of them.
        distances = (cloud[:, None] - pool[None]).norm(dim=-1)
        assert distances.min(1).values.max() == 0
        owners = {int(i) // 20 for i in distances.argmin(1)}
        assert owners == {0, 1}
    prediction = baseline.predict({"category_name": ["lamp", "bowl"]}, 30)
    assert torch.equal(prediction[0], baseline.clouds["lamp"])
    assert baseline.predict({"category_name": ["lamp"]}, 7).shape == (1, 7, 3)
    with pytest.raises(KeyError, match="car"):
        baseline.predict({"category_name": ["car"]}, 30)


def test_tables() -> None:
    def result(cd: float) -> EvaluationResult:
        per = {name: {"CD": cd, "EMD": 0.05, "F-score": 0.5, "count": 4.0} for name in Clouds.names}
        return EvaluationResult(per, {"CD": cd, "EMD": 0.05, "F-score": 0.5, "count": 12.0})

    table = result(0.002).table()
    assert "| bowl" in table and "2.000" in table and "**mean**" in table and "50.00" in table
    text = comparison_table({"FlowGAN": result(0.002), "PSGN": result(0.004)})
    assert "| category | FlowGAN   | PSGN  |" in text
    assert "**2.000**" in text and "| 4.000" in text
    assert text.count("**mean**") == 3  # one table per metric


class CategorizedClouds(Clouds):
    """`Clouds` that answers `pcflow.data.CategorizedShapes` and refuses to load samples, so
    the test sees that selection and the baseline do not load them."""

    num_objects = 6

    def __getitem__(self, index: int) -> dict:
        raise AssertionError("a sample was loaded")

    def sample_category(self, index: int) -> str:
        return self.object_category(index // 2)

    def object_category(self, index: int) -> str:
        return self.names[index // 2]

    def object_points(self, index: int) -> torch.Tensor:
        return self.objects[index]


def test_categorized_datasets_answer_without_loading_samples() -> None:
    from torch.utils.data import Subset

    from pcflow.data import CategorizedShapes

    data = CategorizedClouds()
    assert isinstance(data, CategorizedShapes) and not isinstance(Clouds(), CategorizedShapes)
    assert sample_categories(data) == [Clouds.names[i // 4] for i in range(12)]
    assert sample_categories(Subset(data, [11, 0])) == ["lamp", "bowl"]
    assert select_per_category(data, 2) == select_per_category(Clouds(), 2)
    baseline = MeanCloudBaseline(num_points=30, points_per_object=20).fit(data)
    reference = MeanCloudBaseline(num_points=30, points_per_object=20).fit(Clouds())
    for name in Clouds.names:  # the same objects, in the same order: the same draws
        assert torch.equal(baseline.clouds[name], reference.clouds[name])
