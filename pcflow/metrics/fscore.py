"""F-score of a predicted point set against a ground-truth set at a distance threshold."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pcflow._checks import check_lengths, check_points, check_same_batch
from pcflow.ops.knn import knn_points
from pcflow.utils._deprecation import renamed_argument

__all__ = ["FScore", "f_score"]


class FScore(NamedTuple):
    """The result of ``f_score``, each ``(B,)`` in ``[0, 1]``.

    Attributes:
        precision: Fraction of predicted points closer than the threshold to the ground truth.
        recall: Fraction of ground-truth points closer than the threshold to the prediction.
        f_score: Their harmonic mean ``2PR / (P + R)``, zero where both are zero.
    """

    precision: Tensor
    recall: Tensor
    f_score: Tensor


def f_score(
    pred: Tensor,
    gt: Tensor,
    threshold: float = 1e-3,
    squared: bool = True,
    lengths1: Tensor | None = None,
    lengths2: Tensor | None = None,
    backend: str = "auto",
    *,
    pred_lengths: Tensor | None = None,
    gt_lengths: Tensor | None = None,
) -> FScore:
    """Precision, recall and F-score of predicted point sets at a distance threshold.

    A predicted point counts as correct when its nearest ground-truth point is closer than
    ``threshold`` (strictly); precision is the fraction of correct predicted points, recall the
    same from the ground truth to the prediction, and F their harmonic mean (Tatarchenko et al.).

    Conventions, which differ between papers (state them with every reported number):

    - ``squared=True`` (default) compares **squared** Euclidean distances with ``threshold``: the
      FlowGAN and DPF-Nets public evaluation code does this with ``threshold=1e-3`` (that is, a
      Euclidean radius of about 0.0316) on unit-sphere clouds of 2,500 points. ``squared=False``
      compares Euclidean distances, as Tatarchenko et al. do (``threshold=0.01`` there, i.e. 1%
      of the object's size).
    - The value depends on the clouds' scale: normalise both the same way first (FlowGAN: mesh
      centred and scaled into the unit sphere; training clouds divided by 2 are multiplied back
      before evaluation).
    - Returned in ``[0, 1]``; papers report it in percent.

    Not differentiable (counts); computed without gradient.

    Arguments:
        pred: ``(B, N, D)`` predicted point sets, padded when ``lengths1`` is given.
        gt: ``(B, M, D)`` ground-truth point sets, padded when ``lengths2`` is given.
        threshold: The distance threshold ``tau > 0`` (squared if ``squared``).
        squared: Whether ``threshold`` applies to squared distances.
        lengths1: ``(B,)`` integer number of valid points per predicted set, in ``[1, N]``.
        lengths2: ``(B,)`` integer number of valid points per ground-truth set, in ``[1, M]``.
        backend: Nearest-neighbour backend, see ``pcflow.ops.knn_points``.
        pred_lengths: Deprecated name of ``lengths1``.
        gt_lengths: Deprecated name of ``lengths2``.

    Returns:
        An ``FScore`` ``(precision, recall, f_score)``, each ``(B,)``.

    References:
        Tatarchenko, Richter, Ranftl, Li, Koltun, Brox. What Do Single-view 3D Reconstruction
        Networks Learn? CVPR 2019.

    Example:
        >>> import torch
        >>> from pcflow.metrics import f_score
        >>> gt = torch.rand(2, 2500, 3)
        >>> f_score(gt, gt).f_score
        tensor([1., 1.])
    """
    pred_lengths = renamed_argument("f_score", "pred_lengths", pred_lengths, "lengths1", lengths1)
    gt_lengths = renamed_argument("f_score", "gt_lengths", gt_lengths, "lengths2", lengths2)
    batch, num_pred, dim = check_points("pred", pred)
    _, num_gt, _ = check_points("gt", gt, dim)
    check_same_batch("pred", pred, "gt", gt)
    check_lengths("lengths1", pred_lengths, batch, num_pred)
    check_lengths("lengths2", gt_lengths, batch, num_gt)
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
    with torch.no_grad():
        try:
            to_gt = knn_points(pred, gt, pred_lengths, gt_lengths, backend=backend).dists[..., 0]
            to_pred = knn_points(gt, pred, gt_lengths, pred_lengths, backend=backend).dists[..., 0]
        except ValueError as error:  # name the arguments as the caller knows them
            message = (
                str(error).replace("p1 and p2", "pred and gt").replace("p2 and p1", "gt and pred")
            )
            raise ValueError(message) from error
        precision = _fraction_within(to_gt, pred_lengths, threshold, squared)
        recall = _fraction_within(to_pred, gt_lengths, threshold, squared)
        total = precision + recall
        score = torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-30), 0.0)
    return FScore(precision, recall, score)


def _fraction_within(
    squared_dists: Tensor, lengths: Tensor | None, threshold: float, squared: bool
) -> Tensor:
    dists = squared_dists if squared else squared_dists.sqrt()
    within = dists < threshold
    num = squared_dists.shape[1]
    if lengths is None:
        return within.to(squared_dists.dtype).mean(1)
    valid = torch.arange(num, device=dists.device)[None] < lengths[:, None].to(dists.device)
    return (within & valid).sum(1).to(squared_dists.dtype) / lengths.to(squared_dists)
