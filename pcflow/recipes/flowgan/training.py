"""FlowGAN's training loop: the generator's and the critic's steps, epochs, validation, resume."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pcflow.recipes.flowgan.checkpoints import RunCheckpoints
from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.data import make_loader
from pcflow.recipes.flowgan.distributed import ProcessGroup
from pcflow.recipes.flowgan.logs import RunLog
from pcflow.recipes.flowgan.model import build_model
from pcflow.recipes.flowgan.objective import (
    adversarial_gradient_share,
    critic_objective,
    generator_objective,
)
from pcflow.recipes.flowgan.optimisation import Updater, WeightAverage
from pcflow.recipes.flowgan.state import NonFiniteLossError, TrainState
from pcflow.recipes.flowgan.validation import RunValidation, validate, validation_subset

__all__ = ["NonFiniteLossError", "Trainer"]


class Trainer:
    """Train a `FlowGAN` (or the PSGN-style baseline) as ``config`` says, resumably.

    One step (`train_step`): the generator's forward (likelihood terms, and once the critic is
    on, clouds sampled from the image-conditioned latent); the critic's update on (image, true
    cloud) as real against (image, generated cloud, detached) as fake; then the generator's
    update on `generator_objective`, whose adversarial gradient runs back through the critic
    and the flow's sampling path. Each optimiser's gradient norm is clipped; a step whose loss
    or gradient is not finite is skipped and counted (`NonFiniteLossError` after
    ``train.max_consecutive_nonfinite`` in a row).

    Resuming is exact: checkpoints hold the model, the average of its weights (with
    ``optim.ema_decay``), optimisers, schedulers, gradient scalers, the RNG states of torch,
    numpy and Python (of every rank), and the position in the epoch; the data order comes from
    a seeded `pcflow.recipes.flowgan.data.ResumableSampler`. With ``optim.ema_decay`` the
    average is updated after every step from ``optim.ema_from_epoch`` on, and validation (so
    ``best.pt``'s choice and the pictures) uses it; training goes on from the model's own
    weights.

    Under ``torchrun`` (an initialised ``torch.distributed`` process group) the generator and
    the critic are wrapped in ``DistributedDataParallel``, each rank reads its share of every
    epoch, and rank 0 alone validates and writes files. ``train.batch_size`` is per process.

    Outputs under ``out_dir``: ``config.yaml``, ``checkpoints/last.pt`` (every
    ``train.checkpoint_every`` steps, at each epoch's end and at the end) and ``best.pt``
    (lowest validation Chamfer distance), ``log.csv``, ``tensorboard/``, and
    ``pictures/epoch_XXX.png`` (predicted clouds under their images, next to the truth).

    Arguments:
        config: The run's configuration.
        out_dir: Output folder.
        train_set: Training dataset of FlowGAN samples.
        val_set: Validation dataset, or ``None`` to skip validation.
        resume: Continue from ``out_dir/checkpoints/last.pt`` when it exists.
        progress: Show tqdm progress bars (rank 0).
        device: Device; ``None`` picks CUDA (the local rank's GPU) when available, else CPU.
    """

    def __init__(
        self,
        config: FlowGANConfig,
        out_dir: str | Path,
        train_set: Dataset,
        val_set: Dataset | None = None,
        *,
        resume: bool = False,
        progress: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        self.config = config.validate()  # also a config built or edited in code
        self.out_dir, self.checkpoint_dir = Path(out_dir), Path(out_dir) / "checkpoints"
        self.train_set, self.val_set, self.progress = train_set, val_set, progress
        self.group = ProcessGroup.current()
        self.distributed, self.rank = self.group.distributed, self.group.rank
        self.world_size, self.device = self.group.world_size, self.group.device(device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.train.seed)  # the same initial weights on every rank
        self.model = build_model(config).to(self.device)
        self.critic_on = self.model.critic is not None
        self.generator_update, self.critic_update = Updater.for_model(
            self.model, config, self.device, self.group
        )
        self.generator_optimizer = self.generator_update.optimizer
        self.critic_optimizer = self.critic_update.optimizer if self.critic_update else None
        self.generator = self.group.wrap(self.model.generator, self.device)
        self.critic = self.group.wrap(self.model.critic, self.device) if self.critic_on else None
        decay = config.optim.ema_decay
        self.average = WeightAverage(self.model, decay) if decay is not None else None
        self.checkpoints = RunCheckpoints(
            self.checkpoint_dir, self.config, self.model,
            {"generator": self.generator_update, "critic": self.critic_update}, self.group,
            average=self.average,
        )  # fmt: skip
        resumed = self.checkpoints.resume_or_seed(resume)
        self.state = resumed or TrainState()
        self.resumed_at = None if resumed is None else resumed.global_step
        self.loader, self.sampler = make_loader(
            train_set, config.train.batch_size, num_replicas=self.world_size, rank=self.rank,
            seed=config.train.seed, num_workers=config.data.num_workers,
        )  # fmt: skip
        if len(self.loader) == 0:
            raise ValueError(
                f"the training set ({len(train_set)} samples over {self.world_size} processes) "
                f"is smaller than one batch of {config.train.batch_size}"
            )
        if config.data.late_num_points is not None and not hasattr(train_set, "num_points"):
            raise ValueError(
                "data.late_num_points needs a training set with a num_points attribute; got "
                f"{type(train_set).__name__}"
            )
        self._log_file: RunLog | None = None
        self.validation = None
        if val_set is not None:
            self.validation = RunValidation(
                self.model, val_set, self.config, self.device, self.out_dir, self.group
            )

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.group.is_main

    def critic_active(self) -> bool:
        """Whether the critic trains (and the adversarial term applies) in the current epoch."""
        return self.critic_on and self.state.epoch >= self.config.train.critic_warmup_epochs

    def chamfer_active(self) -> bool:
        """Whether the Chamfer term (``loss.chamfer_weight``) applies in the current epoch."""
        return (
            self.config.loss.chamfer_weight > 0
            and self.state.epoch >= self.config.train.chamfer_warmup_epochs
        )

    def points_scale(self, num_points: int) -> float:
        """The factor on the loss's sums over a batch's ``num_points`` target points: 1, or
        ``data.num_points / num_points`` when ``data.late_num_points`` is set, so that denser
        clouds weigh each point as the rest of the run does (the latent terms do not grow with
        the points; without it, 1,024-point clouds halved their weight and cost one seed of the
        ``standard`` preset 9% of its validation CD)."""
        if self.config.data.late_num_points is None:
            return 1.0
        return self.config.data.num_points / num_points

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.config.train.mixed_precision:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One training step on a batch of samples; returns the logged values.

        Arguments:
            batch: A collated batch: ``"image"`` ``(B, 3, H, W)``, ``"points"`` and
                ``"points_target"`` ``(B, N, 3)`` at unit scale.

        Returns:
            Scalars averaged over ranks: the generator's terms (per shape), ``"critic_loss"``
            and ``"adversarial_loss"`` when the critic is on, the gradient norms, and
            ``"skipped"`` (1.0 if the generator's update was skipped).
        """
        scale, weights = self.config.model.cloud_scale, self.config.loss
        images = self.model.prepare_images(batch["image"].to(self.device))
        points = batch["points"].to(self.device) / scale
        target = batch["points_target"].to(self.device) / scale
        adversarial = self.critic_active()
        self.model.train()
        self.generator_update.zero_grad()
        with self._autocast():
            terms = self.generator(
                images, points, target, target.shape[1] if adversarial else 0,
                chamfer=self.chamfer_active(), points_scale=self.points_scale(target.shape[1]),
            )  # fmt: skip
        logged = {k: v.detach().float().mean() for k, v in terms.items() if k != "fake"}
        logged["nll_per_point"] = logged.get("nll_points", torch.zeros(())) / target.shape[1]
        critic_ok = True
        if adversarial:
            if not self.group.all_finite(terms["fake"]):
                # A sampled cloud blew up: nothing sensible to show the critic; skip the step.
                self.generator_update.zero_grad()
                return self._finish_step({**logged, "total_loss": torch.tensor(math.nan)}, False)
            critic_ok, logged["critic_grad_norm"], logged["critic_loss"] = self._critic_step(
                images, target, terms["fake"]
            )
        critic = self.model.critic if adversarial else None
        loss, adversarial_loss = generator_objective(
            terms, images, critic, weights, autocast=self._autocast
        )
        if adversarial_loss is not None:
            logged["adversarial_loss"] = adversarial_loss.detach()
            logged_step = (self.state.global_step + 1) % self.config.train.log_every == 0
            if logged_step and not self.group.distributed:  # DDP's hooks want one backward
                flow, likelihood = self.model.generator.flow, terms["loss"].float().mean()
                weighted = weights.adversarial_weight * adversarial_loss
                logged.update(adversarial_gradient_share(flow, likelihood, weighted))
        logged["total_loss"] = loss.detach()
        generator_ok, logged["grad_norm"] = self.generator_update.step(loss)
        return self._finish_step(logged, generator_ok and critic_ok)

    def _critic_step(
        self, images: Tensor, real: Tensor, fake: Tensor
    ) -> tuple[bool, Tensor, Tensor]:
        assert self.critic_update is not None and self.model.critic is not None
        self.critic_update.zero_grad()
        loss = critic_objective(
            self.model.critic, images, real, fake, self.config.loss, scores=self.critic,
            autocast=self._autocast,
        )  # fmt: skip
        ok, norm = self.critic_update.step(loss)
        return ok, norm, loss.detach()

    def _finish_step(self, logged: dict[str, Tensor], ok: bool) -> dict[str, float]:
        names = sorted(logged)
        values = self.group.mean(torch.stack([logged[k].float().cpu() for k in names]))
        result = {k: float(v) for k, v in zip(names, values)}
        result["skipped"] = float(not ok)
        self.state.count_step(ok, self.config.train.max_consecutive_nonfinite, result)
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
            while self.state.epoch < self.config.train.epochs:
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
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoints.remove_partial()
            self.config.to_yaml(self.out_dir / "config.yaml")
            self._log_file = RunLog(self.out_dir, self.state.global_step)
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

    def _train_epoch(self, max_steps: int | None) -> bool:
        """Train on the rest of the current epoch; ``False`` if stopped at ``max_steps``."""
        config, state = self.config.train, self.state
        if self.config.data.late_num_points is not None:  # before the workers copy the set
            self.train_set.num_points = self.config.data.num_points_at(state.epoch)
        self.sampler.set_epoch(state.epoch)
        self.sampler.set_start(state.step_in_epoch * config.batch_size)
        total = len(self.loader) + state.step_in_epoch
        bar = tqdm(
            total=total, initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{config.epochs}",
            disable=not (self.progress and self.is_main), dynamic_ncols=True, leave=False,
        )  # fmt: skip
        started = time.perf_counter()
        with bar:
            for batch in self.loader:
                values = self.train_step(batch)
                if self.average is not None and state.epoch >= self.config.optim.ema_from_epoch:
                    self.average.update()
                state.global_step += 1
                state.step_in_epoch += 1
                bar.update(1)
                bar.set_postfix(_postfix(values), refresh=False)
                if state.global_step % config.log_every == 0:
                    self._log(values, time.perf_counter() - started)
                stop = max_steps is not None and state.global_step >= max_steps
                periodic = state.global_step % config.checkpoint_every == 0
                # The epoch's last batch is followed by the end-of-epoch checkpoint anyway.
                if stop or (periodic and state.step_in_epoch < total):
                    self.save(self.checkpoints.last)
                if stop:
                    return False
        return True

    def _end_epoch(self) -> None:
        config, state = self.config.train, self.state
        state.epoch += 1
        state.step_in_epoch = 0
        for updater in (self.generator_update, self.critic_update):
            if updater is not None:
                updater.end_epoch()
        last_epoch = state.epoch == config.epochs
        due = state.epoch % config.validate_every == 0 or last_epoch
        improved = False
        if self.validation is not None and due:  # swap in the average only when validating
            with self.average.applied() if self.average is not None else contextlib.nullcontext():
                improved = self.validation(state, self._log)
        state.finished = last_epoch
        self.save(self.checkpoints.last)
        if improved and self.is_main:
            self.checkpoints.save_best(state)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """The metrics of `pcflow.recipes.flowgan.validation.validate` on ``train.val_batches``
        batches of the validation set spread over the categories."""
        assert self.val_set is not None
        return validate(self.model, self.val_set, self.config, self.device)

    def _validation_subset(self) -> Dataset:
        assert self.val_set is not None
        return validation_subset(self.val_set, self.config)

    def picture(self, path: str | Path) -> Path | None:
        """Draw validation images | predicted clouds | true clouds, seen from the images'
        viewpoints (`draw_reconstructions`); ``None`` when no predicted cloud is finite."""
        assert self.validation is not None
        return self.validation.picture(path, self.state.global_step)

    def _log(self, values: dict[str, float], seconds: float | None = None) -> None:
        if self._log_file is not None:
            self._log_file.write(
                self.state.global_step, self.state.epoch, values, seconds=seconds,
                lr=self.generator_update.lr,
            )  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs (see the class docstring)."""
        return self.checkpoints.state_dict(self.state, rng_states)

    def save(self, path: str | Path, *, gather: bool = True) -> None:
        """Write a checkpoint atomically (rank 0); with ``gather``, all ranks must call it."""
        self.checkpoints.save(path, self.state, gather=gather)


def _postfix(values: dict[str, float]) -> dict[str, str]:
    keys = ("total_loss", "nll_per_point", "chamfer", "critic_loss", "adversarial_loss")
    return {k.replace("_loss", ""): f"{values[k]:.4g}" for k in keys if k in values}


def flush_denormal_is_on() -> bool:
    """Whether this thread flushes subnormal floats to zero (`torch.set_flush_denormal`)."""
    return bool(torch.full((1,), 1e-39).mul(2.0)[0] == 0)


@contextlib.contextmanager
def flushing_denormals(device: torch.device) -> Iterator[None]:
    """On the CPU, flush subnormal floats (below 1.2e-38) to zero for the block, then restore
    the setting found.

    As training goes on, subnormal values appear in the optimiser's state and the activations,
    and x86 CPUs take a slow path for each: measured on the quick preset, a trained state's
    step took 174 ms against 141 ms from a fresh one (one thread), and 145 ms with flushing.
    Flushing only changes values that small.
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
