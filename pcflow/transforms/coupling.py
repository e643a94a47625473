"""Coupling layers over point sets: DPF-Nets' FiLM-conditioned affine coupling, and splines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    unconstrained_rational_quadratic_spline,
)
from torch import Tensor

from pcflow.transforms import eager
from pcflow.transforms.base import PointTransform
from pcflow.transforms.eager import affine_map
from pcflow.transforms.film import FiLMConditioner, PointNetworks

__all__ = ["AffineCouplingWeights", "PointAffineCoupling", "PointSplineCoupling", "affine_map"]


def _split_mask(mask: Sequence[int] | Tensor, features: int) -> tuple[list[int], list[int]]:
    values = [int(v) for v in torch.as_tensor(mask).reshape(-1).tolist()]
    if len(values) != features:
        raise ValueError(f"mask must have {features} entries (one per coordinate), got {values}")
    transformed = [i for i, v in enumerate(values) if v > 0]
    identity = [i for i, v in enumerate(values) if v <= 0]
    if not transformed or not identity:
        raise ValueError(
            "mask must mark at least one coordinate as transformed (> 0) and one as conditioning "
            f"(<= 0), got {values}"
        )
    return transformed, identity


@dataclass(frozen=True)
class AffineCouplingWeights:
    """One `PointAffineCoupling`'s parameters, as its execution engines read them.

    Network 0 computes the shift ``t``, network 1 the raw log-scale ``u``; each maps a point's
    conditioning coordinates ``x_id`` through ``relu(x_id W1 + b1)``, then
    ``relu((h Wh + bh) * a(z) + b(z))`` with ``(a, b)`` from ``film``, then ``h Wl + bl``.
    ``ni`` and ``nt`` count the conditioning and transformed coordinates.
    """

    transformed: tuple[int, ...]
    identity: tuple[int, ...]
    first_weight: Tensor  # (2, ni, H)
    first_bias: Tensor  # (2, 1, H)
    hidden_weight: Tensor  # (2, H, H)
    hidden_bias: Tensor  # (2, 1, H)
    last_weight: Tensor  # (2, H, nt)
    last_bias: Tensor  # (2, 1, nt)
    film: FiLMConditioner | None  # None: a layer without context
    max_log_scale: float  # s = max_log_scale * u / (1 + |u|)


class _MaskedCoupling(PointTransform):
    """The part every coupling here shares: its mask, split, and its networks' width.

    Sets ``transformed_features`` and ``identity_features`` (coordinate indices) and
    ``hidden_features``.
    """

    def __init__(
        self, mask: Sequence[int] | Tensor, context_features: int | None, hidden_features: int
    ) -> None:
        features = len(torch.as_tensor(mask).reshape(-1))
        super().__init__(features, context_features)
        self.transformed_features, self.identity_features = _split_mask(mask, features)
        self.hidden_features = int(hidden_features)


class PointAffineCoupling(_MaskedCoupling):
    """The affine coupling layer of DPF-Nets and FlowGAN, applied to each point of a set.

    Coordinates marked by ``mask`` are transformed, ``y = x * exp(s) + t``; the others pass
    unchanged and, with the shape's context ``z``, condition the shift ``t`` and log-scale ``s``.
    Each of ``t`` and ``s`` comes from its own per-point network, conditioning coordinates
    ``-> H -> H``, FiLM modulation by the context ``h * (eps + exp(w(z))) + b(z)`` with ``w`` and
    ``b`` small MLPs of ``z`` (``C -> H``, SiLU, ``H -> H``), ReLU, ``-> D``. The FiLM terms are
    computed once per shape and folded into that shape's ``H -> H`` weights, so the context
    never meets the points. The log-scale is bounded with a softsign,
    ``s = max_log_scale * u / (1 + |u|)``, which keeps every layer's scale within
    ``exp(±max_log_scale)`` and deep stacks numerically invertible. DPF-Nets' BatchNorm inside
    the networks is left out on purpose: it mixes the points of a set, and the log-likelihood
    would no longer be the exact density of independent points.

    Arguments:
        mask: One entry per coordinate; ``> 0`` marks a transformed coordinate, ``<= 0`` a
            conditioning one (nflows' convention). At least one of each.
        context_features: Size ``C`` of the per-shape context (512 in the paper), or ``None``.
        hidden_features: Width ``H`` of the per-point networks (64 in the paper).
        max_log_scale: Bound of the softsign-bounded log-scale (1 is DPF-Nets' softsign).
        film_eps: The ``eps`` of the FiLM scale ``eps + exp(w(z))``.

    References:
        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020.
        Wei, Vosselman, Yang. "Flow-based GAN for 3D Point Cloud Generation from a Single
        Image." BMVC 2022.

    Example:
        >>> import torch
        >>> layer = PointAffineCoupling([1, 0, 0], context_features=8, hidden_features=16)
        >>> points, z = torch.randn(2, 100, 3), torch.randn(2, 8)
        >>> noise, logabsdet = layer(points, z)
        >>> noise.shape, logabsdet.shape
        (torch.Size([2, 100, 3]), torch.Size([2]))
        >>> torch.allclose(layer.inverse(noise, z)[0], points, atol=1e-5)
        True
    """

    def __init__(
        self,
        mask: Sequence[int] | Tensor,
        context_features: int | None = None,
        hidden_features: int = 64,
        *,
        max_log_scale: float = 1.0,
        film_eps: float = 1e-3,
    ) -> None:
        super().__init__(mask, context_features, hidden_features)
        if max_log_scale <= 0:
            raise ValueError(f"max_log_scale must be positive, got {max_log_scale}")
        self.max_log_scale = float(max_log_scale)
        transformed, identity = self.transformed_features, self.identity_features
        self.networks = PointNetworks(
            2, self.features, identity, len(transformed), transformed, hidden_features,
            context_features, film_eps,
        )  # fmt: skip

    @property
    def weights(self) -> AffineCouplingWeights:
        """The layer's parameters as every execution engine reads them (no copies)."""
        net = self.networks
        return AffineCouplingWeights(
            tuple(self.transformed_features), tuple(self.identity_features), net.first_weight,
            net.first_bias, net.hidden_weight, net.hidden_bias, net.last_weight, net.last_bias,
            net.film, self.max_log_scale,
        )  # fmt: skip

    def shift_and_log_scale(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Shift ``t`` and bounded log-scale ``s`` `(B, N, D)`, zero on conditioning coordinates."""
        out = self.networks(inputs, context).view(2, *inputs.shape)
        return out[0], self.bound(out[1])

    def bound(self, raw: Tensor) -> Tensor:
        """The softsign bound of the log-scale: ``max_log_scale * u / (1 + |u|)``."""
        return raw.div(raw.abs().add(1.0)).mul(self.max_log_scale)

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # y = x * exp(s(x_id, z)) + t(x_id, z), in cache-sized blocks of points.
        return eager.affine_coupling(self, inputs, context, inverse=False)

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # x = (y - t(y_id, z)) * exp(-s(y_id, z)): the conditioning coordinates are unchanged.
        return eager.affine_coupling(self, inputs, context, inverse=True)

    def model_flops_per_point(self) -> int:
        """Multiply-adds x 2 of the two per-point networks for one point (the FLOP count)."""
        h, i, t = self.hidden_features, len(self.identity_features), len(self.transformed_features)
        return 2 * 2 * (i * h + h * h + h * t)

    def activation_floats_per_point(self) -> int:
        return 4 * self.hidden_features + 8 * self.features


def is_plain_affine_coupling(layer: object) -> bool:
    """Whether ``layer`` is a `PointAffineCoupling` whose maps are the class's own.

    Code that reimplements the coupling (the memory-efficient backward, the fused kernel) may
    only stand in for it where a subclass has not changed what it computes.
    """
    kind = type(layer)
    return (
        isinstance(layer, PointAffineCoupling)
        and kind.forward_points is PointAffineCoupling.forward_points
        and kind.inverse_points is PointAffineCoupling.inverse_points
        and kind.shift_and_log_scale is PointAffineCoupling.shift_and_log_scale
        and type(layer.networks).prepare is PointNetworks.prepare
    )


class PointSplineCoupling(_MaskedCoupling):
    """A coupling layer with monotonic rational-quadratic splines, applied to each point.

    Coordinates marked by ``mask`` go through a rational-quadratic spline on
    ``[-tail_bound, tail_bound]`` (identity outside), whose knots come from one per-point
    network of the conditioning coordinates with the same FiLM conditioning as
    :class:`PointAffineCoupling`. The spline itself is nflows'
    ``unconstrained_rational_quadratic_spline``.

    Arguments:
        mask: One entry per coordinate; ``> 0`` marks a transformed coordinate.
        context_features: Size ``C`` of the per-shape context, or ``None``.
        hidden_features: Width ``H`` of the per-point network.
        num_bins: Number of spline bins ``K``.
        tail_bound: Half-width of the spline's interval; linear (identity) tails outside.
        film_eps: The ``eps`` of the FiLM scale ``eps + exp(w(z))``.

    References:
        Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows." NeurIPS 2019.

    Example:
        >>> import torch
        >>> layer = PointSplineCoupling([0, 1, 1], context_features=8, hidden_features=16)
        >>> points, z = torch.randn(2, 50, 3), torch.randn(2, 8)
        >>> noise, logabsdet = layer(points, z)
        >>> torch.allclose(layer.inverse(noise, z)[0], points, atol=1e-4)
        True
    """

    def __init__(
        self,
        mask: Sequence[int] | Tensor,
        context_features: int | None = None,
        hidden_features: int = 64,
        *,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        film_eps: float = 1e-3,
    ) -> None:
        super().__init__(mask, context_features, hidden_features)
        if num_bins < 1 or tail_bound <= 0:
            raise ValueError(
                f"num_bins must be >= 1 and tail_bound > 0, got {num_bins} and {tail_bound}"
            )
        self.num_bins, self.tail_bound = int(num_bins), float(tail_bound)
        transformed, identity = self.transformed_features, self.identity_features
        self.register_buffer("transformed_index", torch.tensor(transformed), persistent=False)
        self.networks = PointNetworks(
            1, self.features, identity, len(transformed) * (3 * num_bins - 1), None,
            hidden_features, context_features, film_eps,
        )  # fmt: skip

    def _spline(self, inputs: Tensor, context: Tensor | None, inverse: bool):
        batch, num_points, _ = inputs.shape
        k = self.num_bins
        params = self.networks(inputs, context).view(
            batch, num_points, len(self.transformed_features), 3 * k - 1
        )
        scale = 1.0 / math.sqrt(self.hidden_features)
        coords = inputs.index_select(2, self.transformed_index)
        values, logabsdet = unconstrained_rational_quadratic_spline(
            coords,
            params[..., :k] * scale,
            params[..., k : 2 * k] * scale,
            params[..., 2 * k :],
            inverse=inverse,
            tails="linear",
            tail_bound=self.tail_bound,
            min_bin_width=DEFAULT_MIN_BIN_WIDTH,
            min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
            min_derivative=DEFAULT_MIN_DERIVATIVE,
        )
        outputs = inputs.index_copy(2, self.transformed_index, values)
        return outputs, logabsdet.sum(2)

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._spline(inputs, context, inverse=False)

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._spline(inputs, context, inverse=True)

    def activation_floats_per_point(self) -> int:
        return 2 * self.hidden_features + 16 * len(self.transformed_features) * 3 * self.num_bins
