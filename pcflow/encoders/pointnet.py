"""PointNet: a permutation-invariant encoder from point sets to one feature vector per set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from pcflow._checks import check_finite, check_lengths, check_points

__all__ = ["PointNetEncoder"]

_NORMS = (None, "batch", "layer")


class PointNetEncoder(nn.Module):
    r"""Encode point sets with a shared per-point MLP followed by a max over the points.

    Every point goes through the same MLP, ``in_features -> hidden_features -> out_features``,
    each linear layer followed by the chosen normalisation and a ReLU (the last one too, as in
    PointNet); the set's feature is the coordinate-wise maximum over its points. The output is
    therefore invariant to the order of the points, to duplicated points, and defined for any
    number of points ``N``.

    The default widths ``3 -> 64 -> 128 -> 256 -> 512`` are the point encoder of DPF-Nets and
    FlowGAN; FlowGAN's critic uses ``3 -> 64 -> 64 -> 128``
    (``hidden_features=(64, 64), out_features=128``).

    Normalisation (``norm``):

    - ``None``: none; each point's features depend on that point alone.
    - ``"layer"``: ``LayerNorm`` over each point's features; still per point.
    - ``"batch"``: ``BatchNorm1d`` over all points of all sets in the batch (padded points
      excluded). In training mode the statistics couple the sets of a batch, so a set's
      feature depends on the other sets, and duplicating points changes the statistics: the
      duplicate invariance then holds in evaluation mode only. Permutation invariance holds in
      both modes. Fine for an encoder; avoid it inside critics trained with gradient penalties.

    Heterogeneous batches are given padded to ``N`` points with their true sizes in
    ``lengths``: padded points are never passed through the MLP, never enter batch statistics
    and never win the max, so their values (even NaN) do not matter.

    References:
        Qi, Su, Mo, Guibas. "PointNet: Deep Learning on Point Sets for 3D Classification and
        Segmentation." CVPR 2017.

        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020.

    Arguments:
        in_features: Size ``D`` of each input point (3 for xyz).
        out_features: Size ``C`` of the pooled feature.
        hidden_features: Widths of the hidden per-point layers.
        norm: ``None``, ``"batch"`` or ``"layer"`` (see above).
        return_point_features: If ``True``, ``forward`` also returns the last layer's per-point
            features ``(B, N, C)`` (zeros at padded points).

    Example:
        >>> import torch
        >>> from pcflow.encoders import PointNetEncoder
        >>> encoder = PointNetEncoder(out_features=512)
        >>> encoder(torch.randn(2, 100, 3)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        in_features: int = 3,
        out_features: int = 512,
        hidden_features: Sequence[int] = (64, 128, 256),
        norm: str | None = None,
        return_point_features: bool = False,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
        widths = [int(in_features), *(int(w) for w in hidden_features), int(out_features)]
        if any(w < 1 for w in widths):
            raise ValueError(f"all widths must be positive, got {widths}")
        self.in_features = widths[0]
        self.out_features = widths[-1]
        self.norm = norm
        self.return_point_features = return_point_features
        self.mlp = nn.Sequential(*mlp_layers(widths, norm, nn.ReLU))

    def forward(
        self, points: Tensor, lengths: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Encode a batch of point sets.

        Arguments:
            points: Point sets, ``(B, N, in_features)``.
            lengths: Number of valid points of each set, integer ``(B,)`` in ``[1, N]``, for
                padded batches; ``None`` when all sets have ``N`` points.

        Returns:
            The pooled features ``(B, out_features)``; with ``return_point_features=True`` the
            pair ``(pooled (B, C), per_point (B, N, C))``.
        """
        batch, num_points, _ = check_points("points", points, self.in_features, finite=False)
        check_lengths("lengths", lengths, batch, num_points)
        if lengths is None:
            check_finite("points", points)
            per_point = self.mlp(points.reshape(batch * num_points, -1))
            per_point = per_point.reshape(batch, num_points, -1)
            pooled = per_point.amax(dim=1)
        else:
            arange = torch.arange(num_points, device=points.device)
            mask = arange[None, :] < lengths.to(points.device)[:, None]
            valid = points[mask]
            check_finite("points (valid entries)", valid)
            packed = self.mlp(valid)
            per_point = packed.new_zeros(batch, num_points, packed.shape[-1])
            per_point = per_point.index_put((mask,), packed)
            pooled = per_point.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
        if self.return_point_features:
            return pooled, per_point
        return pooled

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"norm={self.norm!r}, return_point_features={self.return_point_features}"
        )


def mlp_layers(
    widths: Sequence[int], norm: str | None, activation: Callable[[], nn.Module]
) -> list[nn.Module]:
    """Linear -> optional normalisation -> activation, for each consecutive pair of ``widths``.

    Shared by the encoders and critics so their layer layouts (and state-dict keys) agree.
    """
    layers: list[nn.Module] = []
    for width_in, width_out in pairwise(widths):
        layers.append(nn.Linear(width_in, width_out))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(width_out))
        elif norm == "layer":
            layers.append(nn.LayerNorm(width_out))
        layers.append(activation())
    return layers
