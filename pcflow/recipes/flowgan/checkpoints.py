"""What a FlowGAN checkpoint holds besides the weights, and how a model or a run comes back."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.distributed import ProcessGroup
from pcflow.recipes.flowgan.model import FlowGAN, PSGNBaseline, build_model
from pcflow.recipes.flowgan.optimisation import Updater, WeightAverage
from pcflow.recipes.flowgan.rng import capture_rng_state, restore_rng_state, seed_all
from pcflow.recipes.flowgan.state import TrainState
from pcflow.utils import (
    CheckpointError,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)

__all__ = ["RunCheckpoints", "load_model"]

BEST_KEYS = ("config", "model", "average", "trainer", "world_size")
"""What ``best.pt`` keeps of a checkpoint: the weights (and their average, with
``optim.ema_decay``) and where they were, no optimiser."""


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", *, average: bool = True
) -> FlowGAN | PSGNBaseline:
    """Rebuild a trained model from a checkpoint written by `Trainer` (in evaluation mode).

    Arguments:
        path: A ``last.pt`` or ``best.pt``.
        map_location: Where the weights go.
        average: Load the run's averaged weights when the checkpoint holds them (a run with
            ``optim.ema_decay``); ``False`` for the weights training goes on from.

    Raises:
        CheckpointError: If the file is missing, corrupt, not a FlowGAN checkpoint, or its
            weights do not fit the configuration it holds.
    """
    state = load_checkpoint(path, map_location, required_keys=("config", "model"))
    try:
        config = FlowGANConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds an incompatible config: {error}"
        ) from error
    model = build_model(config)
    averaged = state.get("average") if average else None
    load_weights(model, averaged if averaged is not None else state["model"], path)
    return model.eval()


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


def check_same_setup(saved: dict[str, Any], config: FlowGANConfig, path: str | Path) -> None:
    """Refuse to resume a run whose ``model`` or ``loss`` section differs from ``config``'s."""
    before = FlowGANConfig.from_dict(saved)
    for section in ("model", "loss"):
        old, new = (
            dataclasses.asdict(getattr(before, section)),
            dataclasses.asdict(getattr(config, section)),
        )
        if old != new:
            changes = ", ".join(
                f"{k}: {old[k]!r} in the checkpoint, {new.get(k)!r} now"
                for k in old
                if old[k] != new.get(k)
            )
            raise CheckpointError(
                f"checkpoint {str(path)!r} was trained with another {section!r} section "
                f"({changes}); resume with the same configuration"
            )


def restore_rank_rng(
    states: list[dict[str, Any]], group: ProcessGroup, seed: int, step: int, path: str | Path
) -> None:
    """Restore this rank's random states saved in a checkpoint; reseed (with a warning) when
    the checkpoint was written by another number of processes."""
    if len(states) == group.world_size:
        restore_rng_state(states[group.rank])
        return
    warnings.warn(
        f"{path} was written by {len(states)} processes, this run has {group.world_size}: "
        "random states are reseeded, so the run continues but not bit-exactly",
        stacklevel=3,
    )
    seed_all(seed + group.rank + 1000 * step)


class RunCheckpoints:
    """A run's ``last.pt`` and ``best.pt``: what they hold, written by rank 0, and resuming.

    A checkpoint holds the config, the model's weights, their average (``average``: ``None``
    without ``optim.ema_decay`` or before it starts), each network's optimiser, schedule and
    gradient scaler (``generator_optimizer``, ..., ``critic_scaler``; ``None`` without a
    critic), the `TrainState`, every rank's random states and the number of processes.

    Arguments:
        folder: The run's ``checkpoints`` folder.
        config: The run's configuration.
        model: The model being trained.
        updaters: ``{"generator": Updater, "critic": Updater or None}``.
        group: The training processes.
        average: The run's `WeightAverage`, if it keeps one.
    """

    def __init__(
        self,
        folder: str | Path,
        config: FlowGANConfig,
        model: nn.Module,
        updaters: dict[str, Updater | None],
        group: ProcessGroup,
        *,
        average: WeightAverage | None = None,
    ) -> None:
        self.folder, self.config, self.model = Path(folder), config, model
        self.updaters, self.group, self.average = updaters, group, average
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
        saved = {"config": self.config.to_dict(), "model": self.model.state_dict()}
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
        otherwise seed every random number generator with ``train.seed`` plus the rank and
        return ``None`` (a fresh start)."""
        if resume and self.last.exists():
            return self.load(self.last)
        if resume:
            self.group.print(f"no checkpoint in {self.folder}: starting from scratch")
        seed_all(self.config.train.seed + self.group.rank)
        return None

    def load(self, path: str | Path) -> TrainState:
        """Restore the weights, optimisers and this rank's random states from ``path``;
        return its `TrainState`.

        Raises:
            CheckpointError: If the file is missing or corrupt, or was trained with another
                ``model`` or ``loss`` section.
        """
        required = ("config", "model", "generator_optimizer", "trainer", "rng")
        saved = load_checkpoint(path, next(self.model.parameters()).device, required_keys=required)
        check_same_setup(saved["config"], self.config, path)
        load_weights(self.model, saved["model"], path)
        self._load_average(saved.get("average"), path)
        for name, updater in self.updaters.items():
            if updater is not None:
                updater.load_state_dict({part: saved[f"{name}_{part}"] for part in _PARTS})
        state = TrainState(**saved["trainer"])
        restore_rank_rng(saved["rng"], self.group, self.config.train.seed, state.global_step, path)
        return state

    def _load_average(self, weights: dict[str, Tensor] | None, path: str | Path) -> None:
        if self.average is None:
            if weights is not None:
                warnings.warn(
                    f"{path} holds averaged weights but optim.ema_decay is off now: the "
                    "average is not kept in this run's checkpoints from here on",
                    stacklevel=3,
                )
            return
        try:
            self.average.load_state_dict(weights)
        except ValueError as error:
            raise CheckpointError(f"checkpoint {str(path)!r}: {error}") from error


_PARTS = ("optimizer", "scheduler", "scaler")
"""An `Updater`'s parts, saved as ``generator_<part>`` and ``critic_<part>``."""
