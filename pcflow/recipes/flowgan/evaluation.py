"""Single-view reconstruction metrics in the paper's layout, and the mean-cloud baseline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from pcflow.data import CategorizedShapes
from pcflow.losses import chamfer_distance
from pcflow.metrics import earth_movers_distance, f_score
from pcflow.recipes.flowgan.config import EvalConfig
from pcflow.recipes.flowgan.tables import METRICS, EvaluationResult

__all__ = [
    "MeanCloudBaseline",
    "check_prediction",
    "evaluate_reconstruction",
    "sample_categories",
    "select_per_category",
]

Predictor = Callable[[dict[str, Any], int], Tensor]
"""``predict(batch, num_points) -> (B, num_points, 3)``: a method under evaluation."""


def select_per_category(dataset: Dataset, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` samples per category, spread evenly over each category.

    Samples of one object (its views) are contiguous in pcflow's datasets, so even spreading
    visits as many objects as possible.
    """
    by_category: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(sample_categories(dataset)):
        by_category[name].append(index)
    chosen = []
    for indices in by_category.values():
        if limit is None or len(indices) <= limit:
            chosen += indices
        else:
            positions = np.linspace(0, len(indices) - 1, limit).round().astype(int)
            chosen += [indices[p] for p in positions]
    return sorted(chosen)


def sample_categories(dataset: Dataset) -> list[str]:
    """The category name of every sample of ``dataset`` (or of a `Subset` of one).

    A `pcflow.data.CategorizedShapes` dataset answers without loading its samples; any other
    dataset's samples are loaded for their ``"category_name"``.
    """
    if isinstance(dataset, CategorizedShapes):
        return [dataset.sample_category(i) for i in range(len(dataset))]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, CategorizedShapes):
        return [dataset.dataset.sample_category(int(i)) for i in dataset.indices]
    return [dataset[i]["category_name"] for i in range(len(dataset))]


@torch.no_grad()
def evaluate_reconstruction(
    predict: Predictor,
    dataset: Dataset,
    config: EvalConfig | None = None,
    *,
    split: str = "test",
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> EvaluationResult:
    """Evaluate single-view reconstruction: CD, EMD and F-score per category and their mean.

    Each sample's prediction of ``config.num_points`` points is compared with the sample's
    ``"points"`` (which must hold as many points) at unit scale, with the conventions of the
    FlowGAN paper's evaluation (see `EvaluationResult`).

    Arguments:
        predict: ``predict(batch, num_points) -> (B, num_points, 3)``, given a collated batch
            (``"image"``, ``"category_name"``, ...); e.g.
            ``lambda batch, n: model.reconstruct(batch["image"], n)``.
        dataset: The evaluation split.
        config: Evaluation settings; ``None`` for the defaults.
        split: The split's name, recorded in the settings.
        progress: Show a progress bar.
        device: Where the metrics are computed.

    Returns:
        An `EvaluationResult`.
    """
    config = EvalConfig() if config is None else config
    indices = select_per_category(dataset, config.max_per_category)
    if not indices:
        raise ValueError("the evaluation dataset is empty")
    loader = DataLoader(Subset(dataset, indices), batch_size=config.batch_size, shuffle=False)
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        truth = batch["points"].to(device)
        pred = predict(batch, config.num_points).to(device=device, dtype=truth.dtype)
        check_prediction(pred, truth, batch["category_name"], config.num_points)
        chamfer, _ = chamfer_distance(pred, truth, batch_reduction=None)
        emd = earth_movers_distance(pred, truth, method=config.emd_method)
        fscore = f_score(pred, truth, threshold=config.fscore_threshold, squared=True).f_score
        for name, c, e, f in zip(batch["category_name"], chamfer, emd, fscore):
            sums[name]["CD"] += float(c)
            sums[name]["EMD"] += float(e)
            sums[name]["F-score"] += float(f)
            sums[name]["count"] += 1
    return _result(sums, config, split)


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
            f"eval.num_points is {num_points}; build it with as many points"
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


def _result(sums: dict[str, dict[str, float]], config: EvalConfig, split: str) -> EvaluationResult:
    per_category = {
        name: {**{m: values[m] / values["count"] for m in METRICS}, "count": values["count"]}
        for name, values in sorted(sums.items())
    }
    mean = {m: float(np.mean([v[m] for v in per_category.values()])) for m in METRICS}
    mean["count"] = float(sum(v["count"] for v in per_category.values()))
    settings = {
        "split": split,
        "num_points": config.num_points,
        "emd_method": config.emd_method,
        "fscore_threshold": config.fscore_threshold,
        "fscore_distances": "squared",
        "chamfer": "squared distances, mean per direction, summed",
        "mean": "over categories",
    }
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
