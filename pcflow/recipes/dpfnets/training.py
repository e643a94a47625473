"""DPF-Nets' model from its configuration, its training step and validation, and loading a run."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from pcflow import training
from pcflow.data import sample_categories, select_per_category
from pcflow.encoders import GaussianHead, PointNetEncoder
from pcflow.flows import dpf_flow
from pcflow.losses import chamfer_distance
from pcflow.models import FlowPrior, LatentPointFlow, StandardNormalPrior
from pcflow.recipes.dpfnets.config import DPFNetsConfig
from pcflow.recipes.dpfnets.evaluation import generate
from pcflow.training import ProcessGroup, StepContext, StepOutput, Updater
from pcflow.utils import CheckpointError, load_checkpoint

__all__ = ["DPFNetsMethod", "ELBOLoss", "Trainer", "build_model", "load_model"]


def build_model(config: DPFNetsConfig) -> LatentPointFlow:
    """DPF-Nets' model: PointNet posterior, the DPF point flow, and the latent flow prior
    (`pcflow.models.FlowPrior`) or, with ``model.prior="normal"``, ``N(0, I)``."""
    model = config.model
    encoder = PointNetEncoder(3, model.point_features, tuple(model.point_hidden_features))
    head = GaussianHead(model.point_features, model.latent_features)
    if model.prior == "flow":
        prior = FlowPrior(model.latent_features, model.prior_layers, model.prior_hidden_features)
    else:
        prior = StandardNormalPrior(model.latent_features)
    flow = dpf_flow(context_features=model.latent_features + (model.noise_scale > 0),
                    num_layers=model.num_layers, hidden_features=model.hidden_features,
                    base=model.base)  # fmt: skip
    return LatentPointFlow(encoder, head, flow, prior, cloud_scale=model.cloud_scale,
                           noise_scale=model.noise_scale)  # fmt: skip


class ELBOLoss(nn.Module):
    """The negative ELBO per shape as a module (what ``DistributedDataParallel`` wraps):
    ``forward(points, target) -> (loss (B,), terms)``, weighted by ``config.loss``."""

    def __init__(self, model: LatentPointFlow, config: DPFNetsConfig) -> None:
        super().__init__()
        self.model, self.weights = model, config.loss

    def forward(self, points: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = self.model.elbo(points, target)
        loss = terms.loss(self.weights.points_weight, self.weights.prior_weight,
                          self.weights.entropy_weight)  # fmt: skip
        logged = {"nll_points": terms.nll_points, "nll_latent": terms.nll_latent,
                  "entropy": terms.entropy}  # fmt: skip
        return loss, logged


class DPFNetsMethod(training.TrainingMethod):
    """DPF-Nets as a `pcflow.training.TrainingMethod`: one model, its latent flow prior
    trained jointly in the ELBO (as the paper and its public code train it), one Adam.

    Validation (seeded, a ``train.val_batches`` subset spread over the categories): the
    negative ELBO per point (``val_nelbo_per_point``, which picks ``best.pt``) and the
    autoencoding Chamfer distance (``val_chamfer``, squared, at the clouds' own scale).
    """

    best_metric = "val_nelbo_per_point"

    def __init__(self, config: DPFNetsConfig) -> None:
        self.cfg = config
        self.model = build_model(config)

    def settings(self) -> training.TrainSettings:
        """The loop's settings from the configuration."""
        train = self.cfg.train
        return training.TrainSettings(
            epochs=train.epochs, batch_size=train.batch_size, seed=train.seed,
            checkpoint_every=train.checkpoint_every, log_every=train.log_every,
            validate_every=train.validate_every,
            max_consecutive_nonfinite=train.max_consecutive_nonfinite,
            num_workers=self.cfg.data.num_workers, threads=train.threads,
            ema_decay=self.cfg.optim.ema_decay, ema_from_epoch=self.cfg.optim.ema_from_epoch,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def check_resume(self, saved: dict[str, Any], path: str | Path) -> None:
        before = DPFNetsConfig.from_dict(saved)
        for section in ("model", "loss"):
            old, new = (dataclasses.asdict(getattr(c, section)) for c in (before, self.cfg))
            if old != new:
                changed = [k for k in old if old[k] != new[k]]
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was trained with another {section!r} section "
                    f"({', '.join(changed)} differ); resume with the same configuration"
                )

    def setup(self, device: torch.device, group: ProcessGroup) -> dict[str, Updater | None]:
        self.loss = group.wrap(ELBOLoss(self.model, self.cfg), device)
        self.updater = Updater.adam(self.model, self.cfg.optim, group=group)
        return {"model": self.updater}

    def training_step(self, batch: dict[str, Any], context: StepContext) -> StepOutput:
        """One step on ``"points"`` (the posterior's input) and ``"points_target"`` (whose
        likelihood is the target): the negative ELBO per shape, averaged over the batch."""
        points = batch["points"].to(context.device)
        target = batch["points_target"].to(context.device)
        self.model.train()
        self.updater.zero_grad()
        loss, terms = self.loss(points, target)
        loss = loss.mean()
        logged = {k: v.detach().mean() for k, v in terms.items()}
        logged["loss"] = loss.detach()
        logged["nll_per_point"] = logged["nll_points"] / target.shape[1]
        ok, logged["grad_norm"] = self.updater.step(loss)
        return StepOutput(logged, ok)

    def _subset(self, dataset: Dataset) -> Dataset:
        batches = self.cfg.train.val_batches
        if batches is None:
            return dataset
        categories = len(set(sample_categories(dataset)))
        per_category = -(-batches * self.cfg.train.batch_size // max(categories, 1))
        return Subset(dataset, select_per_category(dataset, max(per_category, 1)))

    @torch.no_grad()
    def validate(self, dataset: Dataset, context: StepContext) -> dict[str, float]:
        loader, _ = training.make_loader(
            self._subset(dataset), self.cfg.train.batch_size, seed=self.cfg.train.seed,
            shuffle=False, drop_last=False,
        )  # fmt: skip
        model, totals, count = self.model, {"nelbo": 0.0, "chamfer": 0.0, "points": 0}, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed)
            model.eval()
            for batch in loader:
                points = batch["points"].to(context.device)
                target = batch["points_target"].to(context.device)
                loss, _ = ELBOLoss(model, self.cfg)(points, target)
                decoded = model.autoencode(points, target.shape[1], self.cfg.eval.sampling)
                chamfer, _ = chamfer_distance(decoded, target, batch_reduction=None)
                totals["nelbo"] += float(loss.sum())
                totals["chamfer"] += float(chamfer.sum())
                totals["points"] += target.shape[1] * target.shape[0]
                count += target.shape[0]
        return {"val_nelbo_per_point": totals["nelbo"] / max(totals["points"], 1),
                "val_chamfer": totals["chamfer"] / max(count, 1)}  # fmt: skip

    def after_validation(self, dataset: Dataset, out_dir: Path, context: StepContext) -> None:
        count = self.cfg.train.num_pictures
        if not count:
            return
        try:
            from pcflow.viz import plot_point_clouds

            clouds = generate(self.model, count, 1024, seed=self.cfg.train.seed)
            path = out_dir / "pictures" / f"epoch_{context.epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            titles = [f"sample {i}" for i in range(count)]
            plot_point_clouds(list(clouds.cpu()), titles, path=path, columns=min(count, 6))
        except ImportError as error:  # matplotlib is an optional extra
            warnings.warn(f"no validation pictures: {error}", stacklevel=2)


class Trainer(training.Trainer):
    """`pcflow.training.Trainer` of a `DPFNetsMethod` built from ``config`` (torch seeded by
    ``train.seed`` first, so the initial weights repeat). Arguments as the base class's, with
    the configuration in place of the method and its settings."""

    def __init__(
        self,
        config: DPFNetsConfig,
        out_dir: str | Path,
        train_set: Dataset,
        val_set: Dataset | None = None,
        **options: Any,
    ) -> None:
        self.config = config.validate()
        training.check_run_folder(out_dir, resume=options.get("resume", False),
                                  overwrite=options.get("overwrite", False))  # fmt: skip
        torch.manual_seed(config.train.seed)
        method = DPFNetsMethod(config)
        super().__init__(method, out_dir, train_set, val_set, settings=method.settings(),
                         **options)  # fmt: skip


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", *, average: bool = True
) -> tuple[LatentPointFlow, DPFNetsConfig]:
    """The trained model of a checkpoint (evaluation mode) and the configuration it holds.

    Raises:
        CheckpointError: If the file is missing, corrupt, not a DPF-Nets checkpoint, or its
            weights do not fit its configuration.
    """
    state = load_checkpoint(path, map_location, required_keys=("config", "model"))
    try:
        config = DPFNetsConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a DPF-Nets run: {error}") from None
    model = build_model(config)
    averaged = state.get("average") if average else None
    training.load_weights(model, averaged if averaged is not None else state["model"], path)
    return model.eval(), config
