"""K nearest neighbours between batches of point sets: brute-force tiles, KD-tree or PyTorch3D."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from pcflow._checks import check_lengths, check_points, check_same_batch
from pcflow.utils._optional import has_module, import_optional

__all__ = [
    "BACKENDS",
    "KDTREE_MIN_PAIRS",
    "KNN",
    "TILE_BYTES",
    "kdtree_available",
    "knn_gather",
    "knn_points",
    "pytorch3d_available",
    "resolve_backend",
]

BACKENDS = ("auto", "bruteforce", "kdtree", "pytorch3d")
"""Names accepted by the ``backend`` argument of ``knn_points`` and the losses built on it."""

KDTREE_MIN_PAIRS = 2**16
"""On CPU, ``backend="auto"`` uses the KD-tree when ``N * M`` (padded sizes) reaches this.

Measured with ``benchmarks/test_chamfer.py::test_switch_point`` (Chamfer forward, B = 32, on the
2-core development machine shared with other jobs; brute-force time over KD-tree time in three
runs): 0.2 to 0.5 up to ``N = M = 128`` (one outlier 0.95), 0.6 to 1.25 at 192, 0.9 to 1.8 at
256, 1.7 to 2.3 at 384, 3.4 to 10 at 512, 3 to 12 at 1,024 and 8 to 23 at 2,048. A tree costs a
fixed overhead per set, which small sets do not repay. The crossing fell at ``N = M`` of about
140, 220 and 300; ``2**16`` is ``N = M = 256``, within a factor of about 1.8 of the faster
choice in every run.
"""

TILE_COLUMNS = 2048

TILE_BYTES = 2**26
"""Memory budget (bytes) of one brute-force distance tile; the tiles cover the ``N x M`` matrix
one at a time, so the brute-force search never holds more than about this much."""


class KNN(NamedTuple):
    """The result of ``knn_points`` (the same fields as PyTorch3D's ``_KNN``).

    Attributes:
        dists: ``(B, N, K)`` squared Euclidean distances (``norm=2``) or L1 distances
            (``norm=1``) to the ``K`` nearest neighbours, ascending; differentiable with respect to
            both point sets. Zero where ``p1``'s set is shorter than ``N`` or ``p2``'s set has fewer
            than ``K`` points.
        idx: ``(B, N, K)`` int64 indices into ``p2`` of the neighbours; zero where ``dists`` is
            padding.
        knn: ``(B, N, K, D)`` the neighbours' coordinates if ``return_nn=True``, else ``None``.
    """

    dists: Tensor
    idx: Tensor
    knn: Tensor | None


@functools.lru_cache(maxsize=1)
def pytorch3d_available() -> bool:
    """Whether ``pytorch3d`` (with its compiled ``knn_points``) can be imported."""
    try:
        from pytorch3d.ops import knn_points as _  # noqa: F401
    except Exception:  # an import of a broken build raises more than ImportError
        return False
    return True


def kdtree_available(norm: int = 2) -> bool:
    """Whether the ``"kdtree"`` backend can run for ``norm``: ``pykdtree`` (``norm=2``, from
    ``pcflow[fast]``) or ``scipy`` (either norm, a requirement of pcflow) is installed."""
    return (norm == 2 and _pykdtree() is not None) or has_module("scipy")


def resolve_backend(
    backend: str, device: torch.device, num_points1: int, num_points2: int, norm: int = 2
) -> str:
    """The backend that ``backend`` means for sets of these sizes on this device.

    ``"auto"`` is PyTorch3D on CUDA when it is installed, the brute-force tiles on any other
    accelerator, and on CPU the KD-tree for sets with ``N * M >= KDTREE_MIN_PAIRS`` (the measured
    switch point) when a KD-tree library is installed (`kdtree_available`), brute force
    otherwise.

    Arguments:
        backend: One of ``BACKENDS``.
        device: Where the points are.
        num_points1: The padded size ``N`` of the query sets.
        num_points2: The padded size ``M`` of the searched sets.
        norm: ``2`` or ``1``; ``pykdtree`` serves only ``norm=2``.

    Returns:
        ``"bruteforce"``, ``"kdtree"`` or ``"pytorch3d"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "pytorch3d" and not pytorch3d_available():
        raise ImportError(
            'backend="pytorch3d" needs pytorch3d, which cannot be imported here; install it '
            '(see the installation page of pcflow\'s documentation) or use backend="auto"'
        )
    if backend == "kdtree" and not kdtree_available(norm):
        raise ImportError(
            'backend="kdtree" needs a KD-tree library, and neither pykdtree nor scipy is '
            "installed: pip install 'pcflow[fast]' (pykdtree, norm=2) or scipy, "
            'or use backend="auto"'
        )
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "pytorch3d" if pytorch3d_available() else "bruteforce"
    large = num_points1 * num_points2 >= KDTREE_MIN_PAIRS
    if device.type == "cpu" and large and kdtree_available(norm):
        return "kdtree"
    return "bruteforce"


def knn_points(
    p1: Tensor,
    p2: Tensor,
    lengths1: Tensor | None = None,
    lengths2: Tensor | None = None,
    norm: int = 2,
    K: int = 1,
    version: int = -1,
    return_nn: bool = False,
    return_sorted: bool = True,
    *,
    backend: str = "auto",
) -> KNN:
    """The ``K`` nearest neighbours in ``p2`` of every point of ``p1``, per batch element.

    A drop-in for ``pytorch3d.ops.knn_points``: the same arguments in the same order, the same
    result, and pcflow's one extra option, ``backend``, keyword-only. It needs no compiled
    extension. The search runs without gradient on one of three backends; the returned
    distances are then recomputed in torch from the found indices (a gather and a squared
    difference), so their gradient with respect to ``p1`` and ``p2`` is exact autograd, the same
    as a brute-force reference's wherever the nearest neighbour is unique.

    Backends:

    - ``"bruteforce"``: exact search over tiles of the ``N x M`` distance matrix (each tile holds
      about ``pcflow.ops.knn.TILE_BYTES``, 64 MiB, so memory stays bounded for any size); one
      batched matrix product per tile; any device.
    - ``"kdtree"``: a KD-tree per set (``pykdtree`` when installed, else ``scipy.spatial.cKDTree``;
      ``cKDTree`` for ``norm=1``), the batch spread over a thread pool; runs on CPU (tensors on
      another device make a round trip). Needs ``pcflow[fast]`` or scipy (a requirement of pcflow).
    - ``"pytorch3d"``: ``pytorch3d.ops.knn_points`` (optional dependency).
    - ``"auto"``: PyTorch3D on CUDA when installed, else brute-force tiles on accelerators; on
      CPU the KD-tree when ``N * M >= pcflow.ops.knn.KDTREE_MIN_PAIRS`` (``2**16``, e.g.
      ``N = M = 256``) and a KD-tree library is installed, brute force otherwise. The switch
      point was measured (``benchmarks/test_chamfer.py::test_switch_point``, B = 32, 2 CPU
      cores): brute force is 2 to 5 times faster up to ``N = M = 128``, the two cross between
      about 140 and 300, and the KD-tree is 3 to 10 times faster at 512 and 8 to 23 times at
      2,048.

    Values: distances agree with brute force up to float rounding; ties (several neighbours at the
    same distance) may be broken differently by different backends.

    Half precision: float16 and bfloat16 clouds are searched in float32 and their distances
    returned in their own dtype. Where a distance between finite points overflows that dtype
    (float16 tops out at 65,504, so points more than about 256 apart for ``norm=2``), this
    raises ``ValueError`` naming ``p1``, ``p2`` and the dtype rather than returning ``inf`` (as
    Kaolin does): pass float32 or float64 tensors, or rescale the clouds.

    Arguments:
        p1: ``(B, N, D)`` query points, padded when ``lengths1`` is given.
        p2: ``(B, M, D)`` points searched, padded when ``lengths2`` is given.
        lengths1: ``(B,)`` integer number of valid points of each set of ``p1``, in ``[1, N]``;
            ``None`` means all ``N``.
        lengths2: ``(B,)`` integer number of valid points of each set of ``p2``, in ``[1, M]``;
            ``None`` means all ``M``.
        norm: ``2`` for squared Euclidean distances, ``1`` for L1 distances.
        K: Number of neighbours, ``>= 1``. Where a set of ``p2`` has fewer than ``K`` points the
            missing neighbours are padded with zero distances and indices (as PyTorch3D does).
        version: PyTorch3D's choice of CUDA kernel, passed to it with ``backend="pytorch3d"``
            (``-1``: PyTorch3D chooses); pcflow's own backends have a single implementation and
            accept any integer.
        return_nn: Whether to also return the neighbours' coordinates.
        return_sorted: Whether the ``K`` neighbours must come in ascending order of distance.
            pcflow's backends always sort them (``False`` allows any order, and sorted is one);
            PyTorch3D's receives the flag.
        backend: ``"auto"``, ``"bruteforce"``, ``"kdtree"`` or ``"pytorch3d"`` (keyword-only).

    Returns:
        A ``KNN`` ``(dists (B, N, K), idx (B, N, K), knn (B, N, K, D) or None)``; ``dists``
        are squared Euclidean distances (``norm=2``) or L1 distances (``norm=1``).

    Example:
        >>> import torch
        >>> from pcflow.ops import knn_points
        >>> p1, p2 = torch.rand(2, 100, 3), torch.rand(2, 80, 3)
        >>> dists, idx, _ = knn_points(p1, p2, K=4)
        >>> dists.shape, idx.shape
        (torch.Size([2, 100, 4]), torch.Size([2, 100, 4]))
        >>> lengths = torch.tensor([100, 50])
        >>> knn_points(p1, p2, lengths, None, 1, 4).dists.shape  # PyTorch3D's positional order
        torch.Size([2, 100, 4])
    """
    batch, num1, dim = check_points("p1", p1)
    _, num2, _ = check_points("p2", p2, dim)
    check_same_batch("p1", p1, "p2", p2)
    check_lengths("lengths1", lengths1, batch, num1)
    check_lengths("lengths2", lengths2, batch, num2)
    _check_options(K, norm, p1, p2)
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an int (-1: the default), got {version!r}")
    backend = resolve_backend(backend, p1.device, num1, num2, norm)
    if backend == "pytorch3d":
        from pytorch3d.ops import knn_points as knn_points_pytorch3d

        result = knn_points_pytorch3d(
            p1,
            p2,
            lengths1=lengths1,
            lengths2=lengths2,
            norm=norm,
            K=K,
            version=version,
            return_nn=return_nn,
            return_sorted=return_sorted,
        )
        return KNN(result.dists, result.idx, result.knn)
    lengths1 = _full_lengths(lengths1, batch, num1, p1.device)
    lengths2 = _full_lengths(lengths2, batch, num2, p1.device)
    if backend == "kdtree":
        (idx,) = kdtree_search([(p1, p2, lengths1, lengths2)], K, norm)
    else:
        idx = bruteforce_search(p1, p2, lengths1, lengths2, K, norm)
    dists, idx = distances_from_indices(p1, p2, idx, lengths1, lengths2, norm)
    check_distances_finite("p1", p1, "p2", p2, dists)
    nn = knn_gather(p2, idx, lengths2) if return_nn else None
    return KNN(dists, idx, nn)


def knn_gather(x: Tensor, idx: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Gather per-point features of ``x`` at the indices found by ``knn_points``.

    Arguments:
        x: ``(B, M, U)`` features (coordinates, normals, ...) of the searched sets.
        idx: ``(B, N, K)`` int64 indices into ``x``'s second dimension.
        lengths: ``(B,)`` valid sizes of ``x``'s sets; neighbour slots ``k >= lengths[b]`` are
            filled with zeros (as in PyTorch3D). ``None`` means all ``M``.

    Returns:
        ``(B, N, K, U)`` with ``out[b, i, k] = x[b, idx[b, i, k]]``.
    """
    batch, num, k = idx.shape
    features = x.shape[2]
    flat = idx.reshape(batch, num * k, 1).expand(-1, -1, features)
    out = x.gather(1, flat).reshape(batch, num, k, features)
    if lengths is not None and int(lengths.min()) < k:
        missing = torch.arange(k, device=x.device)[None] >= lengths[:, None]  # (B, K)
        out = out.masked_fill(missing[:, None, :, None], 0.0)
    return out


def distances_from_indices(
    p1: Tensor, p2: Tensor, idx: Tensor, lengths1: Tensor, lengths2: Tensor, norm: int
) -> tuple[Tensor, Tensor]:
    """Differentiable distances from ``p1`` to ``p2[idx]``, padding zeroed (internal helper).

    Returns:
        ``(dists (B, N, K), idx (B, N, K))``, both zero at padded slots.
    """
    num1, k = idx.shape[1], idx.shape[2]
    valid = (torch.arange(num1, device=p1.device)[None, :, None] < lengths1[:, None, None]) & (
        torch.arange(k, device=p1.device)[None, None, :] < lengths2[:, None, None]
    )
    idx = idx.masked_fill(~valid, 0)
    difference = p1[:, :, None, :] - knn_gather(p2, idx)
    dists = difference.square().sum(-1) if norm == 2 else difference.abs().sum(-1)
    return dists.masked_fill(~valid, 0.0), idx


def check_distances_finite(name1: str, p1: Tensor, name2: str, p2: Tensor, dists: Tensor) -> None:
    """Raise ``ValueError`` if distances between finite points overflowed their dtype."""
    if not bool(torch.isfinite(dists).all()):
        largest = float(torch.maximum(p1.detach().abs().max(), p2.detach().abs().max()))
        raise ValueError(
            f"{name1} and {name2}: distances between their points overflow {p1.dtype} (largest "
            f"|coordinate| {largest:.3g}); pass float64 tensors or rescale the clouds"
        )


def search_copies(
    p1: Tensor, p2: Tensor, lengths1: Tensor, lengths2: Tensor
) -> tuple[Tensor, Tensor]:
    """Detached copies of both sets for the neighbour search: padding zeroed, safe range.

    Padded points may hold any finite values, so they are set to zero (the search never
    returns them). Valid coordinates beyond ``2**40`` (squares near float32's limit) or below
    ``2**-40`` (squares near its smallest normal) are scaled by the same power of two, which is
    exact and changes no nearest neighbour, so the search never sees an infinite or vanishing
    distance (the KD-tree then answered an out-of-range index, brute force arbitrary
    neighbours).
    """
    valid1 = torch.arange(p1.shape[1], device=p1.device)[None] < lengths1.to(p1.device)[:, None]
    valid2 = torch.arange(p2.shape[1], device=p2.device)[None] < lengths2.to(p2.device)[:, None]
    p1 = torch.where(valid1[..., None], p1.detach(), 0.0)
    p2 = torch.where(valid2[..., None], p2.detach(), 0.0)
    largest = torch.maximum(p1.abs().max(), p2.abs().max())
    if largest == 0 or 2.0**-40 <= largest <= 2.0**40:
        return p1, p2
    _, exponent = torch.frexp(largest.double())
    scale = 2.0 ** (-int(exponent))
    return p1 * scale, p2 * scale


def _check_options(K: int, norm: int, p1: Tensor, p2: Tensor) -> None:
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an integer >= 1, got {K!r}")
    if norm not in (1, 2):
        raise ValueError(
            f"norm must be 1 (L1) or 2 (squared Euclidean), got {norm!r} (knn_points takes "
            "PyTorch3D's order: p1, p2, lengths1, lengths2, norm, K; pass K=... by name)"
        )
    if p1.device != p2.device:
        raise ValueError(f"p1 is on {p1.device} but p2 is on {p2.device}")
    if p1.dtype != p2.dtype:
        raise TypeError(f"p1 has dtype {p1.dtype} but p2 has dtype {p2.dtype}")


def _full_lengths(lengths: Tensor | None, batch: int, num: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), num, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# Brute force


def _search_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _tile_sizes(batch: int, num1: int, num2: int, itemsize: int) -> tuple[int, int, int]:
    # A tile is (batch chunk, rows, columns); a few temporaries of its size live at once.
    elements = max(1, TILE_BYTES // (4 * itemsize))
    cols = min(num2, TILE_COLUMNS)
    rows = min(num1, max(1, elements // cols))
    shapes = min(batch, max(1, elements // (rows * cols)))
    return shapes, rows, cols


def _augmented(
    p1: Tensor, p2: Tensor, lengths1: Tensor, lengths2: Tensor, norm: int
) -> tuple[Tensor, Tensor]:
    """Both sets prepared so that one batched matrix product gives a tile of distances.

    For ``norm=2``, ``a' = (a, |a|^2, 1)`` and ``b' = (-2 b, 1, |b|^2)`` give
    ``a' . b' = |a - b|^2`` in a single ``bmm`` (no extra passes over the tile); a huge
    ``|a|^2`` or ``|b|^2`` puts padded points out of reach (huge, not infinite, so that no
    ``0 * inf`` can appear inside the BLAS kernel). The expansion loses precision far from the
    origin, so both sets are first moved by the same vector (the valid mean of ``p2``), which
    leaves every distance unchanged. For ``norm=1`` the moved sets are returned as they are.
    """
    dtype = _search_dtype(p1.dtype)
    p1, p2 = search_copies(p1.to(dtype), p2.to(dtype), lengths1, lengths2)
    valid1 = torch.arange(p1.shape[1], device=p1.device)[None] < lengths1[:, None]
    valid2 = torch.arange(p2.shape[1], device=p2.device)[None] < lengths2[:, None]
    centre = p2.sum(1, keepdim=True) / lengths2[:, None, None].to(dtype)  # padding is zero
    # Zero the padding again after the move so that it cannot reach a valid point.
    p1 = (p1 - centre).masked_fill(~valid1[..., None], 0.0)
    p2 = (p2 - centre).masked_fill(~valid2[..., None], 0.0)
    if norm == 1:
        return p1, p2
    far = torch.finfo(dtype).max / 8
    sq1 = p1.square().sum(-1, keepdim=True).masked_fill(~valid1[..., None], far)
    sq2 = p2.square().sum(-1, keepdim=True).masked_fill(~valid2[..., None], far)
    a = torch.cat([p1, sq1, torch.ones_like(sq1)], dim=-1)
    b = torch.cat([-2.0 * p2, torch.ones_like(sq2), sq2], dim=-1)
    return a, b.transpose(1, 2).contiguous()


def _distance_tile(
    a: Tensor, b: Tensor, norm: int, invalid_rows: Tensor | None, invalid_cols: Tensor | None
) -> Tensor:
    if norm == 2:
        return torch.bmm(a, b)  # padded points are already far away
    d = torch.cdist(a, b.transpose(1, 2), p=1)
    if invalid_rows is not None:
        d.masked_fill_(invalid_rows[:, :, None], float("inf"))
    if invalid_cols is not None:
        d.masked_fill_(invalid_cols[:, None, :], float("inf"))
    return d


def _invalid(ids: Tensor, lengths: Tensor) -> Tensor | None:
    # (b, n) mask of padded points, or None where the tile holds none.
    mask = ids[None] >= lengths[:, None]
    return mask if bool(mask.any()) else None


def bruteforce_search(
    p1: Tensor, p2: Tensor, lengths1: Tensor, lengths2: Tensor, K: int, norm: int
) -> Tensor:
    """Indices ``(B, N, K)`` of the nearest neighbours by exact tiled search (internal helper)."""
    with torch.no_grad():
        batch, num1, _ = p1.shape
        num2 = p2.shape[1]
        a, b = _augmented(p1, p2, lengths1, lengths2, norm)
        k_search = min(K, num2)
        shapes, rows, cols = _tile_sizes(batch, num1, num2, a.element_size())
        col_ids = torch.arange(num2, device=a.device)
        best_d = a.new_full((batch, num1, k_search), float("inf"))
        best_i = torch.zeros(batch, num1, k_search, dtype=torch.int64, device=a.device)
        for b0 in range(0, batch, shapes):
            b1 = min(batch, b0 + shapes)
            for j0 in range(0, num2, cols):
                j1 = min(num2, j0 + cols)
                invalid_cols = _invalid(col_ids[j0:j1], lengths2[b0:b1]) if norm == 1 else None
                b_tile = b[b0:b1, :, j0:j1] if norm == 2 else b[b0:b1, j0:j1].transpose(1, 2)
                for i0 in range(0, num1, rows):
                    i1 = min(num1, i0 + rows)
                    d = _distance_tile(a[b0:b1, i0:i1], b_tile, norm, None, invalid_cols)
                    kk = min(k_search, j1 - j0)
                    if k_search == 1:
                        tile_d, tile_i = d.min(2, keepdim=True)
                    else:
                        tile_d, tile_i = d.topk(kk, dim=2, largest=False)
                    tile_i += j0
                    if j0 == 0:
                        best_d[b0:b1, i0:i1, :kk] = tile_d
                        best_i[b0:b1, i0:i1, :kk] = tile_i
                    else:
                        _merge(best_d[b0:b1, i0:i1], best_i[b0:b1, i0:i1], tile_d, tile_i)
        return _pad_neighbours(best_i, K)


def _merge(best_d: Tensor, best_i: Tensor, tile_d: Tensor, tile_i: Tensor) -> None:
    if best_d.shape[-1] == 1:
        _update(best_d, best_i, tile_d, tile_i)
        return
    merged_d = torch.cat([best_d, tile_d], dim=-1)
    merged_i = torch.cat([best_i, tile_i], dim=-1)
    top_d, pos = merged_d.topk(best_d.shape[-1], dim=-1, largest=False)
    best_d.copy_(top_d)
    best_i.copy_(merged_i.gather(-1, pos))


def _update(best_d: Tensor, best_i: Tensor, new_d: Tensor, new_i: Tensor) -> None:
    closer = new_d < best_d
    best_d.copy_(torch.where(closer, new_d, best_d))
    best_i.copy_(torch.where(closer, new_i, best_i))


def _pad_neighbours(idx: Tensor, K: int) -> Tensor:
    if idx.shape[-1] == K:
        return idx
    return torch.cat([idx, idx.new_zeros(*idx.shape[:-1], K - idx.shape[-1])], dim=-1)


def bruteforce_nearest_both(
    x: Tensor, y: Tensor, x_lengths: Tensor, y_lengths: Tensor, norm: int
) -> tuple[Tensor, Tensor]:
    """Nearest neighbour of every point in both directions from one pass over the tiles.

    Each tile of the ``x``-to-``y`` distance matrix gives row minima (``x`` to ``y``) and column
    minima (``y`` to ``x``), so the Chamfer distance costs one brute-force search, not two.

    Returns:
        ``(idx_xy (B, N, 1), idx_yx (B, M, 1))`` int64 (internal helper).
    """
    with torch.no_grad():
        batch, num1, _ = x.shape
        num2 = y.shape[1]
        a, b = _augmented(x, y, x_lengths, y_lengths, norm)
        if norm == 2:
            at, bt = a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous()
        shapes, rows, cols = _tile_sizes(batch, num1, num2, a.element_size())
        row_ids = torch.arange(num1, device=a.device)
        col_ids = torch.arange(num2, device=a.device)
        inf = float("inf")
        best_xy = a.new_full((batch, num1), inf)
        idx_xy = torch.zeros(batch, num1, dtype=torch.int64, device=a.device)
        best_yx = a.new_full((batch, num2), inf)
        idx_yx = torch.zeros(batch, num2, dtype=torch.int64, device=a.device)
        for b0 in range(0, batch, shapes):
            b1 = min(batch, b0 + shapes)
            for i0 in range(0, num1, rows):
                i1 = min(num1, i0 + rows)
                invalid_rows = _invalid(row_ids[i0:i1], x_lengths[b0:b1]) if norm == 1 else None
                for j0 in range(0, num2, cols):
                    j1 = min(num2, j0 + cols)
                    if norm == 2:
                        b_tile, invalid_cols = b[b0:b1, :, j0:j1], None
                    else:
                        b_tile = b[b0:b1, j0:j1].transpose(1, 2)
                        invalid_cols = _invalid(col_ids[j0:j1], y_lengths[b0:b1])
                    d = _distance_tile(a[b0:b1, i0:i1], b_tile, norm, invalid_rows, invalid_cols)
                    row_d, row_i = d.min(2)
                    # A reduction over the strided dimension is several times slower than
                    # recomputing the tile transposed (a cheap matrix product) and reducing that.
                    if norm == 2:
                        d = torch.bmm(bt[b0:b1, j0:j1], at[b0:b1, :, i0:i1])
                    else:
                        d = d.transpose(1, 2).contiguous()
                    col_d, col_i = d.min(2)
                    _update(best_xy[b0:b1, i0:i1], idx_xy[b0:b1, i0:i1], row_d, row_i + j0)
                    _update(best_yx[b0:b1, j0:j1], idx_yx[b0:b1, j0:j1], col_d, col_i + i0)
        return idx_xy[..., None], idx_yx[..., None]


# ---------------------------------------------------------------------------------------------
# KD-tree


@functools.lru_cache(maxsize=4)
def _thread_pool(workers: int, process_id: int) -> ThreadPoolExecutor:
    # Keyed by process: a pool inherited through fork (DataLoader workers) has no live threads.
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pcflow-kdtree")


@functools.lru_cache(maxsize=1)
def _pykdtree() -> Callable | None:
    try:
        from pykdtree.kdtree import KDTree
    except ImportError:
        return None
    return KDTree


def _query_one(
    data: np.ndarray, queries: np.ndarray, k: int, norm: int, workers: int
) -> np.ndarray:
    pykdtree = _pykdtree()
    if norm == 2 and pykdtree is not None:
        _, idx = pykdtree(data).query(queries, k=k)
    else:
        spatial = import_optional("scipy.spatial", None, 'backend="kdtree"')
        _, idx = spatial.cKDTree(data).query(queries, k=k, p=norm, workers=workers)
    return np.asarray(idx, dtype=np.int64).reshape(len(queries), k)


def kdtree_search(
    problems: list[tuple[Tensor, Tensor, Tensor, Tensor]], K: int, norm: int
) -> list[Tensor]:
    """Nearest-neighbour indices by KD-tree for several ``(p1, p2, lengths1, lengths2)`` batches.

    All the (set, set) pairs of all the problems share one thread pool, so Chamfer's two
    directions run in parallel too.

    Returns:
        One ``(B, N, K)`` int64 index tensor per problem, on its input's device (internal helper).
    """
    jobs = []
    outputs = []
    for p1, p2, lengths1, lengths2 in problems:
        dtype = torch.float64 if p1.dtype == torch.float64 else torch.float32
        a, b = search_copies(p1.to("cpu", dtype), p2.to("cpu", dtype), lengths1, lengths2)
        a, b = np.ascontiguousarray(a.numpy()), np.ascontiguousarray(b.numpy())
        out = np.zeros((a.shape[0], a.shape[1], K), dtype=np.int64)
        outputs.append(out)
        for i, (n1, n2) in enumerate(zip(lengths1.tolist(), lengths2.tolist())):
            jobs.append((out, i, a[i, :n1], b[i, :n2], min(K, n2)))
    threads = max(1, torch.get_num_threads())
    workers = min(len(jobs), threads, os.cpu_count() or 1)
    inner_workers = max(1, threads // workers)

    def run(job: tuple) -> None:
        out, i, queries, data, k = job
        out[i, : len(queries), :k] = _query_one(data, queries, k, norm, inner_workers)

    if workers == 1:
        for job in jobs:
            run(job)
    else:
        list(_thread_pool(workers, os.getpid()).map(run, jobs))
    return [
        torch.from_numpy(out).to(p1.device) for out, (p1, *_) in zip(outputs, problems, strict=True)
    ]


def nearest_neighbours(
    x: Tensor,
    y: Tensor,
    x_lengths: Tensor,
    y_lengths: Tensor,
    norm: int,
    single_directional: bool,
    backend: str,
) -> tuple[Tensor, Tensor | None]:
    """Nearest neighbour in ``y`` of every point of ``x`` and, unless ``single_directional``,
    in ``x`` of every point of ``y``, by a resolved ``backend`` (``"kdtree"`` or
    ``"bruteforce"``); the search behind Chamfer (internal helper).

    Returns:
        ``(idx_xy (B, N, 1), idx_yx (B, M, 1) or None)`` int64.
    """
    if backend == "kdtree":
        problems = [(x, y, x_lengths, y_lengths)]
        if not single_directional:
            problems.append((y, x, y_lengths, x_lengths))
        found = kdtree_search(problems, 1, norm)
        return found[0], (None if single_directional else found[1])
    if single_directional:
        return bruteforce_search(x, y, x_lengths, y_lengths, 1, norm), None
    return bruteforce_nearest_both(x, y, x_lengths, y_lengths, norm)
