"""Conditional flows over point sets: base distributions over points and a point transform stack."""

from __future__ import annotations

import math

import torch
from nflows.distributions import Distribution
from nflows.flows import Flow
from nflows.transforms import CompositeTransform, Transform
from torch import Tensor, nn

from pcflow._checks import (
    check_context,
    check_finite,
    check_points,
    check_positive_int,
    check_same_batch,
)
from pcflow.flows.fused import fused_groups, kernel_takes, run_fused
from pcflow.flows.sampling import check_draws as _check_draws
from pcflow.flows.sampling import check_spread as _check_spread
from pcflow.flows.sampling import check_temperature as _check_temperature
from pcflow.flows.sampling import check_trim as _check_trim
from pcflow.ops.sampling import sample_farthest_points
from pcflow.transforms.base import PointTransform
from pcflow.utils._deprecation import renamed_argument

__all__ = [
    "ConditionalPointFlow",
    "FreeVariancePointNormal",
    "StandardPointNormal",
    "num_draws",
    "select_draws",
    "sobol_normal",
]

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"""Bytes of activations that an evaluation without autograd may hold at once (256 MiB)."""


def _gather_points(points: Tensor, idx: Tensor) -> Tensor:
    return points.gather(1, idx[..., None].expand(-1, -1, points.shape[-1]))


def sobol_normal(
    batch: int,
    num_points: int,
    features: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal draws ``(batch, num_points, features)`` made of a scrambled Sobol
    sequence per shape mapped through the normal's inverse CDF.

    Each row of a shape is distributed as ``N(0, I)`` (the scrambling makes every point uniform
    on the unit cube before the map), but the rows of one shape are not independent: they fill
    the cube evenly, without the bunches and gaps of independent draws. Each shape's scramble is
    seeded from torch's global RNG, so ``torch.manual_seed`` repeats the draws.

    Arguments:
        batch: Shapes ``B``.
        num_points: Draws per shape (Sobol sequences are most even at powers of two).
        features: Coordinates ``D`` per draw (at most 21,201).
        dtype: Of the result (the sequence and the map are computed in float64).
        device: Of the result.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> draws = sobol_normal(2, 1024, 3)
        >>> draws.shape, bool(draws.mean().abs() < 0.05)
        (torch.Size([2, 1024, 3]), True)
    """
    check_positive_int("batch", batch)
    check_positive_int("num_points", num_points)
    check_positive_int("features", features)
    seeds = torch.randint(0, 2**31 - 1, (batch,)).tolist()
    # Sobol points are multiples of 2^-30: the half-cell shift keeps them off 0 and 1, where the
    # inverse CDF is infinite, and leaves each point uniform on the cube.
    uniform = torch.stack([
        torch.quasirandom.SobolEngine(features, scramble=True, seed=seed).draw(
            num_points, dtype=torch.float64
        )
        for seed in seeds
    ]).add_(2.0**-31).clamp_(2.0**-31, 1 - 2.0**-31)  # fmt: skip
    normal = torch.special.ndtri(uniform)
    return normal.to(dtype=dtype, device=device)


def num_draws(num_points: int, trim: float = 0.0, spread: int = 1) -> int:
    """How many independent draws per shape `ConditionalPointFlow.sample` makes to return
    ``num_points`` points with these ``trim`` and ``spread`` (see `select_draws`)."""
    kept = num_points * _check_spread(spread)
    return math.ceil(kept / (1.0 - _check_trim(trim))) if trim > 0 else kept


def select_draws(
    draws: Tensor,
    num_points: int,
    *,
    log_prob: Tensor | None = None,
    trim: float = 0.0,
    spread: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """The points `ConditionalPointFlow.sample` keeps of its independent draws.

    Of the first ``num_draws(num_points, trim, spread)`` draws, the ``spread * num_points``
    with the highest log-density are kept when ``trim > 0``, then thinned to ``num_points`` by
    farthest point sampling (`pcflow.ops.sample_farthest_points`, from the first kept draw)
    when ``spread > 1``; the points stay in the order drawn. More draws than needed may be
    given: independent draws, so their first ones are a sample of that size, and one set of
    draws can serve several settings.

    Arguments:
        draws: Points ``(B, M, D)`` in the order drawn, ``M >= num_draws(...)``.
        num_points: Points kept per shape.
        log_prob: ``(B, M)`` each draw's log-density under the model; needed to trim.
        trim: As in `ConditionalPointFlow.sample`.
        spread: As in `ConditionalPointFlow.sample`.

    Returns:
        ``(points, log_prob)``: ``(B, num_points, D)`` and the kept points' log-densities
        ``(B, num_points)`` (``None`` without ``log_prob``).
    """
    drawn = num_draws(num_points, trim, spread)
    # Not-finite draws pass through, as from `sample` (a diverged model's are reported later).
    batch, available, _ = check_points("draws", draws, finite=False)
    if available < drawn:
        raise ValueError(
            f"draws must hold at least {drawn} points per shape for num_points={num_points}, "
            f"trim={trim} and spread={spread}, got {available}"
        )
    if log_prob is None and trim > 0:
        raise ValueError("log_prob (each draw's log-density) is needed to trim")
    if log_prob is not None and log_prob.shape != draws.shape[:2]:
        raise ValueError(
            f"log_prob must have shape ({batch}, {available}), got {tuple(log_prob.shape)}"
        )
    draws = draws[:, :drawn]
    log_prob = None if log_prob is None else log_prob[:, :drawn]
    if trim > 0:  # the densest draws, in the order they were drawn
        keep = log_prob.detach().topk(num_points * spread, dim=1, sorted=False).indices
        keep = keep.sort(1).values
        draws, log_prob = _gather_points(draws, keep), log_prob.gather(1, keep)
    if spread > 1:
        keep = sample_farthest_points(draws, K=num_points).idx.sort(1).values
        draws = _gather_points(draws, keep)
        log_prob = None if log_prob is None else log_prob.gather(1, keep)
    return draws, log_prob


def _flatten(transform: Transform) -> list[Transform]:
    if isinstance(transform, CompositeTransform):
        return [layer for inner in transform._transforms for layer in _flatten(inner)]
    return [transform]


class StandardPointNormal(Distribution):
    """A standard normal over the ``D`` coordinates of every point of a set, any number of points.

    Arguments:
        features: Number of coordinates ``D`` of a point.

    Example:
        >>> import torch
        >>> base = StandardPointNormal(3)
        >>> base.sample(100, context=torch.zeros(2, 8)).shape
        torch.Size([2, 100, 3])
        >>> base.log_prob(torch.zeros(2, 10, 3)).shape
        torch.Size([2])
    """

    def __init__(self, features: int = 3) -> None:
        super().__init__()
        self.features = int(features)
        self._log_z = 0.5 * self.features * math.log(2 * math.pi)
        # Carries the dtype and device of samples through .to(), .double(), .cuda().
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    def log_prob_points(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each point, `(B, N)`, for points `(B, N, D)` (``context`` unused)."""
        return inputs.square().sum(2).mul(-0.5).sub(self._log_z)

    def _log_prob(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        check_points("inputs", inputs, self.features, allow_empty=True)
        return self.log_prob_points(inputs).sum(1)

    def from_standard(self, noise: Tensor, context: Tensor | None = None) -> Tensor:
        """Base draws from standard normal draws ``(B, N, D)``: the same (this base is
        ``N(0, I)``); what `ConditionalPointFlow.sample` uses for ``draws="sobol"``."""
        return noise

    def _sample(self, num_samples: int, context: Tensor | None) -> Tensor:
        batch = 1 if context is None else context.shape[0]
        reference = self._reference if context is None else context
        return torch.randn(
            batch, num_samples, self.features, dtype=reference.dtype, device=reference.device
        )


class FreeVariancePointNormal(Distribution):
    """A zero-mean normal over points whose per-coordinate scale each shape's context sets.

    DPF-Nets' ``freevar`` base: ``x ~ N(0, diag(sigma(z)^2))`` for every point of a shape with
    latent ``z``, where ``log sigma(z) = W z + b`` is one linear layer of the context. The layer
    starts at zero, so the base starts as a standard normal. Each shape's points are
    independent given ``z``, so any number of them can be sampled.

    References:
        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020 (the ``freevar`` option of its public configuration).

    Arguments:
        features: Number of coordinates ``D`` of a point.
        context_features: Size ``C`` of the per-shape context ``z``.

    Example:
        >>> import torch
        >>> base = FreeVariancePointNormal(3, context_features=8)
        >>> z = torch.randn(2, 8)
        >>> base.sample(100, context=z).shape
        torch.Size([2, 100, 3])
        >>> base.log_prob(torch.zeros(2, 10, 3), context=z).shape
        torch.Size([2])
    """

    def __init__(self, features: int = 3, context_features: int = 512) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive integer, got {features!r}")
        if (
            isinstance(context_features, bool)
            or not isinstance(context_features, int)
            or context_features < 1
        ):
            raise ValueError(
                f"context_features must be a positive integer, got {context_features!r}"
            )
        self.features = features
        self.context_features = context_features
        self._log_z = 0.5 * features * math.log(2 * math.pi)
        self.log_scale = nn.Linear(context_features, features)
        nn.init.zeros_(self.log_scale.weight)
        nn.init.zeros_(self.log_scale.bias)
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    def scale(self, context: Tensor) -> Tensor:
        """Each shape's standard deviation per coordinate, `(B, D)`, for a context `(B, C)`."""
        check_context("context", context, context.shape[0], self.context_features)
        return self.log_scale(context).exp()

    def log_prob_points(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each point, `(B, N)`, for points `(B, N, D)` and a context `(B, C)`."""
        if context is None:
            raise ValueError(
                f"context is required: a tensor shaped (B, {self.context_features}) "
                "that sets each shape's base variance"
            )
        check_context("context", context, inputs.shape[0], self.context_features)
        log_scale = self.log_scale(context)  # (B, D)
        scaled = inputs * torch.exp(-log_scale)[:, None, :]
        return scaled.square().sum(2).mul(-0.5).sub(self._log_z + log_scale.sum(1)[:, None])

    def _log_prob(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        check_points("inputs", inputs, self.features, allow_empty=True)
        return self.log_prob_points(inputs, context).sum(1)

    def from_standard(self, noise: Tensor, context: Tensor | None = None) -> Tensor:
        """Base draws from standard normal draws ``(B, N, D)``: each shape's scaled by its
        ``sigma(z)``; what `ConditionalPointFlow.sample` uses for ``draws="sobol"``."""
        if context is None:
            raise ValueError(f"context is required: a tensor shaped (B, {self.context_features})")
        return noise * self.scale(context)[:, None, :]

    def _sample(self, num_samples: int, context: Tensor | None) -> Tensor:
        if context is None:
            raise ValueError(f"context is required: a tensor shaped (B, {self.context_features})")
        noise = torch.randn(
            context.shape[0], num_samples, self.features, dtype=context.dtype,
            device=context.device,
        )  # fmt: skip
        return noise * self.scale(context)[:, None, :]


class ConditionalPointFlow(Flow):
    """A normalizing flow over point sets, conditioned on a per-shape context.

    Points are independent given the context: the transform maps every point of a set through
    the same invertible map (the pcflow point transforms, optionally mixed with nflows
    transforms that accept `(B, N, D)`), and the base distribution is a density over points.
    The log-likelihood of a set is therefore the sum of its points' log-likelihoods, and any
    number of points can be sampled for a shape.

    Large sets are processed in chunks of points whenever autograd is off (`torch.no_grad`),
    with the chunk size chosen so that the activations alive at once fit ``memory_budget``
    bytes; under autograd every chunk's activations would be kept for backward anyway, so the
    memory-efficient path (``memory_efficient=True``) is what bounds training memory: it
    recomputes each layer's activations from its outputs during backward instead of storing
    them (see `pcflow.flows.reversible`), at the cost of roughly one more forward pass.

    Arguments:
        transform: The transform from data to noise, e.g. a `CompositeTransform` of point
            transforms. Nested composites are unpacked into their layers.
        distribution: The base distribution over points; a `StandardPointNormal` in ``D``
            (inferred from the transform's layers) when ``None``.
        memory_efficient: Recompute activations during backward instead of storing them, for
            `log_prob`, `transform_to_noise` and `sample` under autograd (not for per-point
            log-likelihoods, which use plain autograd). Stacks that the fused kernel takes
            whole recompute anyway.
        memory_budget: Bytes of activations a chunked evaluation may hold at once.
        fused: Hand runs of consecutive `PointAffineCoupling` layers to pcflow's fused CPU
            kernel (`pcflow.flows.fused`) whenever the points are float32 on the CPU (and
            autocast is off), with or without autograd. It keeps activations in cache, is
            several times faster than the PyTorch path, and its backward pass recomputes
            instead of storing, like ``memory_efficient``. The attribute can be changed later.

    Example:
        >>> import torch
        >>> from nflows.transforms import CompositeTransform
        >>> from pcflow.transforms import PointAffineCoupling
        >>> layers = [PointAffineCoupling(m, context_features=8) for m in ([1, 0, 0], [0, 1, 1])]
        >>> flow = ConditionalPointFlow(CompositeTransform(layers))
        >>> z = torch.randn(2, 8)
        >>> flow.log_prob(torch.randn(2, 100, 3), z).shape
        torch.Size([2])
        >>> flow.sample(500, z).shape
        torch.Size([2, 500, 3])
    """

    def __init__(
        self,
        transform: Transform,
        distribution: Distribution | None = None,
        *,
        memory_efficient: bool = False,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        fused: bool = True,
    ) -> None:
        if not isinstance(transform, CompositeTransform):
            transform = CompositeTransform([transform])
        layers = _flatten(transform)
        features = next((layer.features for layer in layers if hasattr(layer, "features")), 3)
        if distribution is None:
            distribution = StandardPointNormal(features)
        super().__init__(transform, distribution)
        self._layers = layers
        self.features = int(getattr(distribution, "features", features))
        self.context_features = next(
            (
                layer.context_features
                for layer in layers
                if getattr(layer, "context_features", None) is not None
            ),
            None,
        )
        if memory_budget <= 0:
            raise ValueError(
                f"memory_budget must be a positive number of bytes, got {memory_budget}"
            )
        self.memory_efficient = bool(memory_efficient)
        self.memory_budget = int(memory_budget)
        self.fused = bool(fused)
        self._groups = fused_groups(layers)

    @property
    def layers(self) -> list[Transform]:
        """The flow's layers from data to noise, composites unpacked."""
        return list(self._layers)

    # ----------------------------------------------------------------------------------- checks
    def _check_dtype(self, name: str, tensor: Tensor) -> None:
        # Without this, a float64 or half input fails deep inside a matmul, unnamed.
        parameter = next(self.parameters(), None)
        if (
            parameter is None
            or tensor.dtype == parameter.dtype
            or torch.is_autocast_enabled(tensor.device.type)
        ):
            return
        raise TypeError(
            f"{name} has dtype {tensor.dtype} but the flow's parameters are {parameter.dtype}; "
            f"convert one to the other ({name}.to({parameter.dtype}) or flow.to({tensor.dtype}))"
        )

    def _check_context(self, context: Tensor | None, batch: int) -> None:
        if isinstance(context, Tensor) and context.is_floating_point():
            self._check_dtype("context", context)
        if self.context_features is not None:
            check_context("context", context, batch, self.context_features)
        elif context is not None:
            if not isinstance(context, Tensor) or context.dim() != 2:
                raise ValueError("context must be a tensor shaped (B, C)")
            if context.shape[0] != batch:
                check_same_batch("context", context, "the points' batch", torch.empty(batch))
            check_finite("context", context)

    def _check_points(self, points: Tensor, context: Tensor | None) -> tuple[int, int]:
        batch, num_points, _ = check_points("points", points, self.features)
        self._check_dtype("points", points)
        self._check_context(context, batch)
        return batch, num_points

    def _check_sample_args(self, num_points: int, context: Tensor | None) -> int:
        check_positive_int("num_points", num_points)
        if context is None:
            if self.context_features is not None:
                raise ValueError(
                    f"context is required: a tensor shaped (B, {self.context_features})"
                )
            return 1
        batch = context.shape[0] if isinstance(context, Tensor) and context.dim() == 2 else -1
        self._check_context(context, batch)
        return batch

    # ----------------------------------------------------------------------------------- chunks
    def chunk_size(self, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
        """Points per shape that one chunk may hold within ``memory_budget``, without autograd.

        Only the activations of the layer being evaluated are alive at a time, so the largest
        layer's estimate (`PointTransform.activation_floats_per_point`) sets the cost of a point;
        layers the fused kernel takes keep their activations in cache and count ``4 D`` floats.

        Arguments:
            batch_size: Number of shapes ``B`` evaluated together.
            dtype: Floating-point type of the points.

        Returns:
            The chunk size, at least 1.
        """
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        kernel = self.fused and kernel_takes(dtype, device)

        def floats(fusable: bool, layer: Transform) -> int:
            if fusable and kernel:
                return 4 * self.features  # the kernel keeps activations in cache, not memory
            return getattr(layer, "activation_floats_per_point", lambda: 16)()

        largest = max(
            (floats(fusable, layer) for fusable, group in self._groups for layer in group),
            default=16,
        )
        per_point = (largest + 4 * self.features) * torch.finfo(dtype).bits // 8
        return max(1, self.memory_budget // (per_point * batch_size))

    def _resolve_chunk(self, chunk_size: int | None, batch: int, num_points: int, dtype) -> int:
        if chunk_size is not None:
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
                raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
            return chunk_size
        if torch.is_grad_enabled():
            # Autograd keeps every chunk's activations: chunking would not bound memory.
            return num_points
        return self.chunk_size(batch, dtype)

    # ------------------------------------------------------------------------------- transform
    def _run(
        self, inputs: Tensor, context: Tensor | None, inverse: bool, per_point: bool
    ) -> tuple[Tensor, Tensor]:
        """Unchecked pass through all layers; logabsdet `(B, N)` if ``per_point`` else `(B,)`."""
        fused_whole = (
            self.fused
            and all(fusable for fusable, _ in self._groups)
            and kernel_takes(inputs.dtype, inputs.device)
        )
        # The fused kernel's backward pass rebuilds activations itself: it is memory-efficient.
        if self.memory_efficient and not per_point and torch.is_grad_enabled() and not fused_whole:
            from pcflow.flows import reversible

            run = (
                reversible.memory_efficient_inverse
                if inverse
                else reversible.memory_efficient_forward
            )
            return run(self._layers, inputs, context)
        total = None
        for fusable, group in reversed(self._groups) if inverse else self._groups:
            fused = run_fused(group, inputs, context, inverse) if fusable and self.fused else None
            if fused is not None:
                inputs, logabsdet = fused
                if not per_point:
                    logabsdet = logabsdet.sum(1)
                total = logabsdet if total is None else total + logabsdet
                continue
            for layer in reversed(group) if inverse else group:
                if isinstance(layer, PointTransform):
                    step = layer.inverse_points if inverse else layer.forward_points
                    inputs, logabsdet = step(inputs, context)
                    if not per_point:
                        logabsdet = logabsdet.sum(1)
                elif per_point:
                    inputs, logabsdet = self._foreign_per_point(layer, inputs, context, inverse)
                else:
                    inputs, logabsdet = (layer.inverse if inverse else layer)(inputs, context)
                total = logabsdet if total is None else total + logabsdet
        return inputs, total

    @staticmethod
    def _foreign_per_point(
        layer: Transform, inputs: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        # A layer that only reports per-set values: evaluate every point as its own set.
        batch, num_points, features = inputs.shape
        single = inputs.reshape(batch * num_points, 1, features)
        repeated = None if context is None else context.repeat_interleave(num_points, 0)
        outputs, logabsdet = (layer.inverse if inverse else layer)(single, repeated)
        return outputs.view(batch, num_points, features), logabsdet.view(batch, num_points)

    def _base_log_prob(self, noise: Tensor, context: Tensor | None, per_point: bool) -> Tensor:
        if hasattr(self._distribution, "log_prob_points"):
            values = self._distribution.log_prob_points(noise, context)
            return values if per_point else values.sum(1)
        if per_point:
            raise ValueError(
                "per_point=True needs a base distribution with log_prob_points(points) -> (B, N)"
            )
        return self._distribution.log_prob(noise, context)

    # -------------------------------------------------------------------------------- public
    def log_prob(
        self,
        inputs: Tensor | None = None,
        context: Tensor | None = None,
        per_point: bool = False,
        *,
        points: Tensor | None = None,
    ) -> Tensor:
        """Log-likelihood of point sets under the flow, given each shape's context.

        nflows' ``Flow.log_prob(inputs, context)``: the same argument names, and one value per
        batch element (here a set of points).

        Arguments:
            inputs: Point sets, `(B, N, D)`.
            context: Per-shape context, `(B, C)`.
            per_point: Return each point's log-likelihood `(B, N)` instead of the sum per set.
            points: Deprecated name of ``inputs``.

        Returns:
            `(B,)`, the sum over each set's points (natural log, constants included), or
            `(B, N)` with ``per_point=True``.
        """
        points = _required("log_prob", "inputs", inputs, "points", points)
        batch, num_points = self._check_points(points, context)
        chunk = self._resolve_chunk(None, batch, num_points, points.dtype)
        pieces = []
        for start in range(0, num_points, chunk):
            part = points[:, start : start + chunk]
            noise, logabsdet = self._run(part, context, inverse=False, per_point=per_point)
            pieces.append(self._base_log_prob(noise, context, per_point) + logabsdet)
        if per_point:
            return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
        return pieces[0] if len(pieces) == 1 else torch.stack(pieces).sum(0)

    def transform_to_noise(
        self,
        inputs: Tensor | None = None,
        context: Tensor | None = None,
        *,
        points: Tensor | None = None,
    ) -> Tensor:
        """Map point sets to the base distribution's space (nflows' argument names).

        Arguments:
            inputs: Point sets, `(B, N, D)`.
            context: Per-shape context, `(B, C)`.
            points: Deprecated name of ``inputs``.

        Returns:
            The noise, `(B, N, D)`.
        """
        points = _required("transform_to_noise", "inputs", inputs, "points", points)
        batch, num_points = self._check_points(points, context)
        chunk = self._resolve_chunk(None, batch, num_points, points.dtype)
        pieces = [
            self._run(points[:, s : s + chunk], context, inverse=False, per_point=False)[0]
            for s in range(0, num_points, chunk)
        ]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)

    def _sample_chunks(
        self,
        num_points: int,
        context: Tensor | None,
        chunk_size: int | None,
        with_log_prob: bool,
        temperature: float = 1.0,
        trim: float = 0.0,
        spread: int = 1,
        keep_per_point: bool = False,
        draws: str = "random",
    ) -> tuple[Tensor, Tensor | None]:
        batch = self._check_sample_args(num_points, context)
        temperature, trim = _check_temperature(temperature), _check_trim(trim)
        drawn = num_draws(num_points, trim, spread)
        # The tensor whose dtype and device the samples take.
        reference = context if context is not None else self._distribution._reference
        standard = None
        if _check_draws(draws) == "sobol":
            if not hasattr(self._distribution, "from_standard"):
                raise ValueError(
                    f"draws='sobol' needs a base distribution with from_standard (pcflow's "
                    f"point normals), got {type(self._distribution).__name__}"
                )
            standard = sobol_normal(batch, drawn, self._distribution.features,
                                    dtype=reference.dtype, device=reference.device)  # fmt: skip
        # Trimming draws more points and keeps the densest: each point's density is needed;
        # spreading thins the kept points, so the log-likelihood of those left needs them too.
        per_point = trim > 0 or (spread > 1 and with_log_prob) or keep_per_point
        chunk = self._resolve_chunk(chunk_size, batch, drawn, reference.dtype)
        samples, log_probs = [], []
        for start in range(0, drawn, chunk):
            count = min(chunk, drawn - start)
            if standard is None:
                noise = self._distribution.sample(count, context)
            else:
                noise = self._distribution.from_standard(
                    standard[:, start : start + count], context
                )
            if temperature != 1.0:
                noise = noise * temperature
            points, logabsdet = self._run(noise, context, inverse=True, per_point=per_point)
            samples.append(points)
            if with_log_prob or per_point:
                log_probs.append(self._base_log_prob(noise, context, per_point) - logabsdet)
        out = samples[0] if len(samples) == 1 else torch.cat(samples, 1)
        if per_point:
            log_prob = log_probs[0] if len(log_probs) == 1 else torch.cat(log_probs, 1)
            out, kept = select_draws(out, num_points, log_prob=log_prob, trim=trim, spread=spread)
            if not with_log_prob:
                return out, None
            return out, kept if keep_per_point else kept.sum(1)
        out, _ = select_draws(out, num_points, spread=spread)
        if not with_log_prob:
            return out, None
        return out, log_probs[0] if len(log_probs) == 1 else torch.stack(log_probs).sum(0)

    def sample(
        self,
        num_samples: int | None = None,
        context: Tensor | None = None,
        chunk_size: int | None = None,
        *,
        temperature: float = 1.0,
        trim: float = 0.0,
        spread: int = 1,
        draws: str = "random",
        batch_size: int | None = None,
        num_points: int | None = None,
    ) -> Tensor:
        """Sample ``num_samples`` points for every shape (differentiable in context and weights).

        nflows' ``Flow.sample(num_samples, context, batch_size)``: the same argument names and
        the same shape, `(context size, num_samples, D)`; a sample is a point, and the
        ``num_samples`` points of a shape form its set.

        Arguments:
            num_samples: Points per shape, any positive number (millions are fine without
                autograd: they are generated in chunks within the memory budget).
            context: Per-shape context, `(B, C)`.
            chunk_size: Points per shape generated at a time; derived from ``memory_budget``
                when ``None`` and autograd is off, all at once when it is on.
            temperature: Scale of the base noise (``T``): samples are the flow's inverse of
                ``T * noise``. Below 1 they gather where the density is high (fewer stray
                points, less coverage); 1 samples the model itself, draw for draw as without
                the option.
            trim: Fraction ``q`` in ``[0, 1)`` of low-density draws to drop: ``ceil(num_samples
                / (1 - q))`` points are drawn per shape and the ``num_samples`` where the model's
                density is highest are kept, in the order drawn. It removes stray points in
                the space between parts without shrinking the shape as a temperature does; 0
                samples the model itself, draw for draw as without the option.
            spread: ``s >= 1``: keep ``s * num_samples`` draws (after trimming) and thin them
                to ``num_samples`` by farthest point sampling (`pcflow.ops.sample_farthest_points`,
                from the first kept draw), in the order drawn. Independent draws bunch in
                places and leave gaps; the thinned points cover the sampled shape evenly. 1
                samples the model itself, draw for draw as without the option. The thinning
                takes ``num_samples`` sequential steps over ``s * num_samples`` points (about
                0.5 s for 16 shapes of 2,500 points on two CPU cores): meant for thousands of
                points per shape, not millions.
            draws: ``"random"`` (independent base draws) or ``"sobol"``: per shape, a scrambled
                Sobol sequence through the normal's inverse CDF (`sobol_normal`), mapped to the
                base by its ``from_standard``. Each point is still distributed as the model's,
                but a shape's points cover it evenly. ``"random"`` samples the model itself,
                draw for draw as without the option.
            batch_size: nflows' name of ``chunk_size`` (keyword-only).
            num_points: Deprecated name of ``num_samples``.

        Returns:
            Points, `(B, num_samples, D)`.
        """
        num_samples = _required("sample", "num_samples", num_samples, "num_points", num_points)
        chunk_size = _nflows_batch_size(chunk_size, batch_size)
        return self._sample_chunks(
            num_samples, context, chunk_size, False, temperature=temperature, trim=trim,
            spread=spread, draws=draws,
        )[0]  # fmt: skip

    def sample_and_log_prob(
        self,
        num_samples: int | None = None,
        context: Tensor | None = None,
        chunk_size: int | None = None,
        *,
        temperature: float = 1.0,
        trim: float = 0.0,
        spread: int = 1,
        draws: str = "random",
        per_point: bool = False,
        batch_size: int | None = None,
        num_points: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample points and the log-likelihood of each sampled set under the model.

        nflows' argument names. Where the shapes differ from nflows: by default the
        log-likelihood is one value per set, `(B,)`, the sum over its points (what `log_prob`
        returns for the sampled sets); nflows returns one per sample, `(B, num_samples)`,
        which ``per_point=True`` gives.

        Arguments:
            num_samples: Points per shape.
            context: Per-shape context, `(B, C)`.
            chunk_size: As in `sample`.
            temperature: As in `sample`; the log-likelihood is the (untempered) model's.
            trim: As in `sample`; the log-likelihood is the model's, of the points kept.
            spread: As in `sample`; the log-likelihood is the model's, of the points kept.
            draws: As in `sample`.
            per_point: Each point's log-likelihood, `(B, num_samples)` (nflows' shape), instead
                of the sum per set.
            batch_size: nflows' name of ``chunk_size`` (keyword-only).
            num_points: Deprecated name of ``num_samples``.

        Returns:
            ``(points, log_prob)``: `(B, num_samples, D)` and `(B,)`, or
            `(B, num_samples)` with ``per_point=True``.
        """
        num_samples = _required(
            "sample_and_log_prob", "num_samples", num_samples, "num_points", num_points
        )
        chunk_size = _nflows_batch_size(chunk_size, batch_size)
        return self._sample_chunks(
            num_samples, context, chunk_size, True, temperature=temperature, trim=trim,
            spread=spread, keep_per_point=per_point, draws=draws,
        )  # fmt: skip

    def _log_prob(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        return self.log_prob(inputs, context)

    def _sample(self, num_samples: int, context: Tensor | None) -> Tensor:
        return self.sample(num_samples, context)


def _required(
    function: str, name: str, value: object | None, old_name: str, old_value: object | None
) -> object:
    """The value of a required argument that also has a deprecated name."""
    value = renamed_argument(function, old_name, old_value, name, value)
    if value is None:
        raise TypeError(f"{function}() missing required argument: {name!r}")
    return value


def _nflows_batch_size(chunk_size: int | None, batch_size: int | None) -> int | None:
    # nflows' Distribution.sample(num_samples, context, batch_size): samples made at a time.
    if batch_size is None:
        return chunk_size
    if chunk_size is not None:
        raise TypeError("pass chunk_size or batch_size (its nflows name), not both")
    return batch_size
