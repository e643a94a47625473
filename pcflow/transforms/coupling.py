"""Coupling layers over point sets: DPF-Nets' FiLM-conditioned affine coupling, and splines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    unconstrained_rational_quadratic_spline,
)
from torch import Tensor, nn
from torch.nn import functional as F

from pcflow.transforms.base import PointTransform

__all__ = ["PointAffineCoupling", "PointSplineCoupling"]

_CACHE_BYTES = 2**20
"""Hidden activations per cache block (about half of a core's L2 cache on current x86 CPUs)."""


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


class _FiLMNetworks(nn.Module):
    """``num_nets`` per-point networks evaluated together, FiLM-modulated by the context.

    Each network maps the conditioning coordinates of a point through ``in -> H`` (ReLU),
    ``H -> H``, then ``h * (eps + exp(w(z))) + b(z)`` (ReLU), then ``H -> out``. The FiLM terms
    are folded, once per shape, into a per-shape copy of the ``H -> H`` weights and bias, so the
    point-wise work is three batched matrix products and two in-place ReLUs, and the context is
    never repeated over points.
    """

    def __init__(
        self,
        num_nets: int,
        features: int,
        identity: list[int],
        out_features: int,
        out_index: list[int] | None,
        hidden_features: int,
        context_features: int | None,
        film_eps: float,
    ) -> None:
        super().__init__()
        k, h = num_nets, hidden_features
        self.num_nets, self.features, self.hidden_features = k, features, h
        self.film_eps = float(film_eps)
        self.out_width = features if out_index is not None else out_features
        self.register_buffer("identity_index", torch.tensor(identity), persistent=False)
        self.register_buffer(
            "out_index", torch.tensor(out_index if out_index is not None else []), persistent=False
        )
        self.scatter_out = out_index is not None
        self.first_weight = nn.Parameter(torch.empty(k, len(identity), h))
        self.first_bias = nn.Parameter(torch.empty(k, 1, h))
        self.hidden_weight = nn.Parameter(torch.empty(k, h, h))
        self.hidden_bias = nn.Parameter(torch.empty(k, 1, h))
        self.last_weight = nn.Parameter(torch.empty(k, h, out_features))
        self.last_bias = nn.Parameter(torch.empty(k, 1, out_features))
        self.context_features = context_features
        if context_features is not None:
            # w(z) and b(z) of every network: one C -> 2kH layer (SiLU), then 2k grouped H -> H.
            self.film_in = nn.Linear(context_features, 2 * k * h)
            self.film_weight = nn.Parameter(torch.empty(2 * k, h, h))
            self.film_bias = nn.Parameter(torch.empty(2 * k, 1, h))
        self.reset_parameters()

    def reset_parameters(self, last_std: float = 1e-2) -> None:
        """nn.Linear's default for hidden layers; small output weights (DPF-Nets' ``0.01``)."""
        h = self.hidden_features
        for weight, bias, fan_in in (
            (self.first_weight, self.first_bias, self.first_weight.shape[1]),
            (self.hidden_weight, self.hidden_bias, h),
        ):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        nn.init.normal_(self.last_weight, std=last_std)
        nn.init.zeros_(self.last_bias)
        if self.context_features is not None:
            self.film_in.reset_parameters()
            nn.init.normal_(self.film_weight, std=last_std)
            nn.init.zeros_(self.film_bias)

    def _full(self, weight: Tensor, dim: int, index: Tensor, size: int) -> Tensor:
        shape = list(weight.shape)
        shape[dim] = size
        return weight.new_zeros(shape).index_copy(dim, index, weight)

    def film(self, context: Tensor | None, batch: int) -> tuple[Tensor, Tensor] | None:
        """FiLM scale ``a`` and folded bias ``c a + b`` of the hidden layer, each `(k, B, H)`.

        ``None`` without a context (the hidden layer is then the same for every shape).
        """
        if self.context_features is None:
            return None
        scale, bias = film_terms([self], context, batch)
        return scale[0], bias[0]

    def prepare(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, ...]:
        """Per-layer and per-shape terms: full first/last weights, FiLM-folded hidden layer."""
        batch, _, features = inputs.shape
        k, h = self.num_nets, self.hidden_features
        # Zero rows for the transformed coordinates let the first layer read all D columns,
        # so no per-layer gather or copy of the conditioning coordinates is needed.
        first = self._full(self.first_weight, 1, self.identity_index, features)
        last_weight, last_bias = self.last_weight, self.last_bias
        if self.scatter_out:
            last_weight = self._full(last_weight, 2, self.out_index, features)
            last_bias = self._full(last_bias, 2, self.out_index, features)
        film = self.film(context, batch)
        if film is None:
            weight = self.hidden_weight.unsqueeze(1).expand(k, batch, h, h)
            bias = self.hidden_bias.unsqueeze(1).expand(k, batch, 1, h)
        else:
            scale, bias = film
            # FiLM folded into a per-shape copy of the H -> H weights: (h W) a = h (W a).
            weight = self.hidden_weight.unsqueeze(1) * scale.unsqueeze(2)  # (k, B, H, H)
            bias = bias.unsqueeze(2)  # (k, B, 1, H)
        return first, weight, bias, last_weight, last_bias

    def evaluate(self, terms: tuple[Tensor, ...], inputs: Tensor, start: int) -> list[Tensor]:
        """Each network's outputs ``(g * n, out)`` for points ``(g, n, D)`` of shapes ``start:``."""
        first, weight, bias, last_weight, last_bias = terms
        k, h = self.num_nets, self.hidden_features
        group, num_points, features = inputs.shape
        m = group * num_points
        flat = inputs.reshape(1, m, features).expand(k, m, features)
        hidden = torch.baddbmm(self.first_bias, flat, first).relu_()
        stop = start + group
        hidden = torch.baddbmm(
            bias[:, start:stop].reshape(k * group, 1, h),
            hidden.view(k * group, num_points, h),
            weight[:, start:stop].reshape(k * group, h, h),
        ).relu_()
        return list(torch.baddbmm(last_bias, hidden.view(k, m, h), last_weight).unbind(0))

    def split(self, terms: tuple[Tensor, ...]) -> tuple:
        """Per-network, per-shape 2-D views of the terms, split once for `evaluate_shape`."""
        first, weight, bias, last_weight, last_bias = terms
        return (
            first.unbind(0),
            self.first_bias.squeeze(1).unbind(0),
            [w.unbind(0) for w in weight.unbind(0)],
            [c.squeeze(2).unbind(0) for c in bias.unbind(0)],
            last_weight.unbind(0),
            last_bias.squeeze(1).unbind(0),
        )

    def evaluate_shape(self, split: tuple, points: Tensor, shape: int) -> list[Tensor]:
        """Each network's outputs ``(n, out)`` for points ``(n, D)`` of one shape.

        Plain 2-D products per network: no batch expansion, no copies of the operands.
        """
        first, first_bias, weight, bias, last_weight, last_bias = split
        outputs = []
        for i in range(self.num_nets):
            hidden = torch.addmm(first_bias[i], points, first[i]).relu_()
            hidden = torch.addmm(bias[i][shape], hidden, weight[i][shape]).relu_()
            outputs.append(torch.addmm(last_bias[i], hidden, last_weight[i]))
        return outputs

    def chunks(self, inputs: Tensor) -> list[tuple[int, int, int, int]]:
        """Cache blocks ``(b0, b1, s0, s1)``: whole shapes, or slices of one shape's points.

        A block holds about ``_CACHE_BYTES`` of hidden activations per thread, so that they stay
        in cache between the three matrix products, the ReLUs and the coupling's elementwise
        tail.
        """
        batch, num_points, _ = inputs.shape
        # Threads split a block's rows, so each thread's share is what must fit its cache.
        budget = _CACHE_BYTES * max(1, torch.get_num_threads())
        target = max(1, budget // (self.num_nets * self.hidden_features * inputs.element_size()))
        if num_points >= target:
            pieces = -(-num_points // target)
            step = -(-num_points // pieces)
            return [
                (b, b + 1, s, min(s + step, num_points))
                for b in range(batch)
                for s in range(0, num_points, step)
            ]
        group = max(1, target // num_points)
        return [(b, min(b + group, batch), 0, num_points) for b in range(0, batch, group)]

    def forward(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        """Network outputs ``(num_nets, B * N, out)`` for points ``(B, N, D)``, in one block."""
        return torch.stack(self.evaluate(self.prepare(inputs, context), inputs, 0))


def film_terms(nets: Sequence[_FiLMNetworks], context: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """FiLM scale ``a`` and folded bias ``c a + b`` of the hidden layers of ``nets``.

    The networks must all take a context and have the same ``k`` and ``H``; however many there
    are, each kind of weight takes one product (the fused kernel passes every layer at once).

    Returns:
        ``(scale, bias)``, each `(len(nets), k, B, H)`.
    """
    num, k, h = len(nets), nets[0].num_nets, nets[0].hidden_features

    def cat(tensors: list[Tensor], dim: int = 0) -> Tensor:
        return tensors[0] if num == 1 else torch.cat(tensors, dim)

    film = F.silu(cat([net.film_in(context) for net in nets], 1))  # (B, L * 2k * H)
    film = film.view(batch, num * 2 * k, h).transpose(0, 1)
    film = torch.baddbmm(
        cat([net.film_bias for net in nets]), film, cat([net.film_weight for net in nets])
    ).view(num, 2 * k, batch, h)
    eps = torch.tensor([net.film_eps for net in nets], dtype=film.dtype, device=film.device)
    scale = eps.view(num, 1, 1, 1) + torch.exp(film[:, :k])
    hidden_bias = cat([net.hidden_bias for net in nets]).view(num, k, 1, h)
    # (h W + c) * a + b = (h W) a + (c a + b).
    return scale, torch.addcmul(film[:, k:], hidden_bias, scale)


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
        self.networks = _FiLMNetworks(
            2, self.features, identity, len(transformed), transformed, hidden_features,
            context_features, film_eps,
        )  # fmt: skip

    def shift_and_log_scale(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Shift and bounded log-scale `(B, N, D)`, exactly zero on conditioning coordinates."""
        out = self.networks(inputs, context).view(2, *inputs.shape)
        return out[0], self._bound(out[1])

    def _bound(self, raw: Tensor) -> Tensor:
        return raw.div(raw.abs().add(1.0)).mul(self.max_log_scale)

    def _couple(self, inputs: Tensor, context: Tensor | None, inverse: bool):
        net = self.networks
        terms = net.prepare(inputs, context)
        blocks = net.chunks(inputs)
        per_shape = len(blocks) > 1 and blocks[0][1] - blocks[0][0] == 1
        split = net.split(terms) if per_shape else None
        outputs, logabsdets = [], []
        for b0, b1, s0, s1 in blocks:
            points = inputs[b0:b1, s0:s1] if len(blocks) > 1 else inputs
            if per_shape:
                shift, raw = net.evaluate_shape(split, points[0], b0)
            else:
                shift, raw = net.evaluate(terms, points, b0)
            shift, log_scale = shift.view(points.shape), self._bound(raw.view(points.shape))
            if inverse:
                outputs.append((points - shift) * torch.exp(-log_scale))
                logabsdets.append(-log_scale.sum(2))
            else:
                outputs.append(torch.addcmul(shift, points, torch.exp(log_scale)))
                logabsdets.append(log_scale.sum(2))
        if len(blocks) == 1:
            return outputs[0], logabsdets[0]
        # Blocks run shape-major, so their flattened rows are the (B * N) rows in order.
        batch, num_points, features = inputs.shape
        outputs = torch.cat([o.reshape(-1, features) for o in outputs])
        logabsdets = torch.cat([o.reshape(-1) for o in logabsdets])
        return outputs.view(batch, num_points, features), logabsdets.view(batch, num_points)

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(inputs, context, inverse=False)

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(inputs, context, inverse=True)

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
        and type(layer.networks).prepare is _FiLMNetworks.prepare
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
        self.networks = _FiLMNetworks(
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
