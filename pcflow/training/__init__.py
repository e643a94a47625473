"""The training loop any method uses, and what it is made of.

A method (`TrainingMethod`) says what one step does, which networks it updates (`Updater`)
and how it validates; `Trainer` runs it: epochs over a seeded, resumable sampler
(`make_loader`), a guard against non-finite steps, weight averaging (`WeightAverage`),
validation and ``best.pt``, atomic checkpoints that resume bit-exactly after ``kill -9``
(`RunCheckpoints`), CSV and TensorBoard logs (`RunLog`), progress bars, and ``torchrun``
data parallelism (`ProcessGroup`). Settings are typed dataclasses loaded from YAML
(`RunConfig`). Nothing here knows a recipe.
"""

from __future__ import annotations

from pcflow.training.checkpoints import BEST_KEYS, RunCheckpoints, load_weights
from pcflow.training.config import RunConfig, load_yaml
from pcflow.training.data import ResumableSampler, SeededSamples, make_loader
from pcflow.training.distributed import ProcessGroup
from pcflow.training.logs import CsvLog, LogWriter, RunLog, TensorBoardLog
from pcflow.training.optim import OptimConfig, Updater, WeightAverage
from pcflow.training.rng import capture_rng_state, restore_rng_state, seed_all
from pcflow.training.state import NonFiniteLossError, TrainState
from pcflow.training.trainer import (
    RUN_OUTPUTS,
    RunExistsError,
    StepContext,
    StepOutput,
    Trainer,
    TrainingMethod,
    TrainSettings,
    check_run_folder,
    flushing_denormals,
)

__all__ = [
    "BEST_KEYS",
    "RUN_OUTPUTS",
    "CsvLog",
    "LogWriter",
    "NonFiniteLossError",
    "OptimConfig",
    "ProcessGroup",
    "ResumableSampler",
    "RunCheckpoints",
    "RunConfig",
    "RunExistsError",
    "RunLog",
    "SeededSamples",
    "StepContext",
    "StepOutput",
    "TensorBoardLog",
    "TrainSettings",
    "TrainState",
    "Trainer",
    "TrainingMethod",
    "Updater",
    "WeightAverage",
    "capture_rng_state",
    "check_run_folder",
    "flushing_denormals",
    "load_weights",
    "load_yaml",
    "make_loader",
    "restore_rng_state",
    "seed_all",
]
