"""PointFlow's generation protocol, exactly and named: normalisations, per-category scores, the
oracle row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcflow._checks import check_points
from pcflow.metrics.generation import generation_metrics
from pcflow.metrics.tables import markdown_table

__all__ = [
    "NORMALIZATIONS",
    "PROTOCOL_COLUMNS",
    "PointFlowStatistics",
    "ProtocolTable",
    "box_normalize",
    "category_clouds",
    "generation_protocol",
    "normalize_clouds",
    "oracle_clouds",
    "protocol_scores",
]

NORMALIZATIONS = ("none", "pointflow", "lion-global", "lion-per-shape")
"""The protocol's normalisations, applied to generated and reference clouds alike:

- ``"none"``: the clouds as they are;
- ``"pointflow"``: PointFlow's per-dataset normalisation, ``(x - m) / s`` with ``m`` the mean
  of every point of the training set and ``s`` the standard deviation of all their coordinates
  together (`PointFlowStatistics`, as PointFlow's ``ShapeNet15kPointClouds`` loader);
- ``"lion-global"``: every cloud shifted and scaled by the reference set's bounding box, its
  centre to the origin and its longest side to ``[-1, 1]`` (LION's global normalisation);
- ``"lion-per-shape"``: each cloud by its own bounding box (LION's per-shape normalisation,
  also PVD's and DPM's).

Common shifts and scales (``"none"``, ``"pointflow"``, ``"lion-global"``) leave COV and 1-NNA
unchanged and scale MMD; the per-shape one changes every score."""

PROTOCOL_COLUMNS = (
    "1-NNA-CD", "1-NNA-EMD", "COV-CD", "COV-EMD", "MMD-CD", "MMD-EMD", "JSD",
)  # fmt: skip
"""The protocol's scores, in the order its tables print them."""

_PRINT_SCALE = {"MMD-CD": 1e3, "MMD-EMD": 1e2, "JSD": 1e2}
"""Papers print MMD-CD x10^3, MMD-EMD x10^2, JSD x10^2, COV and 1-NNA in percent."""


@dataclass(frozen=True)
class PointFlowStatistics:
    """PointFlow's per-dataset normalisation: ``(x - mean) / std`` of the training set.

    ``mean`` ``(3,)`` is the mean of every point of every training cloud; ``std`` the standard
    deviation (population, ``ddof=0``) of all their coordinates flattened into one vector, as
    PointFlow's loader computes ``all_points.reshape(-1).std()`` (one number, not per axis).

    Example:
        >>> import torch
        >>> stats = PointFlowStatistics.of(torch.tensor([[[0.0, 0, 0], [2, 2, 2]]]))
        >>> stats.mean.tolist(), stats.std
        ([1.0, 1.0, 1.0], 1.0)
    """

    mean: Tensor
    std: float

    @classmethod
    def of(cls, clouds: Tensor) -> PointFlowStatistics:
        """The statistics of training clouds ``(B, N, 3)`` (computed in float64)."""
        check_points("clouds", clouds, 3)
        values = clouds.detach().to("cpu", torch.float64)
        return cls(values.reshape(-1, 3).mean(0), float(values.reshape(-1).std(unbiased=False)))


def box_normalize(clouds: Tensor, box_of: Tensor | None = None) -> Tensor:
    """Shift and scale clouds by a bounding box: its centre to the origin, its longest side to
    ``[-1, 1]`` (LION's ``normalize_point_clouds``).

    Arguments:
        clouds: ``(B, N, 3)``.
        box_of: ``None`` for each cloud's own box (per shape); or clouds ``(R, M, 3)`` whose
            common box (over all their points) shifts and scales every cloud (global).

    Returns:
        ``(B, N, 3)``.

    Example:
        >>> import torch
        >>> box_normalize(torch.tensor([[[1.0, 0, 0], [3, 1, 0]]])).tolist()
        [[[-1.0, -0.5, 0.0], [1.0, 0.5, 0.0]]]
    """
    check_points("clouds", clouds, 3)
    if box_of is None:
        low, high = clouds.amin(1, keepdim=True), clouds.amax(1, keepdim=True)
    else:
        check_points("box_of", box_of, 3)
        points = box_of.reshape(1, -1, 3)
        low, high = points.amin(1, keepdim=True), points.amax(1, keepdim=True)
    centre = (low + high) / 2
    half_side = ((high - low).amax(-1, keepdim=True) / 2).clamp_min(torch.finfo(clouds.dtype).tiny)
    return (clouds - centre) / half_side


def normalize_clouds(
    clouds: Tensor,
    normalization: str,
    *,
    reference: Tensor | None = None,
    statistics: PointFlowStatistics | None = None,
) -> Tensor:
    """Clouds ``(B, N, 3)`` under one of `NORMALIZATIONS`.

    Arguments:
        clouds: ``(B, N, 3)``.
        normalization: A name of `NORMALIZATIONS`.
        reference: The reference (test) clouds, for ``"lion-global"``.
        statistics: The training set's `PointFlowStatistics`, for ``"pointflow"``.
    """
    check_points("clouds", clouds, 3)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if normalization == "none":
        return clouds
    if normalization == "pointflow":
        if statistics is None:
            raise ValueError("normalization 'pointflow' needs the training set's statistics")
        return (clouds - statistics.mean.to(clouds)) / statistics.std
    if normalization == "lion-per-shape":
        return box_normalize(clouds)
    if reference is None:
        raise ValueError("normalization 'lion-global' needs the reference clouds")
    return box_normalize(clouds, reference)


def protocol_scores(
    generated: Tensor,
    reference: Tensor,
    *,
    normalization: str = "pointflow",
    statistics: PointFlowStatistics | None = None,
    num_points: int = 2048,
    metrics: Sequence[str] = ("cd", "emd", "jsd"),
    emd_method: str = "auction",
    progress: bool = False,
    **options: Any,
) -> dict[str, float]:
    """One category's PointFlow scores: as many generated clouds as reference (test) clouds,
    ``num_points`` each, normalised alike, scored by `pcflow.metrics.generation_metrics`.

    JSD needs clouds in the ball of radius 0.5: after the normalisation both sets are scaled
    by one factor that puts the reference set's farthest point at radius 0.5 (a common scale
    changes no other score).

    Arguments:
        generated: ``(S, num_points, 3)``.
        reference: ``(S, num_points, 3)``, the test clouds.
        normalization: One of `NORMALIZATIONS`.
        statistics: The training set's `PointFlowStatistics` (``"pointflow"``).
        num_points: Points per cloud the protocol asks for (PointFlow: 2,048).
        metrics: Any of ``"cd"``, ``"emd"``, ``"jsd"``.
        emd_method: `pcflow.metrics.earth_movers_distance` method.
        progress: Show progress bars.
        options: More keywords of `generation_metrics` (``cache_dir``, ``batch_size``, ...).

    Returns:
        The scores of `generation_metrics` (fractions and distances, unscaled).
    """
    check_points("generated", generated, 3)
    check_points("reference", reference, 3)
    if generated.shape != reference.shape or generated.shape[1] != num_points:
        raise ValueError(
            f"the protocol needs as many generated as reference clouds, {num_points} points "
            f"each; got generated {tuple(generated.shape)} and reference {tuple(reference.shape)}"
        )
    generated = normalize_clouds(generated, normalization, reference=reference,
                                 statistics=statistics)  # fmt: skip
    reference = normalize_clouds(reference, normalization, reference=reference,
                                 statistics=statistics)  # fmt: skip
    distances = [m for m in metrics if m != "jsd"]
    scores = {}
    if distances:
        scores = generation_metrics(generated, reference, distances, progress=progress,
                                    emd_method=emd_method, **options)  # fmt: skip
    if "jsd" in metrics:
        factor = 0.5 / float(reference.norm(dim=-1).max()) * (1 - 1e-6)
        scores.update(generation_metrics(generated * factor, reference * factor, ("jsd",),
                                         progress=False))  # fmt: skip
    return scores


def oracle_clouds(train: Tensor, num_clouds: int, seed: int = 0) -> Tensor:
    """The oracle row's "generated" set: ``num_clouds`` training clouds drawn without
    replacement (seeded), scored against the test set as if generated. A model whose samples
    were as good as real shapes of the category would score as it does.

    Arguments:
        train: The category's training clouds ``(T, N, 3)``.
        num_clouds: How many to draw: the test set's size.
        seed: Seed of the draw.

    Example:
        >>> import torch
        >>> oracle_clouds(torch.rand(10, 8, 3), 4).shape
        torch.Size([4, 8, 3])
    """
    check_points("train", train, 3)
    if not 1 <= num_clouds <= train.shape[0]:
        raise ValueError(
            f"the oracle needs num_clouds between 1 and the {train.shape[0]} training clouds, "
            f"got {num_clouds}"
        )
    generator = torch.Generator().manual_seed(seed)
    return train[torch.randperm(train.shape[0], generator=generator)[:num_clouds]]


def category_clouds(
    dataset: Dataset, num_points: int, seed: int = 0, max_per_category: int | None = None
) -> dict[str, Tensor]:
    """Every object's cloud of ``num_points`` surface points (a seeded subset of the object's
    points, without replacement), by category: ``{category: (K, num_points, 3)}``.

    Arguments:
        dataset: A `pcflow.data.CategorizedShapes` split.
        num_points: Points per cloud.
        seed: Seed of the subsets.
        max_per_category: At most this many objects per category, the first ones (``None``:
            all).
    """
    from pcflow.data import CategorizedShapes  # pcflow.data loads trimesh and scipy

    if not isinstance(dataset, CategorizedShapes):
        raise TypeError(f"dataset must be a pcflow.data.CategorizedShapes, got {type(dataset)}")
    rng = np.random.default_rng(seed)
    clouds: dict[str, list[Tensor]] = {}
    for index in range(dataset.num_objects):
        name = dataset.object_category(index)
        if max_per_category is not None and len(clouds.get(name, ())) >= max_per_category:
            continue
        points = torch.as_tensor(np.asarray(dataset.object_points(index)), dtype=torch.float32)
        if points.shape[0] < num_points:
            raise ValueError(
                f"object {index} ({name}) holds {points.shape[0]} points, fewer than the "
                f"{num_points} asked for"
            )
        chosen = torch.from_numpy(rng.choice(points.shape[0], num_points, replace=False))
        clouds.setdefault(name, []).append(points[chosen])
    return {name: torch.stack(items) for name, items in clouds.items()}


@dataclass
class ProtocolTable:
    """Scores by row (a model, the oracle, the ablation) and category, with the settings.

    Arguments:
        scores: ``{row: {category: {score: value}}}`` (fractions and distances, unscaled).
        settings: How they were computed (normalisation, points, EMD method, ...).
    """

    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """One table per category, in the units papers print (see `PROTOCOL_COLUMNS`)."""
        categories = sorted({c for row in self.scores.values() for c in row})
        parts = []
        for category in categories:
            rows = []
            for name, row in self.scores.items():
                values = row.get(category, {})
                cells = [
                    f"{values[k] * (_PRINT_SCALE.get(k, 100)):.2f}" if k in values else ""
                    for k in PROTOCOL_COLUMNS
                ]
                rows.append([name, *cells])
            parts.append(f"**{category}**\n\n" + markdown_table(["", *PROTOCOL_COLUMNS], rows))
        note = ", ".join(f"{k}: {v}" for k, v in self.settings.items())
        units = "1-NNA and COV in %, MMD-CD x10^3, MMD-EMD x10^2, JSD x10^2"
        return "\n\n".join(parts) + f"\n\n{units}; {note}\n"


def generation_protocol(
    generators: dict[str, Callable[[str, int], Tensor]],
    test: dict[str, Tensor],
    train: dict[str, Tensor],
    *,
    normalization: str = "pointflow",
    oracle: bool = True,
    seed: int = 0,
    **options: Any,
) -> ProtocolTable:
    """PointFlow's protocol per category for every generator, with the oracle row.

    Arguments:
        generators: ``{row name: generate(category, num_clouds) -> (num_clouds, N, 3)}``.
        test: ``{category: (S, N, 3)}`` reference clouds (`category_clouds` of the test split).
        train: ``{category: (T, N, 3)}`` training clouds: the ``"pointflow"`` statistics and
            the oracle's draws.
        normalization: One of `NORMALIZATIONS`.
        oracle: Add the ``"oracle"`` row (`oracle_clouds`).
        seed: The oracle's seed.
        options: Keywords of `protocol_scores` (``metrics``, ``emd_method``, ...).
    """
    recorded = {k: v for k, v in options.items() if k not in ("progress", "cache_dir")}
    table = ProtocolTable(settings={"normalization": normalization, "seed": seed, **recorded})
    rows = dict(generators)
    if oracle:
        rows["oracle"] = lambda category, n: oracle_clouds(train[category], n, seed)
    for name, generate in rows.items():
        table.scores[name] = {}
        for category, reference in test.items():
            statistics = PointFlowStatistics.of(train[category]) if category in train else None
            generated = generate(category, reference.shape[0])
            table.scores[name][category] = protocol_scores(
                generated, reference, normalization=normalization, statistics=statistics,
                num_points=reference.shape[1], **options,
            )  # fmt: skip
    return table
