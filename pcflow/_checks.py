"""Input validation shared by pcflow's public functions.

Every public entry point checks its arguments here, so that bad input is answered with one kind
of message everywhere: the argument's name, what was expected and what was received. Internal
code trusts its callers and does not check again.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_context",
    "check_finite",
    "check_lengths",
    "check_points",
    "check_same_batch",
]


def _shape(tensor: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in tensor.shape) + ")"


def check_finite(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values.

    Arguments:
        name: The argument's name, used in the message.
        tensor: Any floating-point tensor.
    """
    if torch.compiler.is_compiling():
        return  # a data-dependent check would break the compiled graph; eager calls check
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        num_nan = int(torch.isnan(tensor).sum())
        num_inf = int(torch.isinf(tensor).sum())
        raise ValueError(
            f"{name} must be finite, but holds {num_nan} NaN and {num_inf} infinite values "
            f"(shape {_shape(tensor)})"
        )


def check_points(
    name: str,
    points: Tensor,
    dim: int | None = None,
    *,
    allow_empty: bool = False,
    finite: bool = True,
) -> tuple[int, int, int]:
    """Check that ``points`` is a floating-point batch of point sets shaped ``(B, N, D)``.

    Arguments:
        name: The argument's name, used in the message.
        points: The tensor to check.
        dim: The required size ``D`` of the last dimension, or ``None`` for any.
        allow_empty: Whether ``N = 0`` is accepted.
        finite: Whether to reject NaN and infinite values.

    Returns:
        ``(B, N, D)``.
    """
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (B, N, D), got {type(points)}")
    if points.dim() != 3:
        expected = "(B, N, D)" if dim is None else f"(B, N, {dim})"
        raise ValueError(
            f"{name} must have shape {expected} (3 dimensions), got shape {_shape(points)}"
        )
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {points.dtype}")
    batch, num_points, features = points.shape
    if dim is not None and features != dim:
        raise ValueError(f"{name} must have shape (B, N, {dim}), got shape {_shape(points)}")
    if batch == 0:
        raise ValueError(f"{name} is an empty batch (B = 0), shape {_shape(points)}")
    if num_points == 0 and not allow_empty:
        raise ValueError(f"{name} holds empty point sets (N = 0), shape {_shape(points)}")
    if finite:
        check_finite(name, points)
    return batch, num_points, features


def check_context(
    name: str,
    context: Tensor | None,
    batch_size: int,
    features: int | None,
) -> None:
    """Check a per-shape context shaped ``(B, C)`` against the batch it conditions.

    Arguments:
        name: The argument's name, used in the message.
        context: The context tensor, or ``None``.
        batch_size: The batch size ``B`` of the points it conditions.
        features: The required ``C``; ``None`` means the transform takes no context, so
            ``context`` must be ``None``.
    """
    if features is None:
        if context is not None:
            raise ValueError(
                f"{name} was given (shape {_shape(context)}) but this transform takes no context"
            )
        return
    if context is None:
        raise ValueError(f"{name} is required: a tensor shaped (B, {features})")
    if not isinstance(context, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (B, {features})")
    if context.dim() != 2 or context.shape[1] != features:
        raise ValueError(f"{name} must have shape (B, {features}), got shape {_shape(context)}")
    if context.shape[0] != batch_size:
        raise ValueError(
            f"{name} has batch size {context.shape[0]} but the points have batch size "
            f"{batch_size}; each shape needs its own context row"
        )
    if not context.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {context.dtype}")
    check_finite(name, context)


def check_same_batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Check that two batched tensors have the same batch size (first dimension)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} has batch size {a.shape[0]} but {name_b} has batch size {b.shape[0]} "
            f"(shapes {_shape(a)} and {_shape(b)})"
        )


def check_lengths(name: str, lengths: Tensor | None, batch_size: int, max_length: int) -> None:
    """Check per-set lengths of a padded batch: integer ``(B,)`` with values in ``[1, N]``.

    Arguments:
        name: The argument's name, used in the message.
        lengths: The lengths tensor, or ``None`` (all sets full).
        batch_size: The batch size ``B``.
        max_length: The padded size ``N``.
    """
    if lengths is None:
        return
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.shape[0] != batch_size:
        got = _shape(lengths) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"{name} must be an integer tensor shaped ({batch_size},), got {got}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
    if batch_size and (int(lengths.min()) < 1 or int(lengths.max()) > max_length):
        raise ValueError(
            f"{name} must lie in [1, {max_length}] (empty sets have no nearest neighbour), "
            f"got values in [{int(lengths.min())}, {int(lengths.max())}]"
        )


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive ``int`` (not a bool); a `ValueError` naming ``name`` if not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
