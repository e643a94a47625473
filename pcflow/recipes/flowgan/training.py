"""FlowGAN's training loop: generator and critic phases, exact resume, DDP, logs and pictures."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import random
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.data import make_loader
from pcflow.recipes.flowgan.evaluation import _sample_categories, select_per_category
from pcflow.recipes.flowgan.model import FlowGAN, PSGNBaseline, build_model
from pcflow.utils import (
    CheckpointError,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "Trainer",
    "capture_rng_state",
    "load_model",
    "restore_rng_state",
]


_BEST_KEYS = ("config", "model", "trainer", "world_size")


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
        best_metric: Best validation Chamfer distance so far (``inf`` before any).
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


# ------------------------------------------------------------------------------ RNG states
def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states, as checkpoint-safe values."""
    _, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global RNG is saved and restored)
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the global RNG is saved and restored)
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ checkpoints
def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> FlowGAN | PSGNBaseline:
    """Rebuild a trained model from a checkpoint written by `Trainer` (in evaluation mode).

    Raises:
        CheckpointError: If the file is missing, corrupt, not a FlowGAN checkpoint, or its
            weights do not fit the configuration it holds.
    """
    state = load_checkpoint(path, map_location, required_keys=("config", "model"))
    try:
        config = FlowGANConfig.from_dict(state["config"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds an incompatible config: {error}"
        ) from error
    model = build_model(config)
    _load_weights(model, state["model"], path)
    return model.eval()


def _load_weights(model: nn.Module, weights: dict[str, Tensor], path: str | Path) -> None:
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


# ------------------------------------------------------------------------------ the trainer
class Trainer:
    """Train a `FlowGAN` (or the PSGN-style baseline) as ``config`` says, resumably.

    One step: the generator's forward (likelihood terms, and once the critic is on, clouds
    sampled from the image-conditioned latent); the critic's update on (image, true cloud)
    as real against (image, generated cloud, detached) as fake; then the generator's update on
    its loss plus ``loss.adversarial_weight`` times the GAN generator loss, whose gradient runs
    back through the critic and the flow's sampling path. Each optimiser's gradient norm is
    clipped; a step whose loss or gradient is not finite is skipped and counted
    (`NonFiniteLossError` after ``train.max_consecutive_nonfinite`` in a row).

    Resuming is exact: checkpoints hold the model, optimisers, schedulers, gradient scalers, the
    RNG states of torch, numpy and Python (of every rank), and the position in the epoch;
    the data order comes from a seeded `pcflow.recipes.flowgan.data.ResumableSampler`.

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
        self.out_dir = Path(out_dir)
        self.train_set = train_set
        self.val_set = val_set
        self.progress = progress
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        if device is None:
            if torch.cuda.is_available():
                device = torch.device("cuda", self.rank % torch.cuda.device_count())
            else:
                device = torch.device("cpu")
        self.device = torch.device(device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)

        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(config.train.seed)
        self.model = build_model(config).to(self.device)
        self.critic_on = self.model.critic is not None
        optim = config.optim

        def adam(parameters: Iterator[nn.Parameter], lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(
                parameters,
                lr=lr,
                betas=tuple(optim.betas),
                amsgrad=optim.amsgrad,
                weight_decay=optim.weight_decay,
            )

        def schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
            return torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=list(optim.lr_milestones), gamma=optim.lr_gamma
            )

        self.generator_optimizer = adam(self.model.generator.parameters(), optim.lr)
        self.generator_scheduler = schedule(self.generator_optimizer)
        self.critic_optimizer = self.critic_scheduler = None
        if self.critic_on:
            self.critic_optimizer = adam(
                self.model.critic.parameters(), optim.critic_lr or optim.lr
            )
            self.critic_scheduler = schedule(self.critic_optimizer)
        use_scaler = config.train.mixed_precision and self.device.type == "cuda"
        self.generator_scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.critic_scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

        self.generator = self.model.generator
        self.critic = self.model.critic
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator = DistributedDataParallel(self.model.generator, device_ids=ids)
            if self.critic_on:
                self.critic = DistributedDataParallel(self.model.critic, device_ids=ids)

        self.state = TrainState()
        self.checkpoint_dir = self.out_dir / "checkpoints"
        resumed = False
        if resume and (self.checkpoint_dir / "last.pt").exists():
            self._load(self.checkpoint_dir / "last.pt")
            resumed = True
        elif resume:
            self._print(f"no checkpoint in {self.checkpoint_dir}: starting from scratch")
        if not resumed:
            seed = config.train.seed + self.rank
            random.seed(seed)
            np.random.seed(seed)  # noqa: NPY002 (the global RNG is saved and restored)
            torch.manual_seed(seed)
        self.resumed_at = self.state.global_step if resumed else None

        self.loader, self.sampler = make_loader(
            train_set,
            config.train.batch_size,
            num_replicas=self.world_size,
            rank=self.rank,
            seed=config.train.seed,
            num_workers=config.data.num_workers,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"the training set ({len(train_set)} samples over {self.world_size} processes) "
                f"is smaller than one batch of {config.train.batch_size}"
            )
        self._writer = None
        self._csv_fields: list[str] | None = None

    # -------------------------------------------------------------- helpers
    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def _print(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.config.train.mixed_precision:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _mean_over_ranks(self, values: Tensor) -> Tensor:
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def critic_active(self) -> bool:
        """Whether the critic trains (and the adversarial term applies) in the current epoch."""
        return self.critic_on and self.state.epoch >= self.config.train.critic_warmup_epochs

    # -------------------------------------------------------------- one step
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
        config = self.config
        scale = config.model.cloud_scale
        images = self.model.prepare_images(batch["image"].to(self.device))
        points = batch["points"].to(self.device) / scale
        target = batch["points_target"].to(self.device) / scale
        adversarial = self.critic_active()
        self.model.train()
        self.generator_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            terms = self.generator(images, points, target, target.shape[1] if adversarial else 0)
        generator_loss = terms["loss"].float().mean()
        logged = {k: v.detach().float().mean() for k, v in terms.items() if k != "fake"}
        logged["nll_per_point"] = logged.get("nll_points", torch.zeros(())) / target.shape[1]
        critic_norm = torch.zeros(())
        critic_ok = True
        if adversarial and not self._all_finite(terms["fake"]):
            # A sampled cloud blew up: nothing sensible to show the critic; skip the step.
            self.generator_optimizer.zero_grad(set_to_none=True)
            logged["total_loss"] = torch.tensor(float("nan"))
            return self._finish_step(logged, False)
        if adversarial:
            fake = terms["fake"]
            critic_ok, critic_norm, critic_loss_value = self._critic_step(images, target, fake)
            logged["critic_loss"] = critic_loss_value
            with self._frozen_critic(), self._autocast():
                fake_logits = self.model.critic(fake, images).float()
            from pcflow.critics import generator_loss as gan_generator_loss

            adversarial_loss = gan_generator_loss(fake_logits, kind=config.loss.gan_kind)
            logged["adversarial_loss"] = adversarial_loss.detach()
            weighted = config.loss.adversarial_weight * adversarial_loss
            if (self.state.global_step + 1) % config.train.log_every == 0:
                logged.update(self._gradient_share(generator_loss, weighted))
            generator_loss = generator_loss + weighted
        logged["total_loss"] = generator_loss.detach()
        self.generator_scaler.scale(generator_loss).backward()
        generator_ok, generator_norm = self._clip_and_step(
            self.model.generator, self.generator_optimizer, self.generator_scaler, generator_loss
        )
        logged["grad_norm"] = generator_norm
        if adversarial:
            logged["critic_grad_norm"] = critic_norm
        return self._finish_step(logged, generator_ok and critic_ok)

    def _gradient_share(self, likelihood: Tensor, adversarial: Tensor) -> dict[str, Tensor]:
        """How much of the flow's gradient the adversarial term makes, on logged steps.

        The gradients of the likelihood terms and of the weighted adversarial term with respect
        to the flow's parameters, taken separately (the graph is kept for the step's own
        backward pass): their norms and ``adversarial_grad_share`` =
        ``|g_adv| / (|g_adv| + |g_likelihood|)``, 0 when the critic does not move the flow, 0.5
        when both pull as hard. Skipped under DDP (its gradient hooks expect one backward pass).
        """
        if self.distributed:
            return {}
        parameters = [p for p in self.model.generator.flow.parameters() if p.requires_grad]

        def norm(loss: Tensor) -> Tensor:
            grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
            squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
            return torch.stack(squares).sum().sqrt() if squares else torch.zeros(())

        likelihood_norm, adversarial_norm = norm(likelihood), norm(adversarial)
        share = adversarial_norm / (adversarial_norm + likelihood_norm).clamp_min(1e-30)
        return {
            "flow_grad_norm_likelihood": likelihood_norm,
            "flow_grad_norm_adversarial": adversarial_norm,
            "adversarial_grad_share": share,
        }

    def _all_finite(self, tensor: Tensor) -> bool:
        flag = torch.isfinite(tensor.detach()).all().float().cpu().reshape(1)
        return bool(self._mean_over_ranks(flag) == 1)

    def _finish_step(self, logged: dict[str, Tensor], ok: bool) -> dict[str, float]:
        config = self.config
        names = sorted(logged)
        values = self._mean_over_ranks(torch.stack([logged[k].float().cpu() for k in names]))
        result = {k: float(v) for k, v in zip(names, values)}
        skipped = not ok
        result["skipped"] = float(skipped)
        if skipped:
            self.state.skipped_steps += 1
            self.state.consecutive_nonfinite += 1
            limit = config.train.max_consecutive_nonfinite
            if self.state.consecutive_nonfinite >= limit:
                raise NonFiniteLossError(
                    f"{self.state.consecutive_nonfinite} consecutive steps had a non-finite loss "
                    f"or gradient (step {self.state.global_step}, last values {result}); lower "
                    "optim.lr, set optim.grad_clip_norm, or turn off train.mixed_precision"
                )
        else:
            self.state.consecutive_nonfinite = 0
        return result

    def _critic_step(
        self, images: Tensor, real: Tensor, fake: Tensor
    ) -> tuple[bool, Tensor, Tensor]:
        from pcflow.critics import critic_loss, gradient_penalty, r1_penalty

        config = self.config.loss
        assert self.critic_optimizer is not None
        self.critic_optimizer.zero_grad(set_to_none=True)
        # One critic call on real and fake together: DDP wants one forward per backward.
        with self._autocast():
            logits = self.critic(torch.cat([real, fake.detach()]), torch.cat([images, images]))
        real_logits, fake_logits = logits.float().chunk(2)
        loss = critic_loss(real_logits, fake_logits, kind=config.gan_kind)
        if config.gradient_penalty_weight > 0:
            penalty = gradient_penalty(self.model.critic, real, fake.detach(), images)
            loss = loss + config.gradient_penalty_weight * penalty
        if config.r1_weight > 0:
            loss = loss + config.r1_weight * r1_penalty(self.model.critic, real, images)
        self.critic_scaler.scale(loss).backward()
        ok, norm = self._clip_and_step(
            self.model.critic, self.critic_optimizer, self.critic_scaler, loss
        )
        return ok, norm, loss.detach()

    def _clip_and_step(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        loss: Tensor,
    ) -> tuple[bool, Tensor]:
        scaler.unscale_(optimizer)
        parameters = [p for p in module.parameters() if p.grad is not None]
        limit = self.config.optim.grad_clip_norm
        norm = torch.nn.utils.clip_grad_norm_(parameters, limit if limit else math.inf)
        # Gradients are already averaged over ranks, so every rank takes the same decision.
        loss_ok = bool(torch.isfinite(self._mean_over_ranks(loss.detach().float().reshape(1))))
        ok = loss_ok and bool(torch.isfinite(norm))
        # An enabled gradient scaler skips steps with non-finite gradients by itself.
        if ok or (scaler.is_enabled() and loss_ok):
            scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return ok, norm.detach().float().cpu()

    @contextlib.contextmanager
    def _frozen_critic(self) -> Iterator[None]:
        """The critic as a fixed function: no parameter gradients, running statistics kept.

        Batch statistics are still used (training mode), but BatchNorm's momentum is set to 0 so
        its running averages do not move; they must not be restored in place afterwards, since
        autograd saved them for the backward pass.
        """
        critic = self.model.critic
        assert critic is not None
        norms = [m for m in critic.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        counts = [
            None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for m in norms
        ]
        flags = [p.requires_grad for p in critic.parameters()]
        for module in norms:
            module.momentum = 0.0
        for parameter in critic.parameters():
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter, flag in zip(critic.parameters(), flags):
                parameter.requires_grad_(flag)
            for module, momentum, count in zip(norms, momenta, counts):
                module.momentum = momentum
                if count is not None:
                    module.num_batches_tracked.copy_(count)

    # -------------------------------------------------------------- the loop
    def fit(self, max_steps: int | None = None) -> TrainState:
        """Train until the last epoch (or until ``global_step`` reaches ``max_steps``).

        Arguments:
            max_steps: Stop once this many steps are done in total, writing ``last.pt`` as if
                the run had been interrupted there (resume continues exactly).

        Returns:
            The final `TrainState`.
        """
        config = self.config.train
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("last.pt", "best.pt"):
                for stale in remove_partial_checkpoints(self.checkpoint_dir / name):
                    self._print(f"removed {stale}, left by an interrupted checkpoint write")
            self.config.to_yaml(self.out_dir / "config.yaml")
            self._open_logs()
        if self.resumed_at is not None:
            self._print(
                f"resumed from {self.checkpoint_dir / 'last.pt'} at step {self.resumed_at} "
                f"(epoch {self.state.epoch}, batch {self.state.step_in_epoch})"
            )
        if self.state.finished:
            self._print("this run already finished; nothing to do")
            return self.state
        if max_steps is not None and self.state.global_step >= max_steps:
            self._print(f"already at step {self.state.global_step} (max_steps {max_steps})")
            return self.state
        from tqdm.auto import tqdm

        while self.state.epoch < config.epochs:
            epoch = self.state.epoch
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(self.state.step_in_epoch * config.batch_size)
            total = len(self.loader) + self.state.step_in_epoch
            bar = tqdm(
                total=total,
                initial=self.state.step_in_epoch,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=not (self.progress and self.is_main),
                dynamic_ncols=True,
                leave=False,
            )
            started = time.perf_counter()
            for batch in self.loader:
                values = self.train_step(batch)
                self.state.global_step += 1
                self.state.step_in_epoch += 1
                bar.update(1)
                bar.set_postfix(self._postfix(values), refresh=False)
                if self.state.global_step % config.log_every == 0:
                    self._log(values, time.perf_counter() - started)
                stop = max_steps is not None and self.state.global_step >= max_steps
                periodic = self.state.global_step % config.checkpoint_every == 0
                # The epoch's last batch is followed by the end-of-epoch checkpoint anyway.
                if stop or (periodic and self.state.step_in_epoch < total):
                    self.save(self.checkpoint_dir / "last.pt")
                if stop:
                    bar.close()
                    self._print(f"stopped at step {self.state.global_step} (max_steps)")
                    self._close_logs()
                    return self.state
            bar.close()
            self.state.epoch += 1
            self.state.step_in_epoch = 0
            self.generator_scheduler.step()
            if self.critic_scheduler is not None:
                with warnings.catch_warnings():
                    # During the critic's warm-up its optimiser has not stepped yet.
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                    self.critic_scheduler.step()
            improved = False
            last_epoch = self.state.epoch == config.epochs
            if self.val_set is not None and (
                self.state.epoch % config.validate_every == 0 or last_epoch
            ):
                improved = self._validate_and_picture()
            self.state.finished = last_epoch
            self.save(self.checkpoint_dir / "last.pt")
            if improved and self.is_main:
                # The weights alone (what evaluation needs), not the optimisers' state.
                best = {k: v for k, v in self.state_dict([]).items() if k in _BEST_KEYS}
                save_checkpoint(self.checkpoint_dir / "best.pt", best)
        self._close_logs()
        return self.state

    @staticmethod
    def _postfix(values: dict[str, float]) -> dict[str, str]:
        keys = ("total_loss", "nll_per_point", "chamfer", "critic_loss", "adversarial_loss")
        return {k.replace("_loss", ""): f"{values[k]:.4g}" for k in keys if k in values}

    # -------------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        """Chamfer distance (squared, unit scale) and F-score of predictions on the validation
        set (``train.val_batches`` batches spread over the categories), with a fixed seed that
        leaves the RNGs untouched.

        For FlowGAN it also reports the autoencoding bound (``val_bound_chamfer``,
        ``val_bound_fscore``: the flow decoding the posterior mean of the true cloud, see
        `FlowGAN.autoencode`) and ``val_latent_distance``, the mean distance between the image
        Gaussian's mean and that posterior mean. Samples use ``eval.temperature``."""
        from pcflow.losses import chamfer_distance
        from pcflow.metrics import f_score

        assert self.val_set is not None
        loader, _ = make_loader(
            self._validation_subset(), self.config.train.batch_size,
            seed=self.config.train.seed, shuffle=False, drop_last=False,
        )  # fmt: skip
        chamfers, fscores = [], []
        bound_chamfers, bound_fscores, distances = [], [], []
        diagnose = hasattr(self.model, "autoencode")
        temperature = self.config.eval.temperature
        threshold = self.config.eval.fscore_threshold
        nonfinite = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            for batch in loader:
                truth = batch["points"].to(self.device)
                images = batch["image"].to(self.device)
                pred = self.model.reconstruct(images, truth.shape[1], temperature=temperature)
                if diagnose:
                    bound = self.model.autoencode(truth, truth.shape[1], temperature=temperature)
                    with self.model._evaluating():  # BatchNorm's running statistics
                        z_image = self.model.image_distribution(images).mean
                    z_posterior = self.model.posterior_mean(truth)
                    distances.append((z_image - z_posterior).norm(dim=1).cpu())
                    kept = torch.isfinite(bound).flatten(1).all(1)
                    if bool(kept.any()):
                        bound_chamfers.append(
                            chamfer_distance(bound[kept], truth[kept], batch_reduction=None)[
                                0
                            ].cpu()
                        )
                        bound_fscores.append(
                            f_score(bound[kept], truth[kept], threshold=threshold).f_score.cpu()
                        )
                finite = torch.isfinite(pred).flatten(1).all(1)
                nonfinite += int((~finite).sum())
                if not bool(finite.any()):
                    continue
                pred, truth = pred[finite], truth[finite]
                chamfer, _ = chamfer_distance(pred, truth, batch_reduction=None)
                chamfers.append(chamfer.cpu())
                fscores.append(f_score(pred, truth, threshold=threshold).f_score.cpu())
        if nonfinite:
            warnings.warn(
                f"{nonfinite} validation clouds held NaN or infinite points; they are left out "
                "of the validation metrics (counted in val_nonfinite)",
                stacklevel=2,
            )
        if not chamfers:
            metrics = {"val_chamfer": math.inf, "val_fscore": 0.0}
        else:
            metrics = {
                "val_chamfer": float(torch.cat(chamfers).mean()),
                "val_fscore": float(torch.cat(fscores).mean()),
            }
        metrics["val_nonfinite"] = float(nonfinite)
        if diagnose:
            metrics["val_bound_chamfer"] = (
                float(torch.cat(bound_chamfers).mean()) if bound_chamfers else math.inf
            )
            metrics["val_bound_fscore"] = (
                float(torch.cat(bound_fscores).mean()) if bound_fscores else 0.0
            )
            metrics["val_latent_distance"] = float(torch.cat(distances).mean())
        return metrics

    def _validation_subset(self) -> Dataset:
        """The validation samples: ``train.val_batches`` batches' worth, spread evenly over the
        categories (`select_per_category`), so that the validation metric (and ``best.pt``)
        weighs every category, not just the first ones of a category-ordered split."""
        assert self.val_set is not None
        batches = self.config.train.val_batches
        if batches is None:
            return self.val_set
        categories = len(set(_sample_categories(self.val_set)))
        per_category = -(-batches * self.config.train.batch_size // max(categories, 1))
        return Subset(self.val_set, select_per_category(self.val_set, per_category))

    def _validate_and_picture(self) -> bool:
        improved = False
        if self.is_main:
            metrics = self.validate()
            bound = ""
            if "val_bound_chamfer" in metrics:
                bound = (
                    f"; autoencoding bound {metrics['val_bound_chamfer']:.5f}, "
                    f"{100 * metrics['val_bound_fscore']:.2f}%; latent distance "
                    f"{metrics['val_latent_distance']:.3f}"
                )
            self._print(
                f"epoch {self.state.epoch}: val Chamfer {metrics['val_chamfer']:.5f}, "
                f"F-score {100 * metrics['val_fscore']:.2f}%{bound} (step {self.state.global_step})"
            )
            self._log(metrics, None)
            if metrics["val_chamfer"] < self.state.best_metric:
                self.state.best_metric = metrics["val_chamfer"]
                self.state.best_epoch = self.state.epoch
                improved = True
            try:
                self.picture(self.out_dir / "pictures" / f"epoch_{self.state.epoch:03d}.png")
            except ImportError as error:  # matplotlib is an optional extra
                warnings.warn(f"no validation pictures: {error}", stacklevel=2)
        if self.distributed:
            dist.barrier()
        return improved

    def picture(self, path: str | Path) -> Path | None:
        """Draw validation images | predicted clouds | true clouds, seen from the images'
        viewpoints (`pcflow.viz.plot_reconstructions`).

        Clouds that hold NaN or infinite points (a diverged model) are left out with a warning;
        returns ``None`` (and draws nothing) when no cloud is finite.
        """
        from pcflow.viz import plot_reconstructions

        assert self.val_set is not None
        count = min(self.config.train.num_pictures, len(self.val_set))
        step = max(1, len(self.val_set) // max(count, 1))
        samples = [self.val_set[i * step] for i in range(count)]
        images = torch.stack([s["image"] for s in samples]).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            pred = self.model.reconstruct(
                images, self.config.data.num_points, temperature=self.config.eval.temperature
            ).cpu()
        # A diverged model must not stop training here: draw the finite clouds, name the rest.
        finite = torch.isfinite(pred).flatten(1).all(1).tolist()
        if not all(finite):
            warnings.warn(
                f"{finite.count(False)} of {len(finite)} predicted clouds for {Path(path).name} "
                f"hold NaN or infinite points at step {self.state.global_step} (has the model "
                "diverged?); they are left out of the picture",
                stacklevel=2,
            )
        samples = [s for s, ok in zip(samples, finite) if ok]
        pred = pred[torch.tensor(finite, dtype=torch.bool)]
        if not samples:
            return None
        cameras = [s["camera"] for s in samples] if all("camera" in s for s in samples) else None
        plot_reconstructions(
            [s["image"] for s in samples],
            {"prediction": list(pred)},
            [s["points"] for s in samples],
            path,
            cameras=cameras,
            labels=[s["category_name"] for s in samples],
        )
        return Path(path)

    # -------------------------------------------------------------- logs
    def _open_logs(self) -> None:
        self._csv_path = self.out_dir / "log.csv"
        if self._csv_path.exists():
            # Drop rows a killed run logged after its last checkpoint: they are redone.
            with open(self._csv_path, newline="") as file:
                rows = list(csv.DictReader(file))
            kept = [r for r in rows if int(r["step"]) <= self.state.global_step]
            if rows:
                self._csv_fields = list(rows[0].keys())
                with open(self._csv_path, "w", newline="") as file:
                    writer = csv.DictWriter(file, self._csv_fields)
                    writer.writeheader()
                    writer.writerows(kept)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                str(self.out_dir / "tensorboard"), purge_step=self.state.global_step + 1
            )
        except ImportError:  # tensorboard is an optional extra
            self._writer = None

    def _log(self, values: dict[str, float], seconds: float | None) -> None:
        if not self.is_main:
            return
        row = {"step": self.state.global_step, "epoch": self.state.epoch, **values}
        if seconds is not None:
            row["seconds_in_epoch"] = round(seconds, 3)
        if self._writer is not None:
            for key, value in values.items():
                group = "val" if key.startswith("val_") else "train"
                self._writer.add_scalar(f"{group}/{key}", value, self.state.global_step)
            self._writer.add_scalar(
                "train/lr", self.generator_optimizer.param_groups[0]["lr"], self.state.global_step
            )
        fields = self._csv_fields or []
        new = [k for k in row if k not in fields]
        if new or not self._csv_path.exists():
            # A new column (validation, the critic switching on): rewrite with a wider header.
            rows = []
            if self._csv_path.exists():
                with open(self._csv_path, newline="") as file:
                    rows = list(csv.DictReader(file))
            self._csv_fields = fields + new
            with open(self._csv_path, "w", newline="") as file:
                writer = csv.DictWriter(file, self._csv_fields)
                writer.writeheader()
                writer.writerows(rows)
        with open(self._csv_path, "a", newline="") as file:
            csv.DictWriter(file, self._csv_fields).writerow(row)

    def _close_logs(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -------------------------------------------------------------- checkpoints
    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs (see the class docstring)."""
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "generator_scheduler": self.generator_scheduler.state_dict(),
            "generator_scaler": self.generator_scaler.state_dict(),
            "critic_optimizer": None
            if self.critic_optimizer is None
            else self.critic_optimizer.state_dict(),
            "critic_scheduler": None
            if self.critic_scheduler is None
            else self.critic_scheduler.state_dict(),
            "critic_scaler": self.critic_scaler.state_dict(),
            "trainer": dataclasses.asdict(self.state),
            "rng": rng_states if rng_states is not None else [capture_rng_state()],
            "world_size": self.world_size,
        }

    def save(self, path: str | Path, *, gather: bool = True) -> None:
        """Write a checkpoint atomically (rank 0); with ``gather``, all ranks must call it."""
        rng = [capture_rng_state()]
        if self.distributed and gather:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if self.is_main:
            save_checkpoint(path, self.state_dict(rng))
        if self.distributed and gather:
            dist.barrier()

    def _load(self, path: Path) -> None:
        state = load_checkpoint(
            path,
            self.device,
            required_keys=("config", "model", "generator_optimizer", "trainer", "rng"),
        )
        saved = FlowGANConfig.from_dict(state["config"])
        for section in ("model", "loss"):
            if getattr(saved, section) != getattr(self.config, section):
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was trained with another {section!r} section "
                    f"({_difference(getattr(saved, section), getattr(self.config, section))}); "
                    "resume with the same configuration"
                )
        _load_weights(self.model, state["model"], path)
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.generator_scheduler.load_state_dict(state["generator_scheduler"])
        self.generator_scaler.load_state_dict(state["generator_scaler"])
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.critic_scheduler.load_state_dict(state["critic_scheduler"])
            self.critic_scaler.load_state_dict(state["critic_scaler"])
        self.state = TrainState(**state["trainer"])
        rng = state["rng"]
        if len(rng) == self.world_size:
            restore_rng_state(rng[self.rank])
        else:
            warnings.warn(
                f"{path} was written by {len(rng)} processes, this run has {self.world_size}: "
                "random states are reseeded, so the run continues but not bit-exactly",
                stacklevel=2,
            )
            seed = self.config.train.seed + self.rank + 1000 * self.state.global_step
            random.seed(seed)
            np.random.seed(seed % 2**32)  # noqa: NPY002 (the global RNG is saved and restored)
            torch.manual_seed(seed)


def _difference(a: Any, b: Any) -> str:
    left, right = dataclasses.asdict(a), dataclasses.asdict(b)
    keys = [k for k in left if left[k] != right.get(k)]
    return ", ".join(f"{k}: {left[k]!r} in the checkpoint, {right.get(k)!r} now" for k in keys)
