"""Where a training run stands, and the guard that stops it after too many non-finite steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NonFiniteLossError", "TrainState"]


class NonFiniteLossError(FloatingPointError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint.

    Arguments:
        epoch: The current epoch (0-based).
        step_in_epoch: Batches of the current epoch already trained on.
        global_step: Training steps done in total.
        skipped_steps: Steps skipped because of a non-finite loss or gradient.
        consecutive_nonfinite: Such steps in a row, up to now.
        best_metric: Best value so far of the validation metric that picks ``best.pt`` (lower
            is better; ``inf`` before any).
        best_epoch: Epoch of ``best_metric`` (-1 before any).
        finished: Whether the run reached its last epoch.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    skipped_steps: int = 0
    consecutive_nonfinite: int = 0
    best_metric: float = math.inf
    best_epoch: int = -1
    finished: bool = False

    def count_step(self, ok: bool, limit: int, values: dict[str, float]) -> None:
        """Count a step taken (``ok``) or skipped for a non-finite loss or gradient.

        Raises:
            NonFiniteLossError: When ``limit`` steps in a row were skipped (``values``, the
                step's logged values, are named in the message).
        """
        if ok:
            self.consecutive_nonfinite = 0
            return
        self.skipped_steps += 1
        self.consecutive_nonfinite += 1
        if self.consecutive_nonfinite >= limit:
            raise NonFiniteLossError(
                f"{self.consecutive_nonfinite} consecutive steps had a non-finite loss "
                f"or gradient (step {self.global_step}, last values {values}); lower the "
                "learning rate, clip the gradient norm, or turn off mixed precision"
            )
