"""FlowGAN's training step, warm-ups and optimisers, run by `pcflow.training.Trainer`."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcflow import training
from pcflow.critics import adversarial_gradient_share, critic_objective, generator_objective
from pcflow.recipes.flowgan.checkpoints import upgrade_weights
from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.model import FlowGAN, build_model
from pcflow.recipes.flowgan.objective import GeneratorLoss, PSGNLoss
from pcflow.recipes.flowgan.validation import describe, draw_validation, validate
from pcflow.training import ProcessGroup, StepContext, StepOutput, Updater

__all__ = ["FlowGANMethod", "Trainer"]


class FlowGANMethod(training.TrainingMethod):
    """FlowGAN (or the PSGN-style baseline) as a `pcflow.training.TrainingMethod`.

    One step: `GeneratorLoss` (and, once the critic is on after ``train.critic_warmup_epochs``,
    clouds sampled from the image latent); the critic's update, (image, true cloud) real against
    (image, generated cloud) fake; the generator's update on `pcflow.critics.generator_objective`,
    its adversarial gradient running back through the critic and the flow's sampling. Adam for
    both, as ``optim`` says; the Chamfer term from ``train.chamfer_warmup_epochs``.

    Arguments:
        config: The run's configuration (validated).
        train_set: The training set (its ``num_points`` changes with ``data.late_num_points``).
    """

    best_metric = "val_chamfer"

    def __init__(self, config: FlowGANConfig, train_set: Dataset | None = None) -> None:
        self.cfg = config
        self.model = build_model(config)
        late = config.data.late_num_points is not None
        if late and train_set is not None and not hasattr(train_set, "num_points"):
            raise ValueError(
                "data.late_num_points needs a training set with a num_points attribute; got "
                f"{type(train_set).__name__}"
            )

    def settings(self) -> training.TrainSettings:
        """The loop's settings from the configuration."""
        train, optim = self.cfg.train, self.cfg.optim
        return training.TrainSettings(
            epochs=train.epochs, batch_size=train.batch_size, seed=train.seed,
            checkpoint_every=train.checkpoint_every, log_every=train.log_every,
            validate_every=train.validate_every,
            max_consecutive_nonfinite=train.max_consecutive_nonfinite,
            mixed_precision=train.mixed_precision, num_workers=self.cfg.data.num_workers,
            threads=train.threads, ema_decay=optim.ema_decay, ema_from_epoch=optim.ema_from_epoch,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def check_resume(self, saved: dict[str, Any], path: str | Path) -> None:
        self.cfg.check_resumable(saved, ("model", "loss"), path)

    def upgrade_weights(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        return upgrade_weights(weights, self.cfg.model.decoder)

    def setup(self, device: torch.device, group: ProcessGroup) -> dict[str, Updater | None]:
        optim, model = self.cfg.optim, self.model
        scale = self.cfg.train.mixed_precision and device.type == "cuda"
        generator = Updater.adam(model.generator, optim, scale_gradients=scale, group=group)
        critic = None
        if model.critic is not None:
            lr = optim.critic_lr or optim.lr
            critic = Updater.adam(model.critic, optim, lr=lr, scale_gradients=scale, group=group)
        self.group = group
        if isinstance(model, FlowGAN):
            loss = GeneratorLoss(model.generator, self.cfg.loss)
        else:
            loss = PSGNLoss(model.generator, self.cfg.model.cloud_scale)
        self.generator_loss = group.wrap(loss, device)
        self.critic = group.wrap(model.critic, device) if model.critic is not None else None
        self.updaters = {"generator": generator, "critic": critic}
        return self.updaters

    # ------------------------------------------------------------------ warm-ups
    def critic_active(self, epoch: int) -> bool:
        """Whether the critic trains (and the adversarial term applies) in ``epoch``."""
        return self.model.critic is not None and epoch >= self.cfg.train.critic_warmup_epochs

    def chamfer_active(self, epoch: int) -> bool:
        """Whether the Chamfer term (``loss.chamfer_weight``) applies in ``epoch``."""
        return self.cfg.loss.chamfer_weight > 0 and epoch >= self.cfg.train.chamfer_warmup_epochs

    def points_scale(self, num_points: int) -> float:
        """The factor on the loss's sums over a batch's ``num_points`` target points: 1, or
        ``data.num_points / num_points`` when ``data.late_num_points`` is set, so that denser
        clouds weigh each point as the rest of the run does (the latent terms do not grow with
        the points; without it, 1,024-point clouds halved their weight and cost one seed of the
        ``standard`` preset 9% of its validation CD)."""
        if self.cfg.data.late_num_points is None:
            return 1.0
        return self.cfg.data.num_points / num_points

    def start_epoch(self, epoch: int, train_set: Dataset) -> None:
        if self.cfg.data.late_num_points is not None:
            train_set.num_points = self.cfg.data.num_points_at(epoch)

    # ------------------------------------------------------------------ one step
    def training_step(self, batch: dict[str, Any], context: StepContext) -> StepOutput:
        """One step on a batch: ``"image"`` ``(B, 3, H, W)``, ``"points"`` and
        ``"points_target"`` ``(B, N, 3)``. Logs the generator's terms (per shape), the
        critic's and the adversarial loss when the critic is on, the gradient norms and, on
        logged steps, the adversarial share of the flow's gradient."""
        device, weights, model = context.device, self.cfg.loss, self.model
        generator_update, critic_update = self.updaters["generator"], self.updaters["critic"]
        images = model.prepare_images(batch["image"].to(device))
        points = batch["points"].to(device)
        target = batch["points_target"].to(device)
        adversarial = self.critic_active(context.epoch)
        model.train()
        generator_update.zero_grad()
        with context.autocast():
            terms = self.generator_loss(
                images, points, target, target.shape[1] if adversarial else 0,
                chamfer=self.chamfer_active(context.epoch),
                points_scale=self.points_scale(target.shape[1]),
            )  # fmt: skip
        logged = {k: v.detach().float().mean() for k, v in terms.items() if k != "fake"}
        logged["nll_per_point"] = logged.get("nll_points", torch.zeros(())) / target.shape[1]
        critic_ok = True
        if adversarial:
            if not context.group.all_finite(terms["fake"]):
                # A sampled cloud blew up: nothing sensible to show the critic; skip the step.
                generator_update.zero_grad()
                return StepOutput({**logged, "total_loss": torch.tensor(math.nan)}, False)
            real = model.generator.normalize(target)
            critic_update.zero_grad()
            critic_loss = critic_objective(
                model.critic, images, real, terms["fake"], kind=weights.gan_kind,
                gradient_penalty_weight=weights.gradient_penalty_weight,
                r1_weight=weights.r1_weight, scores=self.critic, autocast=context.autocast,
            )  # fmt: skip
            critic_ok, logged["critic_grad_norm"] = critic_update.step(critic_loss)
            logged["critic_loss"] = critic_loss.detach()
        critic = model.critic if adversarial else None
        loss, adversarial_loss = generator_objective(
            terms["loss"], terms.get("fake"), images, critic, kind=weights.gan_kind,
            adversarial_weight=weights.adversarial_weight, autocast=context.autocast,
        )  # fmt: skip
        if adversarial_loss is not None:
            logged["adversarial_loss"] = adversarial_loss.detach()
            if context.logged and not context.group.distributed:  # DDP wants one backward
                likelihood = terms["loss"].float().mean()
                weighted = weights.adversarial_weight * adversarial_loss
                logged.update(
                    adversarial_gradient_share(model.generator.flow, likelihood, weighted)
                )
        logged["total_loss"] = loss.detach()
        generator_ok, logged["grad_norm"] = generator_update.step(loss)
        return StepOutput(logged, generator_ok and critic_ok)

    # ------------------------------------------------------------------ validation
    def validate(self, dataset: Dataset, context: StepContext) -> dict[str, float]:
        return validate(self.model, dataset, self.cfg, context.device)

    def describe(self, metrics: dict[str, float], context: StepContext) -> str:
        return describe(metrics, context.epoch, context.global_step)

    def after_validation(self, dataset: Dataset, out_dir: Path, context: StepContext) -> None:
        path = out_dir / "pictures" / f"epoch_{context.epoch:03d}.png"
        try:
            draw_validation(self.model, dataset, self.cfg, path, context.global_step)
        except ImportError as error:  # matplotlib is an optional extra
            warnings.warn(f"no validation pictures: {error}", stacklevel=2)


class Trainer(training.Trainer):
    """`pcflow.training.Trainer` of a `FlowGANMethod` built from ``config`` (torch seeded with
    ``train.seed`` first: the same weights on every rank). Besides the loop's outputs, it draws
    ``pictures/epoch_XXX.png`` after each validation; ``best.pt`` has the lowest validation
    Chamfer distance.

    Arguments:
        config: The run's configuration.
        out_dir: Output folder.
        train_set: Training dataset of FlowGAN samples.
        val_set: Validation dataset, or ``None`` to skip validation.
        resume: As `pcflow.training.Trainer`'s.
        overwrite: As `pcflow.training.Trainer`'s.
        progress: As `pcflow.training.Trainer`'s.
        device: As `pcflow.training.Trainer`'s.
    """

    def __init__(
        self,
        config: FlowGANConfig,
        out_dir: str | Path,
        train_set: Dataset,
        val_set: Dataset | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        self.config = config.validate()  # also a config built or edited in code
        training.check_run_folder(out_dir, resume=resume, overwrite=overwrite)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.train.seed)  # the same initial weights on every rank
        method = FlowGANMethod(config, train_set)
        super().__init__(
            method, out_dir, train_set, val_set, settings=method.settings(), resume=resume,
            overwrite=overwrite, progress=progress, device=device,
        )  # fmt: skip
