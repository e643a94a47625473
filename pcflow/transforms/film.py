"""FiLM conditioning of per-point networks by a per-shape context, and their evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["FiLMConditioner", "PointNetworks", "film_terms"]

_CACHE_BYTES = 2**20
"""Hidden activations per cache block (about half of a core's L2 cache on current x86 CPUs)."""


class FiLMConditioner(nn.Module):
    """The FiLM terms of ``k`` networks' hidden layers from a per-shape context ``z``.

    ``w(z)`` and ``b(z)`` of every network come from one ``C -> 2kH`` layer with a SiLU, then
    ``2k`` grouped ``H -> H`` layers; the hidden layer ``h`` becomes
    ``h * (eps + exp(w(z))) + b(z)``, as in DPF-Nets and FlowGAN.

    Arguments:
        context_features: Size ``C`` of the context.
        num_nets: Number of modulated networks ``k``.
        hidden_features: Width ``H`` of their hidden layer.
        eps: The ``eps`` of the scale, which keeps it positive.

    References:
        Perez, Strub, de Vries, Dumoulin, Courville. "FiLM: Visual Reasoning with a General
        Conditioning Layer." AAAI 2018.
    """

    def __init__(
        self, context_features: int, num_nets: int, hidden_features: int, eps: float = 1e-3
    ) -> None:
        super().__init__()
        k, h = num_nets, hidden_features
        self.num_nets, self.hidden_features, self.eps = k, h, float(eps)
        self.linear = nn.Linear(context_features, 2 * k * h)
        self.weight = nn.Parameter(torch.empty(2 * k, h, h))
        self.bias = nn.Parameter(torch.empty(2 * k, 1, h))
        self.reset_parameters()

    def reset_parameters(self, last_std: float = 1e-2) -> None:
        """nn.Linear's default for the first layer; small output weights (near-identity FiLM)."""
        self.linear.reset_parameters()
        nn.init.normal_(self.weight, std=last_std)
        nn.init.zeros_(self.bias)

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Scale ``eps + exp(w(z))`` and shift ``b(z)``, each `(k, B, H)`, for context `(B, C)`."""
        scale, shift = film_terms([self], [None], context, context.shape[0])
        return scale[0], shift[0]


def film_terms(
    films: Sequence[FiLMConditioner],
    hidden_biases: Sequence[Tensor | None],
    context: Tensor,
    batch: int,
) -> tuple[Tensor, Tensor]:
    """FiLM scale ``a`` and folded bias ``c a + b`` of the hidden layers of many networks.

    However many conditioners there are (one per layer), each kind of weight takes one product:
    the fused kernel passes every layer of a stack at once. The conditioners must have the same
    ``k`` and ``H``.

    Arguments:
        films: The layers' conditioners.
        hidden_biases: Each layer's hidden bias ``c`` `(k, 1, H)`, folded into the result as
            ``(h W + c) a + b = (h W) a + (c a + b)``; ``None`` for none.
        context: `(B, C)`.
        batch: ``B``.

    Returns:
        ``(scale, bias)``, each `(len(films), k, B, H)`.
    """
    num, k, h = len(films), films[0].num_nets, films[0].hidden_features

    def cat(tensors: list[Tensor], dim: int = 0) -> Tensor:
        return tensors[0] if num == 1 else torch.cat(tensors, dim)

    film = F.silu(cat([f.linear(context) for f in films], 1))  # (B, L * 2k * H)
    film = film.view(batch, num * 2 * k, h).transpose(0, 1)
    film = torch.baddbmm(cat([f.bias for f in films]), film, cat([f.weight for f in films])).view(
        num, 2 * k, batch, h
    )
    eps = torch.tensor([f.eps for f in films], dtype=film.dtype, device=film.device)
    scale = eps.view(num, 1, 1, 1) + torch.exp(film[:, :k])
    if all(bias is None for bias in hidden_biases):
        return scale, film[:, k:]
    hidden_bias = cat([b if b is not None else film.new_zeros(k, 1, h) for b in hidden_biases])
    return scale, torch.addcmul(film[:, k:], hidden_bias.view(num, k, 1, h), scale)


def _rename_film_keys(state_dict, prefix, *args) -> None:
    # Checkpoints from pcflow 0.1 hold the FiLM weights on the networks themselves.
    for old, new in (("film_in.", "film.linear."), ("film_weight", "film.weight"),
                     ("film_bias", "film.bias")):  # fmt: skip
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


class PointNetworks(nn.Module):
    """``num_nets`` per-point networks evaluated together, FiLM-modulated by the context.

    Each network maps the conditioning coordinates of a point through ``in -> H`` (ReLU),
    ``H -> H``, then ``h * (eps + exp(w(z))) + b(z)`` (ReLU), then ``H -> out``, with ``w`` and
    ``b`` from the `FiLMConditioner` ``film`` (absent without a context). This is the
    conditioner of every `pcflow.transforms.PointCoupling`. Its evaluation folds the FiLM
    terms, once per shape, into a per-shape copy of the ``H -> H`` weights and bias
    (`prepare`), so the point-wise work is three batched matrix products and two in-place ReLUs
    (`evaluate`, or `evaluate_shape` on blocks from `chunks`), and the context is never
    repeated over points.

    Arguments:
        num_nets: Number of networks ``k`` (2 for an affine coupling's shift and log-scale).
        identity: The conditioning coordinates the networks read.
        out_features: Outputs of each network.
        hidden_features: Width ``H``.
        context_features: Size ``C`` of the context, or ``None`` (no FiLM).
        film_eps: The ``eps`` of the FiLM scale.

    Example:
        >>> import torch
        >>> networks = PointNetworks(2, [1, 2], 1, hidden_features=16, context_features=8)
        >>> networks(torch.randn(4, 100, 3), torch.randn(4, 8)).shape  # (k, B * N, out)
        torch.Size([2, 400, 1])
    """

    def __init__(
        self,
        num_nets: int,
        identity: Sequence[int],
        out_features: int,
        *,
        hidden_features: int = 64,
        context_features: int | None = None,
        film_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        k, h = num_nets, hidden_features
        self.num_nets, self.hidden_features, self.out_features = k, h, out_features
        self.register_buffer("identity_index", torch.tensor(list(identity)), persistent=False)
        self.first_weight = nn.Parameter(torch.empty(k, len(identity), h))
        self.first_bias = nn.Parameter(torch.empty(k, 1, h))
        self.hidden_weight = nn.Parameter(torch.empty(k, h, h))
        self.hidden_bias = nn.Parameter(torch.empty(k, 1, h))
        self.last_weight = nn.Parameter(torch.empty(k, h, out_features))
        self.last_bias = nn.Parameter(torch.empty(k, 1, out_features))
        self.context_features = context_features
        self.film = (
            None if context_features is None else FiLMConditioner(context_features, k, h, film_eps)
        )
        self._register_load_state_dict_pre_hook(_rename_film_keys)
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
        if self.film is not None:
            self.film.reset_parameters(last_std)

    def _full(self, weight: Tensor, dim: int, index: Tensor, size: int) -> Tensor:
        shape = list(weight.shape)
        shape[dim] = size
        return weight.new_zeros(shape).index_copy(dim, index, weight)

    def hidden_film(self, context: Tensor | None, batch: int) -> tuple[Tensor, Tensor] | None:
        """FiLM scale ``a`` and folded bias ``c a + b`` of the hidden layer, each `(k, B, H)`.

        ``None`` without a context (the hidden layer is then the same for every shape).
        """
        if self.film is None:
            return None
        scale, bias = film_terms([self.film], [self.hidden_bias], context, batch)
        return scale[0], bias[0]

    def prepare(
        self, inputs: Tensor, context: Tensor | None, *, out_index: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Per-layer and per-shape terms: full first/last weights, FiLM-folded hidden layer.

        With ``out_index`` (as many coordinates as ``out_features``), the outputs are scattered
        to those coordinates of a point, `(..., D)`, and are zero on the others.
        """
        batch, _, features = inputs.shape
        k, h = self.num_nets, self.hidden_features
        # Zero rows for the transformed coordinates let the first layer read all D columns,
        # so no per-layer gather or copy of the conditioning coordinates is needed.
        first = self._full(self.first_weight, 1, self.identity_index, features)
        last_weight, last_bias = self.last_weight, self.last_bias
        if out_index is not None:
            last_weight = self._full(last_weight, 2, out_index, features)
            last_bias = self._full(last_bias, 2, out_index, features)
        film = self.hidden_film(context, batch)
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
        group = max(1, target // max(num_points, 1))  # no points: one block per batch row group
        return [(b, min(b + group, batch), 0, num_points) for b in range(0, batch, group)]

    def forward(
        self, inputs: Tensor, context: Tensor | None, *, out_index: Tensor | None = None
    ) -> Tensor:
        """Network outputs ``(num_nets, B * N, out)`` for points ``(B, N, D)``, in one block.

        ``out`` is ``D`` with ``out_index`` (see `prepare`), ``out_features`` without.
        """
        terms = self.prepare(inputs, context, out_index=out_index)
        return torch.stack(self.evaluate(terms, inputs, 0))
