"""How a point flow samples: temperature, trimming, spreading and chunking, checked once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["SamplingOptions"]

Draws = Literal["random", "sobol"]
DRAWS: tuple[str, ...] = Draws.__args__
"""How base draws are made: ``"random"`` (independent) or ``"sobol"`` (scrambled Sobol
points through the normal's inverse CDF, `pcflow.flows.sobol_normal`)."""


@dataclass(frozen=True)
class SamplingOptions:
    """How `pcflow.flows.ConditionalPointFlow.sample` turns base draws into points.

    The defaults sample the model itself. Every setting is checked when the options are made,
    so one object passes unchanged through sampling, reconstruction, autoencoding, evaluation,
    pictures and diagnosis (`keywords` gives the flow's keyword arguments).

    Arguments:
        temperature: Scale ``T > 0`` of the base noise: below 1 the points gather where the
            density is high (fewer stray points, less coverage).
        trim: Fraction ``q`` in ``[0, 1)`` of the least dense draws to drop: ``ceil(n / (1 -
            q))`` points are drawn and the ``n`` densest kept, in the order drawn.
        spread: ``s >= 1`` draws kept per point (after trimming), thinned to ``n`` by farthest
            point sampling, so that the points cover the shape evenly.
        chunk_size: Points per shape generated at a time; ``None`` lets the flow choose
            within its memory budget.
        draws: ``"random"`` (independent base draws) or ``"sobol"``: a scrambled Sobol
            sequence per shape mapped through the normal's inverse CDF, so that the base draws,
            and with them the points, cover the shape evenly instead of bunching; each draw is
            still distributed as the base (`pcflow.flows.sobol_normal`).

    Example:
        >>> import torch
        >>> from pcflow.flows import SamplingOptions, dpf_flow
        >>> flow = dpf_flow(context_features=8, num_layers=3, hidden_features=16)
        >>> options = SamplingOptions(trim=0.1, spread=2)
        >>> flow.sample(100, torch.randn(2, 8), **options.keywords()).shape
        torch.Size([2, 100, 3])
        >>> SamplingOptions(trim=1.5)
        Traceback (most recent call last):
        ...
        ValueError: trim must be a number in [0, 1), got 1.5
    """

    temperature: float = 1.0
    trim: float = 0.0
    spread: int = 1
    chunk_size: int | None = None
    draws: Draws = "random"

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        object.__setattr__(self, "trim", check_trim(self.trim))
        check_spread(self.spread)
        size = self.chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {size!r}")
        check_draws(self.draws)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplingOptions:
        """Options from a mapping of some of the fields (unknown names are an error)."""
        unknown = sorted(set(values) - {"temperature", "trim", "spread", "chunk_size", "draws"})
        if unknown:
            raise ValueError(f"unknown sampling options {unknown}")
        return cls(**values)

    @property
    def is_model(self) -> bool:
        """Whether these options sample the model itself (``T = 1``, no trim, no spread,
        independent draws)."""
        return (
            self.temperature == 1.0 and self.trim == 0.0 and self.spread == 1
            and self.draws == "random"
        )  # fmt: skip

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments of `ConditionalPointFlow.sample`."""
        return asdict(self)

    def describe(self) -> str:
        """A short label, e.g. ``"T=1, trim 0.1, spread 2"`` (``", sobol"`` added for Sobol
        draws)."""
        label = f"T={self.temperature:g}, trim {self.trim:g}, spread {self.spread}"
        return label + (", sobol" if self.draws == "sobol" else "")


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float; a `ValueError` unless it is positive and finite."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)


def check_trim(trim: float) -> float:
    """``trim`` as a float; a `ValueError` unless it is in ``[0, 1)``."""
    if (
        isinstance(trim, bool)
        or not isinstance(trim, int | float)
        or not math.isfinite(trim)
        or not 0 <= trim < 1
    ):
        raise ValueError(f"trim must be a number in [0, 1), got {trim!r}")
    return float(trim)


def check_spread(spread: int) -> int:
    """``spread``; a `ValueError` unless it is a positive int."""
    if isinstance(spread, bool) or not isinstance(spread, int) or spread < 1:
        raise ValueError(f"spread must be a positive int, got {spread!r}")
    return spread


def check_draws(draws: str) -> str:
    """``draws``; a `ValueError` unless it is one of `DRAWS`."""
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")
    return draws
