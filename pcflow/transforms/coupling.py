"""Coupling layers over point sets: a base for new ones, DPF-Nets' affine coupling, splines."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

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

__all__ = [
    "AffineCouplingWeights",
    "PointAffineCoupling",
    "PointCoupling",
    "PointSplineCoupling",
    "affine_map",
    "computes_affine_map",
]


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


class PointCoupling(PointTransform):
    """A coupling layer on each point: an elementwise map of some coordinates given the others.

    The coordinates that ``mask`` marks are transformed, ``y_t = f(x_t; theta)``, one
    coordinate at a time; the others pass unchanged and, with the shape's context ``z``,
    give the parameters ``theta = g(x_id, z)``. The conditioner ``g`` is `PointNetworks`:
    per-point networks ``in -> H -> H -> out`` whose hidden layer is FiLM-modulated by ``z``
    (DPF-Nets' conditioning). Because ``x_id`` is the same before and after the layer, the
    inverse is ``x_t = f^{-1}(y_t; g(y_id, z))`` and the log-determinant of a point is the sum
    of ``log |df/dx|`` over its transformed coordinates.

    A new coupling subclasses this class and defines the elementwise map ``f``:
    `elementwise_forward` and `elementwise_inverse`, each returning the mapped coordinates
    and ``log |df/dx|`` per coordinate, with ``params_per_coordinate`` parameters for each
    transformed coordinate. Everything else (mask, validation, conditioner, nflows' contract,
    memory-efficient training) comes from here, and the layer runs on the PyTorch path; only
    classes that declare ``fused_kernel = True`` in their own body, and compute exactly the
    fused kernel's map, are handed to `pcflow.flows.fused`.

    Arguments:
        mask: One entry per coordinate; ``> 0`` marks a transformed coordinate, ``<= 0`` a
            conditioning one (nflows' convention). At least one of each.
        context_features: Size ``C`` of the per-shape context, or ``None``.
        hidden_features: Width ``H`` of the per-point networks.
        params_per_coordinate: Parameters ``P`` of the map of one transformed coordinate.
        num_networks: Networks ``k`` that share the parameters (``P / k`` each, in order): 1
            for one network; 2 for DPF-Nets' separate shift and scale networks.
        film_eps: The ``eps`` of the FiLM scale ``eps + exp(w(z))``.

    References:
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP." ICLR 2017.

    Example:
        A coupling with Glow's sigmoid scale, ``y = x * sigmoid(u + 2) + t``:

        >>> import torch
        >>> class SigmoidScaleCoupling(PointCoupling):
        ...     def __init__(self, mask, context_features=None, hidden_features=64):
        ...         super().__init__(
        ...             mask, context_features, hidden_features, params_per_coordinate=2
        ...         )
        ...     def elementwise_forward(self, inputs, params):
        ...         log_scale = torch.nn.functional.logsigmoid(params[..., 1] + 2)
        ...         return inputs * log_scale.exp() + params[..., 0], log_scale
        ...     def elementwise_inverse(self, inputs, params):
        ...         log_scale = torch.nn.functional.logsigmoid(params[..., 1] + 2)
        ...         return (inputs - params[..., 0]) * (-log_scale).exp(), -log_scale
        >>> layer = SigmoidScaleCoupling([1, 0, 1], context_features=8, hidden_features=16)
        >>> points, z = torch.randn(2, 100, 3), torch.randn(2, 8)
        >>> noise, logabsdet = layer(points, z)
        >>> noise.shape, logabsdet.shape
        (torch.Size([2, 100, 3]), torch.Size([2]))
        >>> torch.allclose(layer.inverse(noise, z)[0], points, atol=1e-5)
        True
    """

    fused_kernel: ClassVar[bool] = False
    """Whether this class computes exactly the fused kernel's map (`pcflow.flows.fused`).

    Read from the class's own body only (``type(layer).__dict__``): a subclass is never
    fused unless it declares it again, so one that changes any part of the map (the bound
    included) runs on the PyTorch path.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only the class's own body declares it: no subclass inherits the opt-in.
        cls.fused_kernel = bool(cls.__dict__.get("fused_kernel", False))

    def __init__(
        self,
        mask: Sequence[int] | Tensor,
        context_features: int | None = None,
        hidden_features: int = 64,
        *,
        params_per_coordinate: int,
        num_networks: int = 1,
        film_eps: float = 1e-3,
    ) -> None:
        features = len(torch.as_tensor(mask).reshape(-1))
        super().__init__(features, context_features)
        self.transformed_features, self.identity_features = _split_mask(mask, features)
        for name, value in (
            ("params_per_coordinate", params_per_coordinate),
            ("num_networks", num_networks),
            ("hidden_features", hidden_features),
        ):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if params_per_coordinate % num_networks:
            raise ValueError(
                f"params_per_coordinate ({params_per_coordinate}) must be a multiple of "
                f"num_networks ({num_networks}): each network gives an equal share"
            )
        self.hidden_features = int(hidden_features)
        self.params_per_coordinate, self.num_networks = (
            int(params_per_coordinate),
            int(num_networks),
        )
        transformed = self.transformed_features
        self.register_buffer("transformed_index", torch.tensor(transformed), persistent=False)
        self.networks = PointNetworks(
            num_networks,
            self.identity_features,
            len(transformed) * params_per_coordinate // num_networks,
            hidden_features=hidden_features,
            context_features=context_features,
            film_eps=film_eps,
        )

    def conditioner(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        """The map's parameters ``g(x_id, z)``, `(B, N, nt, P)`, for points `(B, N, D)`.

        ``nt`` is the number of transformed coordinates, ``P`` ``params_per_coordinate``;
        network ``j`` gives ``params[..., j * P / k : (j + 1) * P / k]``.
        """
        batch, num_points, _ = inputs.shape
        k, count = self.num_networks, self.params_per_coordinate
        per_network = self.networks(inputs, context).view(
            k, batch, num_points, len(self.transformed_features), count // k
        )
        return per_network.permute(1, 2, 3, 0, 4).reshape(
            batch, num_points, len(self.transformed_features), count
        )

    def elementwise_forward(self, inputs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """The elementwise map ``f``: ``(y_t, log |df/dx|)``, each `(B, N, nt)`.

        Arguments:
            inputs: The transformed coordinates ``x_t`` of the points, `(B, N, nt)`.
            params: Their parameters from `conditioner`, `(B, N, nt, P)`.
        """
        raise NotImplementedError(f"{type(self).__name__} must define elementwise_forward")

    def elementwise_inverse(self, inputs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse map ``f^{-1}``: ``(x_t, log |df^{-1}/dy|)``, each `(B, N, nt)`.

        Arguments:
            inputs: The transformed coordinates ``y_t`` of the points, `(B, N, nt)`.
            params: Their parameters from `conditioner`, `(B, N, nt, P)`.
        """
        raise NotImplementedError(f"{type(self).__name__} must define elementwise_inverse")

    def _couple(self, inputs: Tensor, context: Tensor | None, inverse: bool):
        params = self.conditioner(inputs, context)
        coordinates = inputs.index_select(2, self.transformed_index)
        elementwise = self.elementwise_inverse if inverse else self.elementwise_forward
        values, logabsdet = elementwise(coordinates, params)
        if values.shape != coordinates.shape or logabsdet.shape != coordinates.shape:
            name = f"{type(self).__name__}.{elementwise.__name__}"
            raise ValueError(
                f"{name} must return the mapped coordinates and their log |derivative|, each "
                f"shaped like its inputs {tuple(coordinates.shape)}; got "
                f"{tuple(values.shape)} and {tuple(logabsdet.shape)}"
            )
        return inputs.index_copy(2, self.transformed_index, values), logabsdet.sum(2)

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(inputs, context, inverse=False)

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(inputs, context, inverse=True)

    def activation_floats_per_point(self) -> int:
        nt = len(self.transformed_features)
        return self.num_networks * 2 * self.hidden_features + 4 * nt * self.params_per_coordinate


class PointAffineCoupling(PointCoupling):
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

    This class declares ``fused_kernel = True``: runs of its layers on float32 CPU tensors go
    through the fused kernel (`pcflow.flows.fused`). A subclass (another `bound`, say) runs
    on the PyTorch path, with its own map, unless it declares ``fused_kernel = True`` itself,
    which it may only do if it still computes exactly this class's map.

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

        Another bound of the log-scale is one method; the layer then runs on the PyTorch path:

        >>> class TanhBound(PointAffineCoupling):
        ...     def bound(self, raw):
        ...         return torch.tanh(raw) * self.max_log_scale
        >>> TanhBound([1, 0, 0], context_features=8).fused_kernel
        False
    """

    fused_kernel = True

    def __init__(
        self,
        mask: Sequence[int] | Tensor,
        context_features: int | None = None,
        hidden_features: int = 64,
        *,
        max_log_scale: float = 1.0,
        film_eps: float = 1e-3,
    ) -> None:
        super().__init__(
            mask, context_features, hidden_features, params_per_coordinate=2, num_networks=2,
            film_eps=film_eps,
        )  # fmt: skip
        if max_log_scale <= 0:
            raise ValueError(f"max_log_scale must be positive, got {max_log_scale}")
        self.max_log_scale = float(max_log_scale)

    @property
    def weights(self) -> AffineCouplingWeights:
        """The layer's parameters as every execution engine reads them (no copies)."""
        net = self.networks
        return AffineCouplingWeights(
            tuple(self.transformed_features), tuple(self.identity_features), net.first_weight,
            net.first_bias, net.hidden_weight, net.hidden_bias, net.last_weight, net.last_bias,
            net.film, self.max_log_scale,
        )  # fmt: skip

    def bound(self, raw: Tensor) -> Tensor:
        """The softsign bound of the log-scale: ``max_log_scale * u / (1 + |u|)``."""
        return raw.div(raw.abs().add(1.0)).mul(self.max_log_scale)

    def _full_bound(self) -> Callable[[Tensor], Tensor]:
        # The engines bound D raw log-scales per point, zero on the conditioning coordinates;
        # the softsign keeps them zero, another bound need not.
        if type(self).bound is PointAffineCoupling.bound:
            return self.bound
        conditioning = torch.ones(
            self.features, dtype=torch.bool, device=self.transformed_index.device
        )
        conditioning[self.transformed_index] = False
        return lambda raw: self.bound(raw).masked_fill(conditioning, 0.0)

    def shift_and_log_scale(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Shift ``t`` and bounded log-scale ``s`` `(B, N, D)`, zero on conditioning coordinates."""
        if not self._affine_engine():
            params = self.conditioner(inputs, context)
            shift, log_scale = inputs.new_zeros(inputs.shape), inputs.new_zeros(inputs.shape)
            index = self.transformed_index
            return (
                shift.index_copy(2, index, params[..., 0]),
                log_scale.index_copy(2, index, self.bound(params[..., 1])),
            )
        out = self.networks(inputs, context, out_index=self.transformed_index)
        out = out.view(2, *inputs.shape)
        return out[0], self._full_bound()(out[1])

    def elementwise_forward(self, inputs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``y = x exp(s) + t`` with ``t = params[..., 0]``, ``s = bound(params[..., 1])``."""
        log_scale = self.bound(params[..., 1])
        return torch.addcmul(params[..., 0], inputs, torch.exp(log_scale)), log_scale

    def elementwise_inverse(self, inputs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x = (y - t) exp(-s)``, and ``-s``."""
        log_scale = self.bound(params[..., 1])
        return (inputs - params[..., 0]) * torch.exp(-log_scale), -log_scale

    def _affine_engine(self) -> bool:
        # The blocked eager engine evaluates the networks and the bound itself: it computes the
        # layer's map unless a subclass redefined the conditioner or the elementwise map.
        kind = type(self)
        return (
            kind.conditioner is PointCoupling.conditioner
            and kind.elementwise_forward is PointAffineCoupling.elementwise_forward
            and kind.elementwise_inverse is PointAffineCoupling.elementwise_inverse
            and type(self.networks).prepare is PointNetworks.prepare
        )

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # y = x * exp(s(x_id, z)) + t(x_id, z), in cache-sized blocks of points.
        if not self._affine_engine():
            return super().forward_points(inputs, context)
        return eager.affine_coupling(
            self.networks, self._full_bound(), self.transformed_index, inputs, context, False
        )

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # x = (y - t(y_id, z)) * exp(-s(y_id, z)): the conditioning coordinates are unchanged.
        if not self._affine_engine():
            return super().inverse_points(inputs, context)
        return eager.affine_coupling(
            self.networks, self._full_bound(), self.transformed_index, inputs, context, True
        )

    def model_flops_per_point(self) -> int:
        """Multiply-adds x 2 of the two per-point networks for one point (the FLOP count)."""
        h, i, t = self.hidden_features, len(self.identity_features), len(self.transformed_features)
        return 2 * 2 * (i * h + h * h + h * t)

    def activation_floats_per_point(self) -> int:
        return 4 * self.hidden_features + 8 * self.features


def computes_affine_map(layer: object) -> bool:
    """Whether ``layer``'s map is ``affine_map(x, *layer.shift_and_log_scale(x, z))``.

    True for a `PointAffineCoupling` whose subclass, if any, changed at most its `bound` (and
    nothing of how the map is evaluated): the memory-efficient backward pass
    (`pcflow.flows.reversible`) then rebuilds a layer's input and its graph from one
    evaluation of the networks. Whether the fused kernel may stand in for a layer is a
    separate, explicit declaration: `PointCoupling.fused_kernel`.
    """
    kind = type(layer)
    return (
        isinstance(layer, PointAffineCoupling)
        and layer._affine_engine()
        and kind.forward_points is PointAffineCoupling.forward_points
        and kind.inverse_points is PointAffineCoupling.inverse_points
        and kind.shift_and_log_scale is PointAffineCoupling.shift_and_log_scale
    )


class PointSplineCoupling(PointCoupling):
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
        if num_bins < 1 or tail_bound <= 0:
            raise ValueError(
                f"num_bins must be >= 1 and tail_bound > 0, got {num_bins} and {tail_bound}"
            )
        super().__init__(
            mask, context_features, hidden_features, params_per_coordinate=3 * num_bins - 1,
            film_eps=film_eps,
        )  # fmt: skip
        self.num_bins, self.tail_bound = int(num_bins), float(tail_bound)

    def _spline(self, inputs: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.num_bins
        scale = 1.0 / math.sqrt(self.hidden_features)
        return unconstrained_rational_quadratic_spline(
            inputs,
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

    def elementwise_forward(self, inputs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """The spline of each transformed coordinate, knots from ``params`` `(B, N, nt, 3K - 1)`."""
        return self._spline(inputs, params, inverse=False)

    def elementwise_inverse(self, inputs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse spline of each transformed coordinate."""
        return self._spline(inputs, params, inverse=True)

    def activation_floats_per_point(self) -> int:
        return 2 * self.hidden_features + 16 * len(self.transformed_features) * 3 * self.num_bins
