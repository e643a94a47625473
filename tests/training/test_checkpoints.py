"""A run's checkpoints: what they hold, the method's say on resuming (``check_resume``,
``upgrade``), the random states, and another number of processes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from training_toys import NoisyPlane, PlaneFit, assert_same_tensors, settings, weights

from pcflow.training import (
    BEST_KEYS,
    OptimConfig,
    ProcessGroup,
    RunCheckpoints,
    Trainer,
    TrainState,
    Updater,
    WeightAverage,
    capture_rng_state,
    load_weights,
    restore_rng_state,
    seed_all,
)
from pcflow.utils import CheckpointError, load_checkpoint, save_checkpoint


def _draws() -> tuple[float, float, list[float]]:
    """One number from each of Python's, numpy's and torch's global generators."""
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()  # noqa: NPY002


def _checkpoints(
    folder: Path, *, seed: int = 0, average: float | None = None, **kwargs
) -> RunCheckpoints:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    updater = Updater.adam(model, OptimConfig(lr=0.1))
    updater.step(model(torch.randn(5, 3)).square().sum())
    kept = WeightAverage(model, average) if average is not None else None
    if kept is not None:
        kept.update()
    return RunCheckpoints(
        folder, model, {"net": updater, "critic": None}, ProcessGroup(),
        config={"width": 4}, seed=seed, average=kept, **kwargs,
    )  # fmt: skip


def test_a_checkpoint_holds_the_run_and_restores_it(tmp_path: Path) -> None:
    saved = _checkpoints(tmp_path, average=0.9)
    state = TrainState(epoch=1, step_in_epoch=2, global_step=5, best_metric=0.5, best_epoch=1)
    torch.manual_seed(7)
    saved.save(saved.last, state)
    after_save = _draws()
    contents = load_checkpoint(saved.last)
    assert set(contents) == {
        "config", "model", "average", "net_optimizer", "net_scheduler", "net_scaler",
        "critic_optimizer", "critic_scheduler", "critic_scaler", "trainer", "rng", "world_size",
    }  # fmt: skip
    assert contents["critic_optimizer"] is None and contents["world_size"] == 1
    assert contents["config"] == {"width": 4} and len(contents["rng"]) == 1
    # A fresh run in the same folder, at other weights and random states, is restored.
    loaded = _checkpoints(tmp_path, average=0.9)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.add_(1.0)
    seed_all(123)
    restored = loaded.load(loaded.last)
    assert restored == state
    assert _draws() == after_save
    assert_same_tensors(weights(saved.model), weights(loaded.model))
    assert_same_tensors(saved.average.state_dict(), loaded.average.state_dict())
    assert_same_tensors(saved.updaters["net"].state_dict(), loaded.updaters["net"].state_dict())


def test_best_holds_the_best_keys_only(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path, average=0.9)
    checkpoints.save_best(TrainState(best_epoch=3))
    best = load_checkpoint(checkpoints.best)
    assert set(best) == set(BEST_KEYS) and best["trainer"]["best_epoch"] == 3
    assert_same_tensors(weights(checkpoints.model), best["model"])


def test_a_fresh_start_seeds_every_generator(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path, seed=11)
    assert checkpoints.resume_or_seed(resume=True) is None  # nothing to resume: seeded
    drawn = _draws()
    seed_all(11)
    assert _draws() == drawn


def test_check_resume_refuses_other_settings(tmp_path: Path) -> None:
    data = NoisyPlane()
    Trainer(PlaneFit(), tmp_path, data, settings=settings(), progress=False).fit(max_steps=2)
    with pytest.raises(CheckpointError, match="hidden: 8 in the checkpoint, 12 now"):
        Trainer(PlaneFit(hidden=12), tmp_path, data, settings=settings(), resume=True)

    def refuse(saved, path):
        raise CheckpointError(f"{path}: width {saved['width']} refused")

    checkpoints = _checkpoints(tmp_path / "direct")
    checkpoints.save(checkpoints.last, TrainState())
    refusing = _checkpoints(tmp_path / "direct", check_resume=refuse)
    with pytest.raises(CheckpointError, match=r"last\.pt: width 4 refused"):
        refusing.load(refusing.last)


def test_upgrade_renames_the_weights_of_older_checkpoints(tmp_path: Path) -> None:
    old = _checkpoints(tmp_path, average=0.9)
    contents = old.state_dict(TrainState(global_step=3))
    # An earlier version of the model named its first layer "stem".
    for key in ("model", "average"):
        contents[key] = {k.replace("0.", "stem.", 1): v for k, v in contents[key].items()}
    save_checkpoint(old.last, contents)
    with pytest.raises(CheckpointError, match=r"last\.pt' does not fit the model: missing"):
        _checkpoints(tmp_path, average=0.9).load(old.last)

    def upgrade(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k.replace("stem.", "0.", 1): v for k, v in weights.items()}

    new = _checkpoints(tmp_path, average=0.9, upgrade=upgrade)
    with torch.no_grad():
        new.model[0].weight.zero_()
    assert new.load(old.last).global_step == 3
    assert_same_tensors(weights(old.model), weights(new.model))
    assert_same_tensors(old.average.state_dict(), new.average.state_dict())


def test_another_world_size_warns_and_reseeds(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path, seed=5)
    contents = checkpoints.state_dict(TrainState(global_step=4))
    contents["rng"] = [capture_rng_state(), capture_rng_state()]  # two processes wrote it
    contents["world_size"] = 2
    save_checkpoint(checkpoints.last, contents)
    with pytest.warns(UserWarning, match="written by 2 processes, this run has 1.*reseeded"):
        assert checkpoints.load(checkpoints.last).global_step == 4
    drawn = torch.rand(3)
    seed_all(5 + 0 + 1000 * 4)  # seed + rank + 1000 * step: not the first run's streams
    assert torch.equal(drawn, torch.rand(3))


def test_averages_that_do_not_fit_or_are_not_kept(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path, average=0.9)
    contents = checkpoints.state_dict(TrainState())
    contents["average"] = dict(list(contents["average"].items())[1:])
    save_checkpoint(checkpoints.last, contents)
    with pytest.raises(CheckpointError, match=r"last\.pt'.*averaged weights do not fit"):
        _checkpoints(tmp_path, average=0.9).load(checkpoints.last)
    checkpoints.save(checkpoints.last, TrainState())
    with pytest.warns(UserWarning, match="holds averaged weights but this run keeps no average"):
        _checkpoints(tmp_path).load(checkpoints.last)
    # A run that starts an average from a checkpoint written without one starts it afresh.
    _checkpoints(tmp_path).save(checkpoints.last, TrainState())
    later = _checkpoints(tmp_path, average=0.9)
    later.load(checkpoints.last)
    assert later.average.state_dict() is None


def test_missing_keys_and_weights_of_another_model(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path)
    contents = checkpoints.state_dict(TrainState())
    del contents["net_optimizer"]
    save_checkpoint(checkpoints.last, contents)
    with pytest.raises(CheckpointError, match=r"lacks \['net_optimizer'\]"):
        checkpoints.load(checkpoints.last)
    wider = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 1))
    with pytest.raises(CheckpointError, match=r"'elsewhere\.pt' does not fit.*size mismatch"):
        load_weights(checkpoints.model, wider.state_dict(), "elsewhere.pt")


def test_rng_state_round_trip() -> None:
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    np.random.randn()  # noqa: NPY002 (a cached Gaussian is part of numpy's state)
    state = capture_rng_state()
    expected = (random.gauss(0, 1), np.random.randn(), torch.rand(1))  # noqa: NPY002
    seed_all(9)
    restore_rng_state(state)
    assert (random.gauss(0, 1), np.random.randn(), torch.rand(1)) == expected  # noqa: NPY002
