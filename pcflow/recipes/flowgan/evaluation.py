"""Single-view reconstruction metrics in the paper's layout, and the mean-cloud baseline."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from pcflow.recipes.flowgan.config import EvalConfig

if TYPE_CHECKING:
    from pcflow.recipes.flowgan.model import FlowGAN

__all__ = [
    "METRICS",
    "Diagnosis",
    "EvaluationResult",
    "MeanCloudBaseline",
    "comparison_table",
    "diagnose_reconstruction",
    "evaluate_reconstruction",
    "select_per_category",
]

METRICS = ("CD", "EMD", "F-score")
"""The reported metrics, in the paper's column order."""

# Display scale and direction of each metric; JSON files hold the raw values.
_DISPLAY = {
    "CD": (1e3, "x1e3", "lower"),
    "EMD": (1e2, "x1e2", "lower"),
    "F-score": (1e2, "%", "higher"),
}

Predictor = Callable[[dict[str, Any], int], Tensor]


@dataclass
class EvaluationResult:
    """Per-category and mean metrics of one method.

    Values are raw: CD the squared-distance Chamfer distance (mean over each cloud's points
    in both directions, summed), EMD the mean matched Euclidean distance, F-score a fraction
    in ``[0, 1]`` at the threshold in ``settings`` on squared distances. ``mean`` is the mean
    over categories (each category counts once, as in the paper's tables).

    Arguments:
        per_category: ``{category: {"CD", "EMD", "F-score", "count"}}``.
        mean: ``{"CD", "EMD", "F-score", "count"}`` over categories.
        settings: How the numbers were computed (points, EMD method, threshold, split).
    """

    per_category: dict[str, dict[str, float]]
    mean: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        """Write `to_dict` as JSON."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
        return Path(path)

    def table(self) -> str:
        """A Markdown table: one row per category and the mean, one column per metric."""
        header = ["category", "shapes"] + [_column(m) for m in METRICS]
        rows = [
            [name, str(int(values["count"]))] + [_format(m, values[m]) for m in METRICS]
            for name, values in self.per_category.items()
        ]
        rows.append(
            ["**mean**", str(int(self.mean["count"]))] + [_format(m, self.mean[m]) for m in METRICS]
        )
        return _markdown(header, rows) + "\n\n" + _settings_note(self.settings)


def _column(metric: str) -> str:
    _, unit, direction = _DISPLAY[metric]
    arrow = "↓" if direction == "lower" else "↑"
    return f"{metric} ({unit}) {arrow}"


def _format(metric: str, value: float) -> str:
    return f"{value * _DISPLAY[metric][0]:.3f}" if metric != "F-score" else f"{100 * value:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def _settings_note(settings: dict[str, Any]) -> str:
    if not settings:
        return ""
    return (
        f"{settings.get('num_points')} predicted vs {settings.get('num_points')} ground-truth "
        f"points per shape, unit scale, split {settings.get('split', '?')!r}; CD: squared "
        f"distances; EMD: {settings.get('emd_method')} assignment, mean Euclidean distance; "
        f"F-score at {settings.get('fscore_threshold')} on squared distances; mean over "
        "categories."
    )


def comparison_table(results: dict[str, EvaluationResult], *, best: bool = True) -> str:
    """Markdown tables comparing methods: one per metric, categories as rows, methods as columns.

    Arguments:
        results: ``{method name: EvaluationResult}``, all on the same split and settings.
        best: Mark each row's best value in bold.
    """
    names = list(results)
    categories = list(next(iter(results.values())).per_category) if results else []
    blocks = []
    for metric in METRICS:
        header = ["category", *names]
        rows = []
        for category in [*categories, "mean"]:
            values = [
                (r.mean if category == "mean" else r.per_category[category])[metric]
                for r in results.values()
            ]
            target = min(values) if _DISPLAY[metric][2] == "lower" else max(values)
            cells = [
                f"**{_format(metric, v)}**" if best and v == target else _format(metric, v)
                for v in values
            ]
            rows.append(["**mean**" if category == "mean" else category, *cells])
        blocks.append(f"{_column(metric)}\n\n" + _markdown(header, rows))
    first = next(iter(results.values())) if results else None
    note = _settings_note(first.settings) if first is not None else ""
    return "\n\n".join(blocks) + ("\n\n" + note if note else "")


def select_per_category(dataset: Dataset, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` samples per category, spread evenly over each category.

    Samples of one object (its views) are contiguous in pcflow's datasets, so even spreading
    visits as many objects as possible.
    """
    categories = _sample_categories(dataset)
    by_category: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(categories):
        by_category[name].append(index)
    chosen = []
    for indices in by_category.values():
        if limit is None or len(indices) <= limit:
            chosen += indices
        else:
            positions = np.linspace(0, len(indices) - 1, limit).round().astype(int)
            chosen += [indices[p] for p in positions]
    return sorted(chosen)


def _sample_categories(dataset: Dataset) -> list[str]:
    # The synthetic dataset knows each sample's category without loading it.
    index = getattr(dataset, "_category_index", None)
    views = getattr(getattr(dataset, "config", None), "views_per_object", None)
    names = getattr(dataset, "categories", None)
    if index is not None and views and names is not None:
        return [names[int(index[i // views])] for i in range(len(dataset))]  # type: ignore[arg-type]
    return [dataset[i]["category_name"] for i in range(len(dataset))]  # type: ignore[arg-type]


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
    from tqdm.auto import tqdm

    from pcflow.losses import chamfer_distance
    from pcflow.metrics import earth_movers_distance, f_score

    config = EvalConfig() if config is None else config
    indices = select_per_category(dataset, config.max_per_category)
    if not indices:
        raise ValueError("the evaluation dataset is empty")
    loader = DataLoader(Subset(dataset, indices), batch_size=config.batch_size, shuffle=False)
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        truth = batch["points"].to(device)
        if truth.shape[1] != config.num_points:
            raise ValueError(
                f"the evaluation data holds {truth.shape[1]} points per shape but "
                f"eval.num_points is {config.num_points}; build it with as many points"
            )
        pred = predict(batch, config.num_points).to(device=device, dtype=truth.dtype)
        if pred.shape != truth.shape:
            raise ValueError(
                f"predict returned shape {tuple(pred.shape)}, expected {tuple(truth.shape)}"
            )
        bad = ~torch.isfinite(pred).flatten(1).all(1)
        if bool(bad.any()):
            names = sorted({n for n, b in zip(batch["category_name"], bad) if b})
            raise ValueError(
                f"predict returned {int(bad.sum())} clouds holding NaN or infinite points "
                f"(categories {names})"
            )
        chamfer, _ = chamfer_distance(pred, truth, batch_reduction=None)
        emd = earth_movers_distance(pred, truth, method=config.emd_method)
        fscore = f_score(pred, truth, threshold=config.fscore_threshold, squared=True).f_score
        for name, c, e, f in zip(batch["category_name"], chamfer, emd, fscore):
            sums[name]["CD"] += float(c)
            sums[name]["EMD"] += float(e)
            sums[name]["F-score"] += float(f)
            sums[name]["count"] += 1
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
    # pcflow's synthetic dataset exposes each object's full surface sample; other datasets
    # give one sample per (object, view), deduplicated by model id.
    if hasattr(dataset, "object_points") and hasattr(dataset, "num_objects"):
        views = dataset.config.views_per_object  # type: ignore[attr-defined]
        categories = _sample_categories(dataset)
        return [
            (categories[i * views], torch.as_tensor(np.asarray(dataset.object_points(i))))  # type: ignore[attr-defined]
            for i in range(dataset.num_objects)  # type: ignore[attr-defined]
        ]
    seen, result = set(), []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        sample = dataset[index]
        key = (sample["category_name"], sample["model_id"])
        if key not in seen:
            seen.add(key)
            result.append((sample["category_name"], sample["points"]))
    return result


@dataclass
class Diagnosis:
    """Where a FlowGAN's reconstruction error comes from: the image encoder or the decoder.

    Arguments:
        image: Metrics of the reconstruction from the image (the image Gaussian's mean ``z``).
        bound: Metrics of the *autoencoding bound*: the flow decoding the posterior mean of
            the true cloud (what a perfect image encoder would hand it).
        latent_distance: ``{category: value, ..., "mean": value}``: the mean Euclidean distance
            between the image Gaussian's mean and the true cloud's posterior mean.
        latent_norm: As ``latent_distance``, the mean norm of the posterior means (its scale).
        temperature: The sampling temperature of both.
    """

    image: EvaluationResult
    bound: EvaluationResult
    latent_distance: dict[str, float]
    latent_norm: dict[str, float]
    temperature: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    def table(self) -> str:
        """A Markdown table: per category, CD, EMD and F-score from the image and the bound,
        and the latent distance (relative to the posterior means' norm in brackets)."""
        header = ["category"]
        for metric in METRICS:
            header += [f"{_column(metric)} image", "bound"]
        header.append("latent distance")
        rows = []
        for category in [*self.image.per_category, "mean"]:
            image = self.image.mean if category == "mean" else self.image.per_category[category]
            bound = self.bound.mean if category == "mean" else self.bound.per_category[category]
            row = ["**mean**" if category == "mean" else category]
            for metric in METRICS:
                row += [_format(metric, image[metric]), _format(metric, bound[metric])]
            distance, norm = self.latent_distance[category], self.latent_norm[category]
            row.append(f"{distance:.3f} ({distance / max(norm, 1e-12):.2f})")
            rows.append(row)
        note = (
            f"image: z is the image Gaussian's mean; bound: z is the posterior mean of the true "
            f"cloud (the autoencoding bound); latent distance: mean |z_image - z_posterior| (in "
            f"brackets, over the mean |z_posterior|); temperature {self.temperature:g}. "
        )
        return _markdown(header, rows) + "\n\n" + note + _settings_note(self.image.settings)


@torch.no_grad()
def diagnose_reconstruction(
    model: FlowGAN,
    dataset: Dataset,
    config: EvalConfig | None = None,
    *,
    temperature: float | None = None,
    encoder_points: int | None = None,
    split: str = "test",
    progress: bool = True,
    seed: int = 0,
) -> Diagnosis:
    """Evaluate a FlowGAN's reconstruction from images next to its autoencoding bound.

    For every sample, the flow decodes two latents: the image Gaussian's mean (what
    `FlowGAN.reconstruct` does) and the posterior mean of the sample's true cloud
    (`FlowGAN.autoencode`). Both are scored with `evaluate_reconstruction`'s metrics, and the
    distance between the two latents is averaged per category. A bound about as bad as the
    image reconstruction says the decoder holds the model back; a good bound with a large
    latent distance says the image encoder does.

    Arguments:
        model: A `FlowGAN`.
        dataset: The evaluation split (``"points"`` of ``config.num_points`` points).
        config: Evaluation settings; ``None`` for the defaults.
        temperature: Sampling temperature; ``None`` for ``config.temperature``.
        encoder_points: Points of the true cloud given to the point encoder (its first ones);
            ``None`` for ``model.config.data.num_points``, the size it was trained on.
        split: The split's name, recorded in the settings.
        progress: Show progress bars.
        seed: Seed of both evaluations' samples (the caller's random state is kept).

    Returns:
        A `Diagnosis`.
    """
    config = EvalConfig() if config is None else config
    if not hasattr(model, "autoencode"):
        raise TypeError(
            f"model must be a FlowGAN (with a point encoder), got {type(model).__name__}"
        )
    temperature = config.temperature if temperature is None else temperature
    count = model.config.data.num_points if encoder_points is None else encoder_points
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"encoder_points must be a positive integer, got {count!r}")
    distances: dict[str, list[float]] = defaultdict(list)
    norms: dict[str, list[float]] = defaultdict(list)

    def from_image(batch: dict[str, Any], num_points: int) -> Tensor:
        return model.reconstruct(batch["image"], num_points, temperature=temperature)

    def from_posterior(batch: dict[str, Any], num_points: int) -> Tensor:
        points = batch["points"][:, :count]
        z_posterior = model.posterior_mean(points)
        with model._evaluating():  # BatchNorm in evaluation mode, as in reconstruct
            z_image = model.image_distribution(batch["image"]).mean
        for name, d, n in zip(
            batch["category_name"],
            (z_image - z_posterior).norm(dim=1),
            z_posterior.norm(dim=1),
        ):
            distances[name].append(float(d))
            norms[name].append(float(n))
        return model.autoencode(points, num_points, temperature=temperature)

    results = []
    for predict in (from_image, from_posterior):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            results.append(
                evaluate_reconstruction(predict, dataset, config, split=split, progress=progress)
            )
    image, bound = results
    for result in results:
        result.settings["temperature"] = temperature
    bound.settings["latent"] = "posterior mean of the true cloud"
    image.settings["latent"] = "image Gaussian's mean"

    def per_category(values: dict[str, list[float]]) -> dict[str, float]:
        table = {name: float(np.mean(v)) for name, v in sorted(values.items())}
        table["mean"] = float(np.mean(list(table.values())))
        return table

    return Diagnosis(image, bound, per_category(distances), per_category(norms), temperature)
