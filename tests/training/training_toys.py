"""A small method of our own for the training loop's tests: a two-layer MLP fitting a plane.

Nothing here knows a recipe: the loop's guarantees (exact resume, the non-finite guard,
``best.pt``, logs, DDP) are pinned on this method, so they hold for any method.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pcflow.training import (
    OptimConfig,
    StepContext,
    StepOutput,
    TrainingMethod,
    TrainSettings,
    Updater,
)
from pcflow.utils import CheckpointError

PLANE = torch.tensor([1.0, -2.0, 0.5])


class NoisyPlane(Dataset):
    """Fixed inputs whose targets get fresh noise at every access (from the global RNG), so
    that the data's randomness must come from the sampler's seeds for a resume to be exact."""

    def __init__(self, count: int = 12) -> None:
        generator = torch.Generator().manual_seed(count)
        self.inputs = torch.randn(count, 3, generator=generator)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = self.inputs[index]
        return {"x": x, "y": x @ PLANE + 0.1 * torch.randn(())}


class PlaneFit(TrainingMethod):
    """A two-layer MLP with dropout (so each step draws from torch's RNG), trained by Adam.

    Arguments:
        hidden: Hidden width.
        lr: Adam's learning rate.
        lr_milestones: Epochs where the learning rate is divided by 4.
        poisoned_steps: Global steps whose loss is made NaN (the step is skipped).
        validation_script: Values the validations return as ``val_loss``, in turn; ``None``
            computes the loss on the validation set.
        pause_at_step: Sleep a long time before this global step (for a kill from outside).
    """

    best_metric = "val_loss"

    def __init__(
        self,
        hidden: int = 8,
        lr: float = 1e-2,
        lr_milestones: tuple[int, ...] = (),
        poisoned_steps: tuple[int, ...] = (),
        validation_script: list[float] | None = None,
        pause_at_step: int | None = None,
    ) -> None:
        torch.manual_seed(0)
        self.hidden = hidden
        self.model = nn.Sequential(
            nn.Linear(3, hidden), nn.Tanh(), nn.Dropout(0.2), nn.Linear(hidden, 1)
        )
        self.optim = OptimConfig(lr=lr, lr_milestones=list(lr_milestones), grad_clip_norm=10.0)
        self.poisoned_steps = set(poisoned_steps)
        self.validation_script = list(validation_script) if validation_script else None
        self.pause_at_step = pause_at_step
        self.validated_weights: list[dict[str, torch.Tensor]] = []

    def setup(self, device: torch.device, group: Any) -> dict[str, Updater | None]:
        self.net = group.wrap(self.model, device)
        self.updater = Updater.adam(self.model, self.optim, group=group)
        return {"net": self.updater}

    def training_step(self, batch: dict[str, torch.Tensor], context: StepContext) -> StepOutput:
        if context.global_step == self.pause_at_step:
            print(f"pausing at step {context.global_step}", flush=True)
            time.sleep(600)
        loss = (self.net(batch["x"]).squeeze(-1) - batch["y"]).square().mean()
        if context.global_step in self.poisoned_steps:
            loss = loss * math.nan
        ok, norm = self.updater.step(loss)
        return StepOutput({"loss": loss.detach(), "grad_norm": norm}, ok)

    def validate(self, dataset: Dataset, context: StepContext) -> dict[str, float]:
        self.validated_weights.append(
            {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        )
        if self.validation_script is not None:
            return {"val_loss": self.validation_script[len(self.validated_weights) - 1]}
        self.model.eval()
        with torch.no_grad():  # against the noiseless plane: no draw from the global RNG
            x = dataset.inputs
            loss = (self.model(x).squeeze(-1) - x @ PLANE).square().mean()
        self.model.train()
        return {"val_loss": float(loss)}

    def config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "lr": self.optim.lr}

    def check_resume(self, saved: dict[str, Any], path: Any) -> None:
        if saved["hidden"] != self.hidden:
            raise CheckpointError(
                f"{path}: hidden: {saved['hidden']} in the checkpoint, {self.hidden} now"
            )


def settings(**changes: Any) -> TrainSettings:
    """Three epochs of three steps (12 samples, batches of 4), single thread, quiet."""
    values = {"epochs": 3, "batch_size": 4, "checkpoint_every": 1000, "log_every": 1}
    values.update(changes)
    return TrainSettings(**values)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of a model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_tensors(expected: Any, got: Any, where: str = "") -> None:
    """Nested dicts, lists and tensors equal bit for bit."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and expected.keys() == got.keys(), where
        for key in expected:
            assert_same_tensors(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(expected) == len(got), where
        for i, (a, b) in enumerate(zip(expected, got)):
            assert_same_tensors(a, b, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(expected, got), where
    else:
        assert expected == got, where


def ddp_worker(rank: int, world_size: int, out: str, rendezvous: str, max_steps: int) -> None:
    """One of ``world_size`` processes training `PlaneFit` together (gloo, CPU); saves its
    final weights as ``rank<r>.pt`` in ``out``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size
    )
    try:
        from pcflow.training import Trainer

        method = PlaneFit(lr_milestones=(1,))
        run = settings(epochs=2, batch_size=2, checkpoint_every=2)
        trainer = Trainer(method, out, NoisyPlane(), settings=run, progress=False, device="cpu")
        trainer.fit(max_steps=max_steps)
        torch.save(weights(method.model), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
