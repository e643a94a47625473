"""Renamed arguments: the old name keeps working for a while, with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings
from typing import TypeVar

__all__ = ["renamed_argument"]

T = TypeVar("T")


def renamed_argument(
    function: str, old: str, old_value: T | None, new: str, new_value: T | None
) -> T | None:
    """The value of argument ``new``, taken from its deprecated name ``old`` if that was given.

    Warns with a ``DeprecationWarning`` naming both (pointing at the caller of ``function``);
    raises ``TypeError`` if both names were given.

    Arguments:
        function: The public function's name, for the messages.
        old: The deprecated argument name.
        old_value: What the caller passed as ``old`` (``None``: not passed).
        new: The argument's name now.
        new_value: What the caller passed as ``new`` (``None``: not passed).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     renamed_argument("f_score", "pred_lengths", 3, "lengths1", None)
        3
        >>> print(caught[0].message)
        f_score(pred_lengths=...) is deprecated; use lengths1=..., its name across pcflow
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{function}: pass {new} only, not also {old} (its deprecated name)")
    warnings.warn(
        f"{function}({old}=...) is deprecated; use {new}=..., its name across pcflow",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
