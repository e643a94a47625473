"""The training loop any method uses: epochs, guarded steps, validation, checkpoints, resume."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pcflow.training.checkpoints import RunCheckpoints
from pcflow.training.data import make_loader
from pcflow.training.distributed import ProcessGroup
from pcflow.training.logs import RunLog
from pcflow.training.optim import Updater, WeightAverage
from pcflow.training.state import TrainState

__all__ = [
    "RUN_OUTPUTS",
    "RunExistsError",
    "StepContext",
    "StepOutput",
    "TrainSettings",
    "Trainer",
    "TrainingMethod",
    "check_run_folder",
    "flushing_denormals",
]

RUN_OUTPUTS = ("checkpoints", "log.csv", "tensorboard", "pictures", "config.yaml", "eval")
"""What a run leaves in its folder (``eval`` is written by evaluation programs)."""


class RunExistsError(FileExistsError):
    """A run folder already holds a run, and neither resuming nor overwriting was asked for."""


def check_run_folder(out_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run in ``out_dir`` when it holds one, unless told to resume or overwrite.

    Raises:
        RunExistsError: Naming the folder, what it holds, and the two ways on.
    """
    if resume or overwrite:
        return
    markers = ("checkpoints/last.pt", "checkpoints/best.pt", *RUN_OUTPUTS[1:])
    held = [name for name in markers if (Path(out_dir) / name).exists()]
    if held:
        raise RunExistsError(
            f"the output folder {str(out_dir)!r} already holds a run ({', '.join(held)}); "
            "continue it with --resume (resume=True), start it again with --overwrite "
            "(overwrite=True, which deletes those files), or choose another folder"
        )


@dataclass
class TrainSettings:
    """How the loop runs, whatever the method.

    Arguments:
        epochs: Training epochs.
        batch_size: Samples per step and process.
        seed: Seed of every random number generator (each process adds its rank) and of the
            data order.
        checkpoint_every: Write ``last.pt`` every this many steps (and at every epoch's end).
        log_every: Write the CSV and TensorBoard logs every this many steps.
        validate_every: Validate every this many epochs (and after the last).
        max_consecutive_nonfinite: Steps with a non-finite loss or gradient are skipped and
            counted; this many in a row raise `NonFiniteLossError`.
        mixed_precision: `StepContext.autocast` autocasts (bfloat16 on the CPU, float16 on
            CUDA, where updaters should scale gradients).
        num_workers: DataLoader worker processes.
        threads: torch's intra-op threads; ``None`` leaves torch's default.
        ema_decay: Keep a `WeightAverage` of the model's weights with this decay per step;
            ``None`` for none. Validation and ``best.pt`` then use it.
        ema_from_epoch: The epoch (from 0) whose first step starts the average.
    """

    epochs: int = 1
    batch_size: int = 8
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    validate_every: int = 1
    max_consecutive_nonfinite: int = 20
    mixed_precision: bool = False
    num_workers: int = 0
    threads: int | None = None
    ema_decay: float | None = None
    ema_from_epoch: int = 0


@dataclass
class StepContext:
    """What a step, or a validation, may need to know of the loop.

    Arguments:
        epoch: The current epoch (from 0).
        global_step: Steps done before this one.
        device: The model's device.
        group: The training processes.
        logged: Whether this step's values will be logged (so costly diagnostics can be
            computed only then).
        mixed_precision: Whether `autocast` autocasts.
    """

    epoch: int
    global_step: int
    device: torch.device
    group: ProcessGroup
    logged: bool = False
    mixed_precision: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward passes' mixed-precision context (none unless ``mixed_precision``)."""
        if not self.mixed_precision:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)


class StepOutput(NamedTuple):
    """A step's result: scalar values to log (averaged over processes by the loop), and
    whether every update was taken (``False`` counts a non-finite step)."""

    values: dict[str, Tensor]
    ok: bool = True


class TrainingMethod:
    """What `Trainer` trains: a model, its updaters, its step and, optionally, its validation.

    Subclass it and define `setup` and `training_step`; the other hooks have defaults. The
    model must be built before the `Trainer` (seed torch first for reproducible weights).

    Attributes:
        model: Everything whose weights are checkpointed, averaged and validated.
        best_metric: The validation metric (lower is better) that picks ``best.pt``; ``None``
            writes no ``best.pt``.
    """

    model: nn.Module
    best_metric: str | None = None

    def setup(self, device: torch.device, group: ProcessGroup) -> dict[str, Updater | None]:
        """Called once, after the model moved to ``device``: wrap what trains in
        ``group.wrap`` (DDP) and return the updaters, by name (checkpoints save them as
        ``<name>_optimizer``, ...)."""
        raise NotImplementedError

    def training_step(self, batch: Any, context: StepContext) -> StepOutput:
        """One step on a batch: compute the losses and take each updater's `Updater.step`."""
        raise NotImplementedError

    def start_epoch(self, epoch: int, train_set: Dataset) -> None:
        """Called before each epoch's batches are loaded (e.g. to change the points per cloud)."""

    def validate(self, dataset: Dataset, context: StepContext) -> dict[str, float]:
        """Validation metrics (rank 0 alone, with the averaged weights where kept)."""
        return {}

    def after_validation(self, dataset: Dataset, out_dir: Path, context: StepContext) -> None:
        """Called after each validation on rank 0, e.g. to draw pictures into ``out_dir``."""

    def describe(self, metrics: dict[str, float], context: StepContext) -> str:
        """The console line of a validation."""
        values = ", ".join(f"{k} {v:.5g}" for k, v in metrics.items())
        return f"epoch {context.epoch}: {values} (step {context.global_step})"

    def config(self) -> dict[str, Any]:
        """The method's settings: saved in every checkpoint and as ``config.yaml``."""
        return {}

    def check_resume(self, saved: dict[str, Any], path: str | Path) -> None:
        """Raise `pcflow.utils.CheckpointError` if a checkpoint's settings (``saved``) cannot
        be resumed with this method's."""

    def upgrade_weights(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """A checkpoint's model weights with the current names (for checkpoints written by
        earlier versions of the model); by default unchanged."""
        return weights


class Trainer:
    """Train a `TrainingMethod`, resumably, on one process or under ``torchrun``.

    Each step hands a batch to `TrainingMethod.training_step`; a step whose updates were not
    all taken (non-finite loss or gradient) is counted, and
    ``settings.max_consecutive_nonfinite`` in a row raise `NonFiniteLossError`. After each
    epoch the updaters' schedules advance and, every ``settings.validate_every`` epochs, rank
    0 validates (`TrainingMethod.validate`, with the averaged weights when
    ``settings.ema_decay`` is set) and keeps ``best.pt`` for the lowest
    ``method.best_metric``.

    Resuming is exact, even after ``kill -9`` mid-checkpoint: checkpoints are written
    atomically and hold the model, the weight average, the updaters, the random states of
    torch, numpy and Python of every rank, and the position in the epoch; the data order and
    every sample's randomness come from a seeded `ResumableSampler`.

    Under ``torchrun`` (an initialised ``torch.distributed`` process group) each rank reads
    its share of every epoch (``settings.batch_size`` is per process) and rank 0 alone
    validates and writes files.

    Outputs under ``out_dir``: ``config.yaml``, ``checkpoints/last.pt`` and ``best.pt``,
    ``log.csv``, ``tensorboard/`` (when tensorboard is installed), and what
    `TrainingMethod.after_validation` draws. A folder that already holds a run is refused
    unless ``resume`` or ``overwrite`` (`check_run_folder`).

    Arguments:
        method: What to train.
        out_dir: Output folder.
        train_set: Training dataset.
        val_set: Validation dataset, or ``None`` to skip validation.
        settings: How the loop runs.
        resume: Continue from ``out_dir/checkpoints/last.pt`` when it exists.
        overwrite: Delete a run found in ``out_dir`` (`RUN_OUTPUTS`) and start afresh.
        progress: Show tqdm progress bars (rank 0).
        device: Device; ``None`` picks CUDA (the local rank's GPU) when available, else CPU.

    Example:
        See the tutorial "Your own method from the parts".
    """

    def __init__(
        self,
        method: TrainingMethod,
        out_dir: str | Path,
        train_set: Dataset,
        val_set: Dataset | None = None,
        *,
        settings: TrainSettings | None = None,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        self.method, self.settings = method, settings or TrainSettings()
        self.out_dir, self.checkpoint_dir = Path(out_dir), Path(out_dir) / "checkpoints"
        check_run_folder(self.out_dir, resume=resume, overwrite=overwrite)
        self.overwrite = overwrite and not resume
        self.train_set, self.val_set, self.progress = train_set, val_set, progress
        self.group = ProcessGroup.current()
        self.device = self.group.device(device)
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        self.model = method.model.to(self.device)
        self.updaters = method.setup(self.device, self.group)
        if not self.updaters:
            raise ValueError("TrainingMethod.setup must return at least one updater")
        decay = self.settings.ema_decay
        self.average = WeightAverage(self.model, decay) if decay is not None else None
        self.checkpoints = RunCheckpoints(
            self.checkpoint_dir, self.model, self.updaters, self.group,
            config=method.config(), seed=self.settings.seed, check_resume=method.check_resume,
            upgrade=method.upgrade_weights, average=self.average,
        )  # fmt: skip
        resumed = self.checkpoints.resume_or_seed(resume)
        self.state = resumed or TrainState()
        self.resumed_at = None if resumed is None else resumed.global_step
        self.loader, self.sampler = make_loader(
            train_set, self.settings.batch_size, num_replicas=self.group.world_size,
            rank=self.group.rank, seed=self.settings.seed, num_workers=self.settings.num_workers,
        )  # fmt: skip
        if len(self.loader) == 0:
            raise ValueError(
                f"the training set ({len(train_set)} samples over {self.group.world_size} "
                f"processes) is smaller than one batch of {self.settings.batch_size}"
            )
        self._log_file: RunLog | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.group.is_main

    def context(self, *, logged: bool = False) -> StepContext:
        """Where the loop stands, for the method's hooks."""
        return StepContext(
            self.state.epoch, self.state.global_step, self.device, self.group, logged,
            self.settings.mixed_precision,
        )  # fmt: skip

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Any) -> dict[str, float]:
        """One training step on a batch; returns the logged values, averaged over ranks, and
        ``"skipped"`` (1.0 if an update was skipped)."""
        logged = (self.state.global_step + 1) % self.settings.log_every == 0
        output = self.method.training_step(batch, self.context(logged=logged))
        names = sorted(output.values)
        stacked = torch.stack([torch.as_tensor(output.values[k]).float().cpu() for k in names])
        values = self.group.mean(stacked) if names else stacked
        result = {k: float(v) for k, v in zip(names, values)}
        result["skipped"] = float(not output.ok)
        limit = self.settings.max_consecutive_nonfinite
        self.state.count_step(output.ok, limit, result)
        return result

    # ------------------------------------------------------------------ the loop
    def fit(self, max_steps: int | None = None) -> TrainState:
        """Train until the last epoch (or until ``global_step`` reaches ``max_steps``).

        Arguments:
            max_steps: Stop once this many steps are done in total, writing ``last.pt`` as if
                the run had been interrupted there (resume continues exactly).

        Returns:
            The final `TrainState`.
        """
        if not self._start(max_steps):
            return self.state
        with flushing_denormals(self.device):
            while self.state.epoch < self.settings.epochs:
                if not self._train_epoch(max_steps):
                    self.group.print(f"stopped at step {self.state.global_step} (max_steps)")
                    break
                self._end_epoch()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.state

    def _start(self, max_steps: int | None) -> bool:
        if self.is_main:
            if self.overwrite:
                self._clear()
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoints.remove_partial()
            text = yaml.safe_dump(self.method.config(), sort_keys=False)
            (self.out_dir / "config.yaml").write_text(text)
            self._log_file = RunLog(self.out_dir, self.state.global_step)
        self.group.barrier()
        if self.resumed_at is not None:
            self.group.print(
                f"resumed from {self.checkpoints.last} at step {self.resumed_at} "
                f"(epoch {self.state.epoch}, batch {self.state.step_in_epoch})"
            )
        if self.state.finished:
            self.group.print("this run already finished; nothing to do")
            return False
        if max_steps is not None and self.state.global_step >= max_steps:
            self.group.print(f"already at step {self.state.global_step} (max_steps {max_steps})")
            return False
        return True

    def _clear(self) -> None:
        removed = []
        for name in RUN_OUTPUTS:
            path = self.out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(name)
        self.overwrite = False
        if removed:
            self.group.print(f"overwrite: removed {', '.join(removed)} from {self.out_dir}")

    def _train_epoch(self, max_steps: int | None) -> bool:
        """Train on the rest of the current epoch; ``False`` if stopped at ``max_steps``."""
        settings, state = self.settings, self.state
        self.method.start_epoch(state.epoch, self.train_set)  # before the workers copy the set
        self.sampler.set_epoch(state.epoch)
        self.sampler.set_start(state.step_in_epoch * settings.batch_size)
        total = len(self.loader) + state.step_in_epoch
        bar = tqdm(
            total=total, initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{settings.epochs}",
            disable=not (self.progress and self.is_main), dynamic_ncols=True, leave=False,
        )  # fmt: skip
        started = time.perf_counter()
        with bar:
            for batch in self.loader:
                values = self.train_step(batch)
                if self.average is not None and state.epoch >= settings.ema_from_epoch:
                    self.average.update()
                state.global_step += 1
                state.step_in_epoch += 1
                bar.update(1)
                bar.set_postfix(_postfix(values), refresh=False)
                if state.global_step % settings.log_every == 0:
                    self.log(values, time.perf_counter() - started)
                stop = max_steps is not None and state.global_step >= max_steps
                periodic = state.global_step % settings.checkpoint_every == 0
                # The epoch's last batch is followed by the end-of-epoch checkpoint anyway.
                if stop or (periodic and state.step_in_epoch < total):
                    self.save(self.checkpoints.last)
                if stop:
                    return False
        return True

    def _end_epoch(self) -> None:
        settings, state = self.settings, self.state
        state.epoch += 1
        state.step_in_epoch = 0
        for updater in self.updaters.values():
            if updater is not None:
                updater.end_epoch()
        last_epoch = state.epoch == settings.epochs
        due = state.epoch % settings.validate_every == 0 or last_epoch
        improved = False
        if self.val_set is not None and due:  # swap in the average only when validating
            with self.average.applied() if self.average is not None else contextlib.nullcontext():
                improved = self._validate()
        state.finished = last_epoch
        self.save(self.checkpoints.last)
        if improved and self.is_main:
            self.checkpoints.save_best(state)

    def _validate(self) -> bool:
        improved = False
        if self.is_main:
            assert self.val_set is not None
            context = self.context()
            metrics = self.method.validate(self.val_set, context)
            self.group.print(self.method.describe(metrics, context))
            self.log(metrics)
            key = self.method.best_metric
            if key is not None and metrics.get(key, math.inf) < self.state.best_metric:
                self.state.best_metric, self.state.best_epoch = metrics[key], self.state.epoch
                improved = True
            self.method.after_validation(self.val_set, self.out_dir, context)
        self.group.barrier()
        return improved

    def log(self, values: dict[str, float], seconds: float | None = None) -> None:
        """Write ``values`` to ``log.csv`` and TensorBoard at the current step (rank 0)."""
        if self._log_file is not None:
            updater = next(u for u in self.updaters.values() if u is not None)
            self._log_file.write(
                self.state.global_step, self.state.epoch, values, seconds=seconds, lr=updater.lr
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs (see the class docstring)."""
        return self.checkpoints.state_dict(self.state, rng_states)

    def save(self, path: str | Path, *, gather: bool = True) -> None:
        """Write a checkpoint atomically (rank 0); with ``gather``, all ranks must call it."""
        self.checkpoints.save(path, self.state, gather=gather)


def _postfix(values: dict[str, float]) -> dict[str, str]:
    keys = ("total_loss", "loss", "nll_per_point", "chamfer", "critic_loss", "adversarial_loss")
    return {k.replace("_loss", ""): f"{values[k]:.4g}" for k in keys if k in values}


def flush_denormal_is_on() -> bool:
    """Whether this thread flushes subnormal floats to zero (`torch.set_flush_denormal`)."""
    return bool(torch.full((1,), 1e-39).mul(2.0)[0] == 0)


@contextlib.contextmanager
def flushing_denormals(device: torch.device) -> Iterator[None]:
    """On a CPU ``device``, flush subnormal floats (below 1.2e-38) to zero for the block, then
    restore the setting found.

    As training goes on, subnormal values appear in the optimiser's state and the activations,
    and x86 CPUs take a slow path for each: measured on FlowGAN's quick preset, a trained
    state's step took 174 ms against 141 ms from a fresh one (one thread), and 145 ms with
    flushing. Flushing only changes values that small.
    """
    if device.type != "cpu":
        yield
        return
    before = flush_denormal_is_on()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
