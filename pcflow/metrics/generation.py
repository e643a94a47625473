"""Generation metrics of PointFlow: MMD, COV and 1-NNA with Chamfer and Earth Mover's distances.

The pairwise distance matrices are computed in square blocks of clouds; with a ``cache_dir``
every finished block is saved, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pcflow._checks import check_points
from pcflow.metrics.chamfer import chamfer_per_shape
from pcflow.metrics.emd import earth_movers_distance
from pcflow.metrics.jsd import jensen_shannon_divergence
from pcflow.ops.assignment import EMD_METHODS

__all__ = [
    "coverage",
    "generation_metrics",
    "minimum_matching_distance",
    "nearest_neighbour_accuracy",
    "pairwise_chamfer",
    "pairwise_emd",
]

METRICS = ("cd", "emd", "jsd")
"""Names accepted by ``generation_metrics``' ``metrics``."""


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


class _BlockCache:
    """Finished blocks of one pairwise matrix, as ``.npy`` files in a folder of their own.

    The folder is named after a hash of the clouds and of the distance's settings, so a cache
    is only ever reused for the same computation. Files are written to a temporary name and
    renamed into place, so an interrupted write leaves no partial block; a block that cannot
    be read back is computed again and overwritten. Nothing else in ``directory`` is touched.
    """

    def __init__(self, directory: str | os.PathLike, key: str, description: dict) -> None:
        self.folder = Path(directory) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "manifest.json"
        if not manifest.exists():
            manifest.write_text(json.dumps(description, indent=2, sort_keys=True))

    def _path(self, row: int, col: int) -> Path:
        return self.folder / f"block-{row}-{col}.npy"

    def load(self, row: int, col: int, size: int) -> np.ndarray | None:
        try:
            values = np.load(self._path(row, col), allow_pickle=False)
        except (OSError, ValueError):
            return None
        if values.shape != (size,) or values.dtype != np.float64:
            return None
        return values

    def save(self, row: int, col: int, values: np.ndarray) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".block-", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            np.save(file, values)
        os.replace(temporary, self._path(row, col))


def _cache_key(a: Tensor, b: Tensor | None, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for clouds in (a, b):
        if clouds is None:
            digest.update(b"symmetric")
            continue
        array = np.ascontiguousarray(clouds.detach().cpu().numpy())
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:24]


def _pairwise(
    a: Tensor,
    b: Tensor | None,
    distance: Callable[[Tensor, Tensor], Tensor],
    batch_size: int,
    progress: bool,
    description: str,
    cache_dir: str | os.PathLike | None = None,
    settings: dict | None = None,
    block_size: int = 32,
) -> Tensor:
    """Distances of all pairs ``(a[i], b[j])``; with ``b=None`` the symmetric ``a`` vs ``a``.

    The matrix is covered by ``block_size x block_size`` blocks of clouds (for ``b=None`` only
    the blocks on and above the diagonal, and within diagonal blocks only ``i < j``); each
    block's pairs go to ``distance`` ``batch_size`` at a time, and with ``cache_dir`` the
    finished block is saved there and loaded instead of computed on the next call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    symmetric = b is None
    other = a if symmetric else b
    rows, cols = a.shape[0], other.shape[0]
    cache = None
    if cache_dir is not None:
        settings = {**(settings or {}), "what": description, "block_size": block_size}
        cache = _BlockCache(cache_dir, _cache_key(a, b, settings), settings)
    blocks = []
    for row in range(0, rows, block_size):
        for col in range(row if symmetric else 0, cols, block_size):
            i, j = torch.meshgrid(
                torch.arange(row, min(row + block_size, rows)),
                torch.arange(col, min(col + block_size, cols)),
                indexing="ij",
            )
            keep = (i < j) if symmetric and row == col else torch.ones_like(i, dtype=torch.bool)
            blocks.append((row // block_size, col // block_size, i[keep], j[keep]))
    matrix = torch.zeros(rows, cols, dtype=torch.float64)
    total = sum(index_i.numel() for *_, index_i, _ in blocks)
    with tqdm(total=total, desc=description, unit="pair", disable=not progress) as bar:
        for block_row, block_col, index_i, index_j in blocks:
            size = index_i.numel()
            values = cache.load(block_row, block_col, size) if cache is not None else None
            if values is None:
                values = np.empty(size, dtype=np.float64)
                for start in range(0, size, batch_size):
                    stop = min(start + batch_size, size)
                    i, j = index_i[start:stop].to(a.device), index_j[start:stop].to(a.device)
                    values[start:stop] = distance(a[i], other[j]).double().cpu().numpy()
                    bar.update(stop - start)
                if cache is not None:
                    cache.save(block_row, block_col, values)
            else:
                bar.update(size)
            matrix[index_i, index_j] = torch.from_numpy(values)
            if symmetric:
                matrix[index_j, index_i] = torch.from_numpy(values)
    return matrix


def pairwise_chamfer(
    a: Tensor,
    b: Tensor | None = None,
    batch_size: int = 256,
    progress: bool = False,
    backend: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    block_size: int = 32,
) -> Tensor:
    """Chamfer distance between every cloud of ``a`` and every cloud of ``b``.

    Squared Euclidean nearest-neighbour distances, mean over each cloud's points, both
    directions summed (PointFlow's convention, ``pcflow.metrics.chamfer_per_shape``). Pairs are
    evaluated ``batch_size`` at a time (KD-tree on CPU, parallel across pairs), block of clouds
    by block. With ``b=None`` the matrix of ``a`` against itself is computed from its upper
    triangle (the distance is symmetric; the diagonal is 0).

    Arguments:
        a: ``(S, N, D)`` clouds.
        b: ``(R, M, D)`` clouds, or ``None`` for ``a`` against itself.
        batch_size: Pairs per call.
        progress: Show a tqdm progress bar over pairs.
        backend: Nearest-neighbour backend, see ``pcflow.ops.knn_points``.
        cache_dir: Folder in which finished blocks are saved and from which a later call with
            the same clouds and settings loads them (resuming an interrupted run); ``None``:
            no cache.
        block_size: Clouds per side of a block (a block is the unit of caching).

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
        cache_dir,
        {"distance": "chamfer", "backend": backend},
        block_size,
    )


def pairwise_emd(
    a: Tensor,
    b: Tensor | None = None,
    method: str = "exact",
    batch_size: int = 64,
    progress: bool = False,
    tol: float = 0.01,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    block_size: int = 32,
) -> Tensor:
    """Earth Mover's distance between every cloud of ``a`` and every cloud of ``b``.

    Mean matched Euclidean distance (``pcflow.metrics.earth_movers_distance``), pairs solved
    ``batch_size`` at a time in parallel threads (both methods on CPU), block of clouds by
    block. With ``b=None`` only the upper triangle of ``a`` against itself is solved.

    Arguments:
        a: ``(S, N, D)`` clouds.
        b: ``(R, N, D)`` clouds of the same size, or ``None`` for ``a`` against itself.
        method: ``"exact"``, ``"auction"`` or ``"sinkhorn"``.
        batch_size: Pairs per call.
        progress: Show a tqdm progress bar over pairs.
        tol: Certified relative error of the approximate methods.
        num_workers: Threads solving pairs (``None``: all cores).
        cache_dir: Folder of finished blocks, to resume an interrupted run (see
            ``pairwise_chamfer``); ``None``: no cache.
        block_size: Clouds per side of a block.

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
        cache_dir,
        {"distance": "emd", "method": method, "tol": tol if method != "exact" else None},
        block_size,
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
    cache_dir: str | os.PathLike | None = None,
    block_size: int = 32,
    jsd_resolution: int = 28,
) -> dict[str, float]:
    """MMD, COV, 1-NNA and JSD between generated and reference clouds, as PointFlow defines them.

    With ``D`` a distance between clouds (Chamfer ``"cd"`` or Earth Mover's ``"emd"``), ``S``
    the generated and ``R`` the reference set:

    - MMD: mean over reference clouds of the distance to their closest generated cloud;
    - COV: fraction of reference clouds that are the nearest neighbour of some generated cloud;
    - 1-NNA: leave-one-out 1-nearest-neighbour accuracy on ``S`` and ``R`` together (ideal 0.5);
    - JSD (``"jsd"``): Jensen-Shannon divergence of the two sets' point densities on a
      ``28**3`` grid of the unit cube (``jensen_shannon_divergence``; clouds must lie in
      ``[-0.5, 0.5]**3``).

    Chamfer uses squared distances (mean per cloud, both directions summed), EMD the mean
    matched unsquared distance (``earth_movers_distance``), as PointFlow's evaluation code.
    COV and 1-NNA are fractions in ``[0, 1]`` (papers print percent); MMD is in the distance's
    units (papers often print CD times ``10^3`` and EMD times ``10^2``). Normalise the clouds
    as the paper you compare with does before calling.

    At scale: the three matrices (``S x R``, ``S x S``, ``R x R``) are computed in blocks of
    ``block_size`` clouds with progress bars, on every core (KD-tree threads for Chamfer, the
    EMD solver's threads), and with ``cache_dir`` every finished block is saved, so that a run
    that is interrupted resumes where it stopped when called again with the same arguments.
    100 against 100 clouds of 2,048 points, every metric, take a few minutes on two cores with
    ``emd_method="auction"`` (``docs/benchmarks.md``); the exact EMD takes hours.

    Arguments:
        generated: ``(S, N, D)`` generated clouds.
        reference: ``(R, N, D)`` reference clouds (the same ``N`` for EMD, ``D = 3`` for JSD).
        metrics: Any of ``"cd"``, ``"emd"``, ``"jsd"``.
        batch_size: Pairs per call of the distance.
        progress: Show progress bars.
        emd_method: ``"exact"`` (the default), ``"auction"`` (native on CPU, within a certified
            relative error ``emd_tol`` of exact; measured 2 to 10 times less) or
            ``"sinkhorn"``.
        emd_tol: Certified relative error of the approximate EMD methods.
        num_workers: Threads of the EMD solvers (``None``: all cores).
        cache_dir: Folder in which finished blocks are saved and reloaded (created if needed;
            only files pcflow writes there are touched); ``None``: no cache.
        block_size: Clouds per side of a block (the unit of caching).
        jsd_resolution: Grid points per axis of the JSD grid.

    Returns:
        A dict with ``"MMD-CD"``, ``"COV-CD"``, ``"1-NNA-CD"`` and/or ``"MMD-EMD"``,
        ``"COV-EMD"``, ``"1-NNA-EMD"`` and/or ``"JSD"``.

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
    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {metrics!r}")
    if "emd" in metrics:
        if generated.shape[1] != reference.shape[1]:
            raise ValueError(
                f"EMD needs clouds of equal size, got {generated.shape[1]} points per generated "
                f"and {reference.shape[1]} per reference cloud"
            )
        if emd_method not in EMD_METHODS:
            raise ValueError(f"emd_method must be one of {EMD_METHODS}, got {emd_method!r}")
    if "jsd" in metrics and generated.shape[-1] != 3:
        raise ValueError(
            f"JSD needs 3D points, got shapes {tuple(generated.shape)} and {tuple(reference.shape)}"
        )
    results: dict[str, float] = {}
    for name in ("cd", "emd"):
        if name not in metrics:
            continue
        if name == "cd":

            def pairwise(a: Tensor, b: Tensor | None) -> Tensor:
                return pairwise_chamfer(
                    a,
                    b,
                    batch_size=batch_size,
                    progress=progress,
                    cache_dir=cache_dir,
                    block_size=block_size,
                )

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
                    cache_dir=cache_dir,
                    block_size=block_size,
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
    if "jsd" in metrics:
        results["JSD"] = jensen_shannon_divergence(generated, reference, jsd_resolution)
    return results
