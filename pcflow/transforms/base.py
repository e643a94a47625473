"""The base class of pcflow's point-set transforms: nflows' contract on ``(B, N, D)`` sets."""

from __future__ import annotations

from nflows.transforms import Transform
from torch import Tensor

from pcflow._checks import check_context, check_points

__all__ = ["PointTransform"]


class PointTransform(Transform):
    """An invertible map applied to every point of a set independently, given a per-shape context.

    Subclasses implement :meth:`forward_points` and :meth:`inverse_points`, which return the
    log-determinant per point ``(B, N)``; :meth:`forward` and :meth:`inverse` validate their
    arguments and sum it over the points of each set, which is exactly nflows' ``Transform``
    contract, so point transforms compose with ``nflows.transforms.CompositeTransform`` and
    ``InverseTransform``. Nothing in a point transform mixes the points of a set: the density of
    a set is the product of its points' densities.

    Arguments:
        features: The number of coordinates ``D`` of a point.
        context_features: The size ``C`` of the per-shape context, or ``None`` when the
            transform takes no context (it then ignores any context it is given).
    """

    def __init__(self, features: int, context_features: int | None = None) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be a positive integer, got {features}")
        if context_features is not None and context_features < 1:
            raise ValueError(f"context_features must be positive or None, got {context_features}")
        self.features = int(features)
        self.context_features = None if context_features is None else int(context_features)

    def _check(self, inputs: Tensor, context: Tensor | None) -> None:
        batch, _, _ = check_points("inputs", inputs, self.features)
        # Unconditional layers ignore a context, as nflows' do inside a conditional stack.
        if self.context_features is not None:
            check_context("context", context, batch, self.context_features)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map points towards the base distribution (data to noise).

        Arguments:
            inputs: Points, `(B, N, D)`.
            context: Per-shape context, `(B, C)`, or ``None`` for an unconditional transform.

        Returns:
            ``(outputs, logabsdet)``: the mapped points `(B, N, D)` and the log-absolute
            determinant of the Jacobian summed over the points of each set, `(B,)`.
        """
        self._check(inputs, context)
        outputs, logabsdet = self.forward_points(inputs, context)
        return outputs, logabsdet.sum(1)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map points from the base distribution back (noise to data).

        Arguments:
            inputs: Points, `(B, N, D)`.
            context: Per-shape context, `(B, C)`, or ``None`` for an unconditional transform.

        Returns:
            ``(outputs, logabsdet)``: the mapped points `(B, N, D)` and the log-absolute
            determinant of the inverse map's Jacobian summed over each set's points, `(B,)`.
        """
        self._check(inputs, context)
        outputs, logabsdet = self.inverse_points(inputs, context)
        return outputs, logabsdet.sum(1)

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Unchecked forward map with the log-determinant of each point, `(B, N)`."""
        raise NotImplementedError

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Unchecked inverse map with the log-determinant of each point, `(B, N)`."""
        raise NotImplementedError

    def activation_floats_per_point(self) -> int:
        """An estimate of the floats that one point's evaluation keeps alive in this layer.

        The flow sums (with autograd) or maximises (without) this over its layers to choose a
        chunk size from its memory budget.
        """
        return 4 * self.features
