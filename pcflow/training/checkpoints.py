"""A run's checkpoints: what ``last.pt`` and ``best.pt`` hold, written atomically, and resuming."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pcflow.training.distributed import ProcessGroup
from pcflow.training.optim import Updater, WeightAverage
from pcflow.training.rng import capture_rng_state, restore_rng_state, seed_all
from pcflow.training.state import TrainState
from pcflow.utils import (
    CheckpointError,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)

__all__ = ["BEST_KEYS", "RunCheckpoints", "load_weights"]

BEST_KEYS = ("config", "model", "average", "trainer", "world_size")
"""What ``best.pt`` keeps of a checkpoint: the weights (and their average) and where they
were, no optimiser."""

_PARTS = ("optimizer", "scheduler", "scaler")
"""An `Updater`'s parts, saved as ``<name>_<part>``."""


def load_weights(model: nn.Module, weights: dict[str, Tensor], path: str | Path) -> None:
    """Load ``weights`` into ``model``, strictly; a mismatch is a `CheckpointError` naming
    ``path`` and the first keys or sizes that differ."""
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # size mismatches: weights of another configuration
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:4])
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the model its config describes: {details}"
        ) from error
    problems = []
    if result.missing_keys:
        problems.append(f"missing {result.missing_keys[:5]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {result.unexpected_keys[:5]}")
    if problems:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the model: " + "; ".join(problems)
        )


class RunCheckpoints:
    """A run's ``last.pt`` and ``best.pt``: what they hold, written by rank 0, and resuming.

    A checkpoint holds ``config`` (the method's settings, a plain dict), the model's weights
    (``model``), their average (``average``: ``None`` without one or before it starts), each
    updater's optimiser, schedule and gradient scaler (``<name>_optimizer``, ...; ``None`` for
    an updater that is ``None``), the `TrainState` (``trainer``), every rank's random states
    (``rng``) and the number of processes (``world_size``). Files are written atomically
    (`pcflow.utils.save_checkpoint`): a run killed mid-write keeps its previous checkpoint.

    Arguments:
        folder: The run's ``checkpoints`` folder.
        model: The model being trained.
        updaters: ``{name: Updater or None}``, in a fixed order.
        group: The training processes.
        config: The method's settings, saved in every checkpoint.
        seed: The run's seed (a fresh start seeds every generator with ``seed + rank``).
        check_resume: ``check_resume(saved_config, path)`` raises `CheckpointError` when a
            checkpoint's settings cannot be resumed with ``config``; ``None`` accepts any.
        upgrade: ``upgrade(weights) -> weights``: renames the weights of checkpoints written
            by earlier versions of the model; ``None`` for none.
        average: The run's `WeightAverage`, if it keeps one.
    """

    def __init__(
        self,
        folder: str | Path,
        model: nn.Module,
        updaters: dict[str, Updater | None],
        group: ProcessGroup,
        *,
        config: dict[str, Any],
        seed: int,
        check_resume: Callable[[dict[str, Any], str | Path], None] | None = None,
        upgrade: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        average: WeightAverage | None = None,
    ) -> None:
        self.folder, self.model, self.updaters, self.group = Path(folder), model, updaters, group
        self.config, self.seed, self.check_resume, self.average = (
            config,
            seed,
            check_resume,
            average,
        )
        self.upgrade = upgrade or (lambda weights: weights)
        self.last, self.best = self.folder / "last.pt", self.folder / "best.pt"

    def remove_partial(self) -> None:
        """Delete the temporary files of checkpoint writes that a killed run left."""
        for path in (self.last, self.best):
            for stale in remove_partial_checkpoints(path):
                self.group.print(f"removed {stale}, left by an interrupted checkpoint write")

    def state_dict(
        self, state: TrainState, rng_states: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The checkpoint's contents (this process's random states unless given)."""
        saved = {"config": self.config, "model": self.model.state_dict()}
        saved["average"] = self.average.state_dict() if self.average is not None else None
        for name, updater in self.updaters.items():
            parts = updater.state_dict() if updater is not None else dict.fromkeys(_PARTS)
            saved.update({f"{name}_{part}": parts[part] for part in _PARTS})
        saved["trainer"] = dataclasses.asdict(state)
        saved["rng"] = rng_states if rng_states is not None else [capture_rng_state()]
        saved["world_size"] = self.group.world_size
        return saved

    def save(self, path: str | Path, state: TrainState, *, gather: bool = True) -> None:
        """Write a checkpoint atomically (rank 0); with ``gather``, all ranks must call it."""
        rng = self.group.gather(capture_rng_state()) if gather else [capture_rng_state()]
        if self.group.is_main:
            save_checkpoint(path, self.state_dict(state, rng))
        if gather:
            self.group.barrier()

    def save_best(self, state: TrainState) -> None:
        """Write ``best.pt``: the weights alone (what evaluation needs), no optimiser state."""
        best = {k: v for k, v in self.state_dict(state, []).items() if k in BEST_KEYS}
        save_checkpoint(self.best, best)

    def resume_or_seed(self, resume: bool) -> TrainState | None:
        """With ``resume`` and a ``last.pt``, restore it (`load`) and return its `TrainState`;
        otherwise seed every random number generator with ``seed`` plus the rank and return
        ``None`` (a fresh start)."""
        if resume and self.last.exists():
            return self.load(self.last)
        if resume:
            self.group.print(f"no checkpoint in {self.folder}: starting from scratch")
        seed_all(self.seed + self.group.rank)
        return None

    def load(self, path: str | Path) -> TrainState:
        """Restore the weights, updaters and this rank's random states from ``path``; return
        its `TrainState`.

        Raises:
            CheckpointError: If the file is missing or corrupt, or ``check_resume`` refuses its
                settings.
        """
        required = ["config", "model", "trainer", "rng"]
        required += [f"{name}_optimizer" for name, u in self.updaters.items() if u is not None]
        saved = load_checkpoint(path, next(self.model.parameters()).device, required_keys=required)
        if self.check_resume is not None:
            self.check_resume(saved["config"], path)
        load_weights(self.model, self.upgrade(saved["model"]), path)
        average = saved.get("average")
        self._load_average(None if average is None else self.upgrade(average), path)
        for name, updater in self.updaters.items():
            if updater is not None:
                updater.load_state_dict({part: saved[f"{name}_{part}"] for part in _PARTS})
        state = TrainState(**saved["trainer"])
        self._restore_rng(saved["rng"], state.global_step, path)
        return state

    def _restore_rng(self, states: list[dict[str, Any]], step: int, path: str | Path) -> None:
        # Another number of processes: reseed (with a warning) rather than guess.
        if len(states) == self.group.world_size:
            restore_rng_state(states[self.group.rank])
            return
        warnings.warn(
            f"{path} was written by {len(states)} processes, this run has "
            f"{self.group.world_size}: random states are reseeded, so the run continues but "
            "not bit-exactly",
            stacklevel=3,
        )
        seed_all(self.seed + self.group.rank + 1000 * step)

    def _load_average(self, weights: dict[str, Tensor] | None, path: str | Path) -> None:
        if self.average is None:
            if weights is not None:
                warnings.warn(
                    f"{path} holds averaged weights but this run keeps no average: the "
                    "average is not kept in this run's checkpoints from here on",
                    stacklevel=3,
                )
            return
        try:
            self.average.load_state_dict(weights)
        except ValueError as error:
            raise CheckpointError(f"checkpoint {str(path)!r}: {error}") from error
