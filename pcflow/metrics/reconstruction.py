"""Reconstruction metrics per category, in the FlowGAN paper's layout; the mean-cloud baseline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from pcflow.metrics.chamfer import chamfer_per_shape
from pcflow.metrics.emd import earth_movers_distance
from pcflow.metrics.fscore import f_score
from pcflow.metrics.tables import METRICS, EvaluationResult

__all__ = ["MeanCloudBaseline", "Predictor", "check_prediction", "evaluate_reconstruction"]

Predictor = Callable[[dict[str, Any], int], Tensor]
"""``predict(batch, num_points) -> (B, num_points, 3)``: a method under evaluation."""


@torch.no_grad()
def evaluate_reconstruction(
    predict: Predictor,
    dataset: Dataset,
    *,
    num_points: int = 2500,
    emd_method: str = "auction",
    fscore_threshold: float = 1e-3,
    batch_size: int = 16,
    max_per_category: int | None = None,
    split: str = "test",
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> EvaluationResult:
    """Evaluate reconstruction: CD, EMD and F-score per category and their mean.

    Each sample's prediction of ``num_points`` points is compared with the sample's
    ``"points"`` (which must hold as many points) at unit scale, with the conventions of the
    FlowGAN paper's evaluation code (see `EvaluationResult`): the Chamfer distance of
    `chamfer_per_shape`, the EMD of `earth_movers_distance`, the F-score on squared distances;
    per category, then the mean over categories.

    Arguments:
        predict: ``predict(batch, num_points) -> (B, num_points, 3)``, given a collated batch
            (``"image"``, ``"points"``, ``"category_name"``, ...); e.g.
            ``lambda batch, n: model.reconstruct(batch["image"], n)``.
        dataset: The evaluation split.
        num_points: Points predicted per shape and compared with as many true points (FlowGAN:
            2,500).
        emd_method: `earth_movers_distance`'s method.
        fscore_threshold: F-score threshold on squared distances (FlowGAN's code: 1e-3).
        batch_size: Shapes per batch.
        max_per_category: At most this many samples per category, spread over each category
            (`pcflow.data.select_per_category`); ``None`` for all.
        split: The split's name, recorded in the settings.
        progress: Show a progress bar.
        device: Where the metrics are computed.

    Returns:
        An `EvaluationResult`.
    """
    from pcflow.data import select_per_category  # pcflow.data loads trimesh and scipy

    indices = select_per_category(dataset, max_per_category)
    if not indices:
        raise ValueError("the evaluation dataset is empty")
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False)
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        truth = batch["points"].to(device)
        pred = predict(batch, num_points).to(device=device, dtype=truth.dtype)
        check_prediction(pred, truth, batch["category_name"], num_points)
        chamfer = chamfer_per_shape(pred, truth)
        emd = earth_movers_distance(pred, truth, method=emd_method)
        fscore = f_score(pred, truth, threshold=fscore_threshold, squared=True).f_score
        for name, c, e, f in zip(batch["category_name"], chamfer, emd, fscore):
            sums[name]["CD"] += float(c)
            sums[name]["EMD"] += float(e)
            sums[name]["F-score"] += float(f)
            sums[name]["count"] += 1
    settings = {
        "split": split,
        "num_points": num_points,
        "emd_method": emd_method,
        "fscore_threshold": fscore_threshold,
        "fscore_distances": "squared",
        "chamfer": "squared distances, mean per direction, summed",
        "mean": "over categories",
    }
    return _result(sums, settings)


def check_prediction(pred: Tensor, truth: Tensor, names: Sequence[str], num_points: int) -> None:
    """Check a batch's predicted clouds against its true ones before they are scored.

    Arguments:
        pred: Predicted clouds, ``(B, num_points, 3)``.
        truth: The batch's true clouds, ``(B, N, 3)``.
        names: The batch's category names, ``B`` of them (named in the error for NaN clouds).
        num_points: Points per cloud the evaluation asks for.

    Raises:
        ValueError: If ``truth`` does not hold ``num_points`` points, ``pred``'s shape differs
            from ``truth``'s, or a predicted cloud holds NaN or infinite points.
    """
    if truth.shape[1] != num_points:
        raise ValueError(
            f"the evaluation data holds {truth.shape[1]} points per shape but "
            f"num_points is {num_points}; build it with as many points"
        )
    if pred.shape != truth.shape:
        raise ValueError(
            f"predict returned shape {tuple(pred.shape)}, expected {tuple(truth.shape)}"
        )
    bad = ~torch.isfinite(pred).flatten(1).all(1)
    if bool(bad.any()):
        categories = sorted({n for n, b in zip(names, bad) if b})
        raise ValueError(
            f"predict returned {int(bad.sum())} clouds holding NaN or infinite points "
            f"(categories {categories})"
        )


def _result(sums: dict[str, dict[str, float]], settings: dict[str, Any]) -> EvaluationResult:
    per_category = {
        name: {**{m: values[m] / values["count"] for m in METRICS}, "count": values["count"]}
        for name, values in sorted(sums.items())
    }
    mean = {m: float(np.mean([v[m] for v in per_category.values()])) for m in METRICS}
    mean["count"] = float(sum(v["count"] for v in per_category.values()))
    return EvaluationResult(per_category, mean, settings)


class MeanCloudBaseline:
    """The trivial baseline: predict, for every image, the mean training cloud of its category.

    The mean of a category's clouds is taken as the mean of their point distributions: all
    training objects' surface points pooled (each object equally weighted), of which
    ``num_points`` are drawn at random once. It is told the category of each test image (an
    oracle FlowGAN does not get), and ignores the image otherwise.

    Arguments:
        num_points: Points in each mean cloud (more are drawn with repeats on demand).
        points_per_object: Points taken from each training object for the pool.
        seed: Seed of the draws.
    """

    def __init__(
        self, num_points: int = 2500, points_per_object: int = 2500, seed: int = 0
    ) -> None:
        self.num_points = num_points
        self.points_per_object = points_per_object
        self.seed = seed
        self.clouds: dict[str, Tensor] = {}

    def fit(self, dataset: Dataset) -> MeanCloudBaseline:
        """Build each category's mean cloud from a training dataset (one entry per object)."""
        generator = torch.Generator().manual_seed(self.seed)
        pools: dict[str, list[Tensor]] = defaultdict(list)
        for name, points in _object_clouds(dataset):
            count = min(self.points_per_object, points.shape[0])
            pools[name].append(points[torch.randperm(points.shape[0], generator=generator)[:count]])
        if not pools:
            raise ValueError("the training dataset is empty")
        for name, clouds in pools.items():
            pool = torch.cat(clouds)
            choice = torch.randperm(pool.shape[0], generator=generator)
            if pool.shape[0] < self.num_points:
                choice = torch.randint(pool.shape[0], (self.num_points,), generator=generator)
            self.clouds[name] = pool[choice[: self.num_points]].float()
        return self

    def predict(self, batch: dict[str, Any], num_points: int) -> Tensor:
        """The mean clouds ``(B, num_points, 3)`` of the batch's categories."""
        names: Sequence[str] = batch["category_name"]
        missing = sorted({n for n in names if n not in self.clouds})
        if missing:
            raise KeyError(f"no mean cloud for categories {missing}; fit on data that has them")
        clouds = []
        for name in names:
            cloud = self.clouds[name]
            if num_points != cloud.shape[0]:
                generator = torch.Generator().manual_seed(self.seed)
                cloud = cloud[torch.randint(cloud.shape[0], (num_points,), generator=generator)]
            clouds.append(cloud)
        return torch.stack(clouds)


def _object_clouds(dataset: Dataset) -> list[tuple[str, Tensor]]:
    from pcflow.data import CategorizedShapes

    # A CategorizedShapes dataset hands over each object's points; any other gives one sample
    # per (object, view), deduplicated by model id.
    if isinstance(dataset, CategorizedShapes):
        return [
            (dataset.object_category(i), torch.as_tensor(np.asarray(dataset.object_points(i))))
            for i in range(dataset.num_objects)
        ]
    seen, result = set(), []
    for index in range(len(dataset)):
        sample = dataset[index]
        key = (sample["category_name"], sample["model_id"])
        if key not in seen:
            seen.add(key)
            result.append((sample["category_name"], sample["points"]))
    return result
