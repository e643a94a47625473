"""Generation metrics of PointFlow: MMD, COV and 1-NNA with Chamfer and Earth Mover's distances."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pcflow._checks import check_points
from pcflow.metrics.chamfer import chamfer_per_shape
from pcflow.metrics.emd import earth_movers_distance
from pcflow.ops.assignment import EMD_METHODS

__all__ = [
    "coverage",
    "generation_metrics",
    "minimum_matching_distance",
    "nearest_neighbour_accuracy",
    "pairwise_chamfer",
    "pairwise_emd",
]


def _check_sets(a: Tensor, b: Tensor | None, same_size: bool) -> None:
    _, num_a, dim_a = check_points("a" if b is not None else "clouds", a)
    if b is None:
        return
    _, num_b, dim_b = check_points("b", b)
    if dim_a != dim_b:
        raise ValueError(
            f"a and b must have the same point dimension, got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if same_size and num_a != num_b:
        raise ValueError(
            f"EMD needs clouds of equal size, got {num_a} points per cloud in a and {num_b} "
            f"in b (shapes {tuple(a.shape)} and {tuple(b.shape)})"
        )


def _pairwise(
    a: Tensor,
    b: Tensor | None,
    distance,
    batch_size: int,
    progress: bool,
    description: str,
) -> Tensor:
    """Distances of all pairs ``(a[i], b[j])``; with ``b=None`` the symmetric ``a`` vs ``a``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    symmetric = b is None
    other = a if symmetric else b
    rows, cols = a.shape[0], other.shape[0]
    if symmetric:
        index_i, index_j = torch.triu_indices(rows, cols, offset=1)
    else:
        grid = torch.arange(rows * cols)
        index_i, index_j = grid // cols, grid % cols
    values = torch.empty(index_i.shape[0], dtype=torch.float64)
    with tqdm(total=index_i.shape[0], desc=description, unit="pair", disable=not progress) as bar:
        for start in range(0, index_i.shape[0], batch_size):
            stop = min(start + batch_size, index_i.shape[0])
            i, j = index_i[start:stop], index_j[start:stop]
            values[start:stop] = distance(a[i.to(a.device)], other[j.to(a.device)]).double().cpu()
            bar.update(stop - start)
    matrix = torch.zeros(rows, cols, dtype=torch.float64)
    matrix[index_i, index_j] = values
    if symmetric:
        matrix[index_j, index_i] = values
    return matrix


def pairwise_chamfer(
    a: Tensor,
    b: Tensor | None = None,
    batch_size: int = 256,
    progress: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Chamfer distance between every cloud of ``a`` and every cloud of ``b``.

    Squared Euclidean nearest-neighbour distances, mean over each cloud's points, both
    directions summed (PointFlow's convention, ``pcflow.metrics.chamfer_per_shape``). Pairs are
    evaluated ``batch_size`` at a time through ``pcflow.losses.chamfer_distance`` (KD-tree on
    CPU, parallel across pairs). With ``b=None`` the matrix of ``a`` against itself is computed
    from its upper triangle (the distance is symmetric; the diagonal is 0).

    Arguments:
        a: ``(S, N, D)`` clouds.
        b: ``(R, M, D)`` clouds, or ``None`` for ``a`` against itself.
        batch_size: Pairs per call.
        progress: Show a tqdm progress bar over pairs.
        backend: Nearest-neighbour backend, see ``pcflow.ops.knn_points``.

    Returns:
        ``(S, R)`` float64 CPU tensor of distances.

    Example:
        >>> import torch
        >>> from pcflow.metrics import pairwise_chamfer
        >>> clouds = torch.rand(3, 100, 3)
        >>> pairwise_chamfer(clouds).diagonal()
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    _check_sets(a, b, same_size=False)
    return _pairwise(
        a,
        b,
        lambda x, y: chamfer_per_shape(x, y, backend=backend),
        batch_size,
        progress,
        "pairwise CD",
    )


def pairwise_emd(
    a: Tensor,
    b: Tensor | None = None,
    method: str = "exact",
    batch_size: int = 64,
    progress: bool = False,
    tol: float = 0.01,
    num_workers: int | None = None,
) -> Tensor:
    """Earth Mover's distance between every cloud of ``a`` and every cloud of ``b``.

    Mean matched Euclidean distance (``pcflow.metrics.earth_movers_distance``), pairs solved
    ``batch_size`` at a time (in parallel threads for ``"exact"``). With ``b=None`` only the
    upper triangle of ``a`` against itself is solved.

    Arguments:
        a: ``(S, N, D)`` clouds.
        b: ``(R, N, D)`` clouds of the same size, or ``None`` for ``a`` against itself.
        method: ``"exact"``, ``"auction"`` or ``"sinkhorn"``.
        batch_size: Pairs per call.
        progress: Show a tqdm progress bar over pairs.
        tol: Certified relative error of the approximate methods.
        num_workers: Threads of the exact solver (``None``: all cores).

    Returns:
        ``(S, R)`` float64 CPU tensor of distances.
    """
    _check_sets(a, b, same_size=True)
    if method not in EMD_METHODS:
        raise ValueError(f"method must be one of {EMD_METHODS}, got {method!r}")
    return _pairwise(
        a,
        b,
        lambda x, y: earth_movers_distance(x, y, method=method, tol=tol, num_workers=num_workers),
        batch_size,
        progress,
        f"pairwise EMD ({method})",
    )


def minimum_matching_distance(generated_to_reference: Tensor) -> float:
    """MMD: the mean over reference clouds of the distance to their closest generated cloud.

    Arguments:
        generated_to_reference: ``(S, R)`` distances, generated clouds in rows.

    Returns:
        The MMD, in the distance's units.
    """
    return float(generated_to_reference.min(dim=0).values.mean())


def coverage(generated_to_reference: Tensor) -> float:
    """COV: the fraction of reference clouds that are the nearest neighbour of a generated one.

    Each generated cloud covers its nearest reference cloud (the first one on exact ties, as
    ``torch.min`` in PointFlow's code).

    Arguments:
        generated_to_reference: ``(S, R)`` distances, generated clouds in rows.

    Returns:
        The coverage in ``[0, 1]``.
    """
    nearest = generated_to_reference.argmin(dim=1)
    return nearest.unique().numel() / generated_to_reference.shape[1]


def nearest_neighbour_accuracy(
    generated_to_generated: Tensor,
    generated_to_reference: Tensor,
    reference_to_reference: Tensor,
) -> float:
    """1-NNA: leave-one-out accuracy of the 1-nearest-neighbour classifier on the union.

    Every cloud of the union of generated and reference clouds is classified by its nearest
    other cloud; 1-NNA is the fraction classified correctly. 0.5 means the two sets are
    indistinguishable; 1.0 that they are fully separated; a value below 0.5 means each cloud
    sits closer to the other set than to its own, as for a generator that reproduces the
    reference set (identical sets of distinct clouds give 0). Where several nearest neighbours
    tie exactly, the cloud counts as the fraction of them with its own label, the expected
    accuracy under random tie-breaking (PointFlow's ``topk`` picks one arbitrarily).

    Arguments:
        generated_to_generated: ``(S, S)`` distances among generated clouds.
        generated_to_reference: ``(S, R)`` distances, generated clouds in rows.
        reference_to_reference: ``(R, R)`` distances among reference clouds.

    Returns:
        The accuracy in ``[0, 1]``.
    """
    num_generated, num_reference = generated_to_reference.shape
    distances = torch.cat(
        [
            torch.cat([generated_to_generated, generated_to_reference], dim=1),
            torch.cat([generated_to_reference.T, reference_to_reference], dim=1),
        ]
    ).clone()
    distances.fill_diagonal_(float("inf"))
    labels = torch.cat(
        [torch.zeros(num_generated, dtype=torch.bool), torch.ones(num_reference, dtype=torch.bool)]
    )
    nearest = distances == distances.min(dim=1, keepdim=True).values
    same_label = nearest & (labels[None, :] == labels[:, None])
    accuracy = same_label.sum(1).double() / nearest.sum(1).double()
    return float(accuracy.mean())


def generation_metrics(
    generated: Tensor,
    reference: Tensor,
    metrics: Sequence[str] = ("cd", "emd"),
    batch_size: int = 64,
    progress: bool = True,
    emd_method: str = "exact",
    emd_tol: float = 0.01,
    num_workers: int | None = None,
) -> dict[str, float]:
    """MMD, COV and 1-NNA between generated and reference clouds, as PointFlow defines them.

    With ``D`` a distance between clouds (Chamfer ``"cd"`` or Earth Mover's ``"emd"``), ``S``
    the generated and ``R`` the reference set:

    - MMD: mean over reference clouds of the distance to their closest generated cloud;
    - COV: fraction of reference clouds that are the nearest neighbour of some generated cloud;
    - 1-NNA: leave-one-out 1-nearest-neighbour accuracy on ``S`` and ``R`` together (ideal 0.5).

    Chamfer uses squared distances (mean per cloud, both directions summed), EMD the mean
    matched unsquared distance (``earth_movers_distance``), as PointFlow's evaluation code.
    COV and 1-NNA are fractions in ``[0, 1]`` (papers print percent); MMD is in the distance's
    units (papers often print CD times ``10^3`` and EMD times ``10^2``). Normalise the clouds
    as the paper you compare with does before calling. The three matrices (``S x R``, ``S x S``,
    ``R x R``) are computed in batches with progress bars.

    Arguments:
        generated: ``(S, N, D)`` generated clouds.
        reference: ``(R, N, D)`` reference clouds (the same ``N`` for EMD).
        metrics: Any of ``"cd"``, ``"emd"``.
        batch_size: Pairs per call of the distance.
        progress: Show progress bars.
        emd_method: ``"exact"`` (the default, for tables), ``"auction"`` or ``"sinkhorn"``.
        emd_tol: Certified relative error of the approximate EMD methods.
        num_workers: Threads of the exact EMD solver (``None``: all cores).

    Returns:
        A dict with ``"MMD-CD"``, ``"COV-CD"``, ``"1-NNA-CD"`` and/or ``"MMD-EMD"``,
        ``"COV-EMD"``, ``"1-NNA-EMD"``.

    References:
        Yang, G. et al. "PointFlow: 3D point cloud generation with continuous normalizing
        flows." ICCV 2019 (and its ``metrics/evaluation_metrics.py``).

    Example:
        >>> import torch
        >>> from pcflow.metrics import generation_metrics
        >>> clouds = torch.rand(4, 64, 3)
        >>> generation_metrics(clouds, clouds, metrics=("cd",), progress=False)["COV-CD"]
        1.0
    """
    check_points("generated", generated)
    check_points("reference", reference)
    if generated.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"generated and reference must have the same point dimension, got shapes "
            f"{tuple(generated.shape)} and {tuple(reference.shape)}"
        )
    unknown = set(metrics) - {"cd", "emd"}
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of ('cd', 'emd'), got {metrics!r}")
    if "emd" in metrics:
        if generated.shape[1] != reference.shape[1]:
            raise ValueError(
                f"EMD needs clouds of equal size, got {generated.shape[1]} points per generated "
                f"and {reference.shape[1]} per reference cloud"
            )
        if emd_method not in EMD_METHODS:
            raise ValueError(f"emd_method must be one of {EMD_METHODS}, got {emd_method!r}")
    results: dict[str, float] = {}
    for name in ("cd", "emd"):
        if name not in metrics:
            continue
        if name == "cd":

            def pairwise(a: Tensor, b: Tensor | None) -> Tensor:
                return pairwise_chamfer(a, b, batch_size=batch_size, progress=progress)

        else:

            def pairwise(a: Tensor, b: Tensor | None) -> Tensor:
                return pairwise_emd(
                    a,
                    b,
                    method=emd_method,
                    batch_size=batch_size,
                    progress=progress,
                    tol=emd_tol,
                    num_workers=num_workers,
                )

        cross = pairwise(generated, reference)
        among_generated = pairwise(generated, None)
        among_reference = pairwise(reference, None)
        suffix = name.upper()
        results[f"MMD-{suffix}"] = minimum_matching_distance(cross)
        results[f"COV-{suffix}"] = coverage(cross)
        results[f"1-NNA-{suffix}"] = nearest_neighbour_accuracy(
            among_generated, cross, among_reference
        )
    return results
