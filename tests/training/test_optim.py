"""One network's update (`Updater`: Adam, clipping, non-finite steps skipped, the schedule) and
the moving average of the weights (`WeightAverage`) against a float64 reference."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from training_toys import NoisyPlane, PlaneFit, assert_same_tensors, settings, weights

from pcflow.training import OptimConfig, Trainer, Updater, WeightAverage
from pcflow.utils import load_checkpoint


def _updater(**changes) -> tuple[nn.Linear, Updater]:
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    return module, Updater.adam(module, OptimConfig(**changes))


def test_a_step_matches_adam_with_the_configured_settings() -> None:
    module, updater = _updater(grad_clip_norm=None, weight_decay=0.01)
    reference = nn.Linear(3, 2)
    reference.load_state_dict(module.state_dict())
    adam = torch.optim.Adam(
        reference.parameters(), lr=1e-3, betas=(0.9, 0.995), amsgrad=True, weight_decay=0.01
    )
    inputs = torch.randn(5, 3)
    ok, norm = updater.step(module(inputs).square().sum())
    reference(inputs).square().sum().backward()
    expected_norm = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm()
    adam.step()
    assert ok and torch.allclose(norm, expected_norm)
    for ours, theirs in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs)  # fused and looped Adam: float32 rounding
    assert all(p.grad is None for p in module.parameters())  # gradients dropped after the step
    assert updater.optimizer.param_groups[0]["fused"] is True  # one kernel on the CPU


def test_lr_overrides_the_config() -> None:
    module = nn.Linear(3, 2)
    assert Updater.adam(module, OptimConfig(lr=0.5), lr=0.125).lr == 0.125


def test_gradients_are_clipped_to_the_configured_norm() -> None:
    module, updater = _updater(grad_clip_norm=0.5, lr=1.0, weight_decay=0.0)
    before = [p.detach().clone() for p in module.parameters()]
    ok, norm = updater.step(100 * module(torch.randn(5, 3)).sum())
    assert ok and float(norm) > 0.5  # the norm before clipping is reported
    # Adam's first step is about lr per coordinate whatever the gradient's size: check that
    # the clipped gradient went in, through the optimiser's first moment.
    moments = [updater.optimizer.state[p]["exp_avg"] for p in module.parameters()]
    clipped = torch.cat([m.flatten() for m in moments]).norm() / (1 - 0.9)
    assert float(clipped) == pytest.approx(0.5, rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_a_non_finite_loss_or_gradient_skips_the_update(poison: float) -> None:
    module, updater = _updater()
    before = [p.detach().clone() for p in module.parameters()]
    ok, _ = updater.step(module(torch.randn(5, 3)).sum() * poison)
    assert not ok
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert all(p.grad is None for p in module.parameters())
    assert not updater.optimizer.state  # Adam's moments untouched too


def test_a_finite_loss_with_a_non_finite_gradient_skips_the_update() -> None:
    module, updater = _updater()
    before = weights(module)
    # sqrt at 0: the loss is finite, its gradient infinite.
    loss = module(torch.randn(5, 3)).sum() + (module.weight - module.weight.detach()).sqrt().sum()
    assert math.isfinite(loss.item())
    ok, norm = updater.step(loss)
    assert not ok and not torch.isfinite(norm)
    assert_same_tensors(before, weights(module))


def test_state_round_trip_and_schedule() -> None:
    module, updater = _updater(lr_milestones=[1, 3], lr_gamma=0.25)
    updater.step(module(torch.randn(5, 3)).sum())
    updater.end_epoch()
    assert updater.lr == pytest.approx(0.25e-3)
    updater.end_epoch()
    assert updater.lr == pytest.approx(0.25e-3)  # no milestone at 2
    _, other = _updater(lr_milestones=[1, 3], lr_gamma=0.25)
    other.module.load_state_dict(module.state_dict())
    # Through a copy, as from a checkpoint file (torch's optimiser would share the tensors).
    other.load_state_dict(copy.deepcopy(updater.state_dict()))
    assert other.lr == updater.lr
    inputs = torch.randn(5, 3)
    updater.step(module(inputs).sum())
    other.step(other.module(inputs).sum())
    assert_same_tensors(weights(module), weights(other.module))  # the same Adam state went in
    for one in (updater, other):
        one.end_epoch()
    assert updater.lr == other.lr == pytest.approx(0.25**2 * 1e-3)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"lr": 0.0}, "optim.lr"),
        ({"lr_milestones": [0]}, "optim.lr_milestones"),
        ({"betas": [0.9, 1.0]}, "optim.betas"),
        ({"betas": [0.9]}, "optim.betas"),
        ({"lr_gamma": -1.0}, "optim.lr_gamma"),
        ({"ema_decay": 1.0}, "optim.ema_decay"),
    ],
)
def test_optim_config_checks_name_the_key(change: dict, key: str) -> None:
    OptimConfig().check()
    with pytest.raises(ValueError, match=f"config key '{key}'"):
        OptimConfig(**change).check()


# ---------------------------------------------------------------------------- weight average
def test_weight_average_follows_a_float64_reference(tmp_path: Path) -> None:
    decay = 0.7
    trainer = Trainer(
        PlaneFit(lr=0.05), tmp_path, NoisyPlane(), NoisyPlane(8),
        settings=settings(ema_decay=decay, ema_from_epoch=1), progress=False,
    )  # fmt: skip
    seen = []
    step = trainer.train_step

    def recording(batch):
        values = step(batch)
        seen.append({"epoch": trainer.state.epoch, **weights(trainer.model)})
        return values

    trainer.train_step = recording  # type: ignore[method-assign]
    trainer.fit()
    averaged = [w for w in seen if w["epoch"] >= 1]
    assert len(averaged) == 6 and len(seen) == 9  # it starts with epoch 1, not before
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    steps = len(averaged)
    for name, value in saved["average"].items():
        reference = averaged[0][name].double()
        for step_weights in averaged[1:]:
            reference = decay * reference + (1 - decay) * step_weights[name].double()
        # float32 rounding: at most one ulp-sized error per step and per operation.
        scale = max(w[name].abs().max().item() for w in averaged)
        bound = 4 * steps * torch.finfo(torch.float32).eps * scale
        assert (value.double() - reference).abs().max().item() <= bound, name
        assert (value.double() - averaged[-1][name].double()).abs().max().item() > bound, name
    # Training goes on from the model's own weights, which validation gave back unchanged.
    assert_same_tensors(saved["model"], weights(trainer.model))
    assert_same_tensors(saved["model"], {k: v for k, v in seen[-1].items() if k != "epoch"})


def test_weight_average_copies_buffers_and_starts_with_the_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(model, 0.5)
    assert average.state_dict() is None
    with average.applied():  # nothing to apply before the first update
        pass
    average.update()
    assert_same_tensors(weights(model), average.state_dict())
    first = weights(model)
    model(torch.randn(8, 3))  # BatchNorm's statistics move
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.update()
    kept = average.state_dict()
    assert torch.equal(kept["1.running_mean"], model[1].running_mean)  # buffers: copied
    assert torch.equal(kept["1.num_batches_tracked"], model[1].num_batches_tracked)
    torch.testing.assert_close(kept["0.weight"], first["0.weight"] + 0.5)
    own = weights(model)
    with average.applied():
        assert_same_tensors(kept, weights(model))
    assert_same_tensors(own, weights(model))  # the model's own weights come back, bit for bit


def test_weight_average_state_round_trip_and_misfits() -> None:
    model = nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    average.update()
    other = WeightAverage(model, 0.9)
    other.load_state_dict({k: v.double() for k, v in average.state_dict().items()})
    assert_same_tensors(average.state_dict(), other.state_dict())  # back in the model's dtype
    other.load_state_dict(None)
    assert other.state_dict() is None
    with pytest.raises(ValueError, match="do not fit the model"):
        other.load_state_dict({"weight": model.weight})
    with pytest.raises(ValueError, match="do not fit the model"):
        other.load_state_dict({**average.state_dict(), "extra": model.bias})
    for decay in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="decay must be in"):
            WeightAverage(model, decay)
