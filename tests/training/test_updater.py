"""One network's update: Adam's step, gradient clipping, and non-finite steps skipped."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pcflow.training import OptimConfig, Updater


def _updater(*overrides: str) -> tuple[nn.Linear, Updater]:
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    settings = {}
    for item in overrides:
        key, value = item.removeprefix("optim.").split("=")
        settings[key] = None if value == "null" else eval(value)
    return module, Updater.adam(module, OptimConfig(**settings))


def test_a_step_matches_adam_with_the_configured_settings() -> None:
    module, updater = _updater("optim.grad_clip_norm=null", "optim.weight_decay=0.01")
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
        assert torch.equal(ours, theirs)
    assert all(p.grad is None for p in module.parameters())  # gradients dropped after the step


def test_gradients_are_clipped_to_the_configured_norm() -> None:
    module, updater = _updater("optim.grad_clip_norm=0.5", "optim.lr=1", "optim.weight_decay=0")
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


def test_state_round_trip_and_schedule() -> None:
    module, updater = _updater("optim.lr_milestones=[1]", "optim.lr_gamma=0.25")
    updater.step(module(torch.randn(5, 3)).sum())
    updater.end_epoch()
    assert updater.lr == pytest.approx(0.25e-3)
    _, other = _updater("optim.lr_milestones=[1]", "optim.lr_gamma=0.25")
    other.module.load_state_dict(module.state_dict())
    other.load_state_dict(updater.state_dict())
    assert other.lr == updater.lr
    inputs = torch.randn(5, 3)
    updater.step(module(inputs).sum())
    other.step(other.module(inputs).sum())
    for a, b in zip(module.parameters(), other.module.parameters()):
        torch.testing.assert_close(a, b)  # float32's tolerance: the same Adam state went in
