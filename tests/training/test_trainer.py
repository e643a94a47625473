"""The training loop on a method of our own: exact resume (also after ``kill -9``, even
mid-checkpoint), the non-finite guard, ``best.pt``, the run's logs, and its folder."""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from training_toys import NoisyPlane, PlaneFit, assert_same_tensors, settings, weights

from pcflow.training import (
    BEST_KEYS,
    RUN_OUTPUTS,
    NonFiniteLossError,
    RunExistsError,
    Trainer,
    TrainingMethod,
    check_run_folder,
)
from pcflow.training.trainer import flush_denormal_is_on
from pcflow.utils import load_checkpoint

HERE = Path(__file__).resolve().parent


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _trainer(
    out: Path, method: PlaneFit | None = None, validate: bool = False, **kwargs
) -> Trainer:
    run = settings(**kwargs.pop("settings", {}))
    val = NoisyPlane(8) if validate else None
    method = method or PlaneFit(lr_milestones=(2,))
    return Trainer(method, out, NoisyPlane(), val, settings=run, progress=False, **kwargs)


# ---------------------------------------------------------------------------- exact resume
@pytest.mark.parametrize(
    "stop",
    [2, 4, 6],
    ids=["mid-epoch-1", "after-a-periodic-checkpoint", "at-an-epoch-end"],
)
@pytest.mark.parametrize("average", [None, 0.8], ids=["plain", "weight-average"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(
    tmp_path: Path, stop: int, average: float | None
) -> None:
    # 3 epochs of 3 steps, a checkpoint every 2 steps, the schedule's milestone at epoch 2 and
    # the average from epoch 1: the resumed part crosses epoch ends and all of those.
    run = {"checkpoint_every": 2, "ema_decay": average, "ema_from_epoch": 1}
    whole = _trainer(tmp_path / "whole", validate=True, settings=run)
    whole.fit()
    first = _trainer(tmp_path / "resumed", validate=True, settings=run)
    first.fit(max_steps=stop)
    assert first.state.global_step == stop and not first.state.finished
    torch.manual_seed(1234)  # whatever ran in between must not matter
    np.random.seed(99)  # noqa: NPY002
    random.seed(7)
    second = _trainer(tmp_path / "resumed", validate=True, settings=run, resume=True)
    assert second.resumed_at == stop
    second.fit()
    assert second.state == whole.state and whole.state.global_step == 9
    assert whole.state.finished and whole.updaters["net"].lr == pytest.approx(1e-2 / 4)
    assert_same_tensors(weights(whole.model), weights(second.model), "model")
    assert_same_tensors(
        whole.updaters["net"].state_dict(), second.updaters["net"].state_dict(), "updater"
    )
    expected = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    got = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    if average is None:
        assert got["average"] is None
    else:
        assert got["average"] is not None
        assert_same_tensors(expected["average"], got["average"], "average")
        assert any(not torch.equal(got["average"][k], got["model"][k]) for k in got["model"])
    for key in ("model", "net_optimizer", "net_scheduler", "trainer"):
        assert_same_tensors(expected[key], got[key], key)
    # The logged losses too, step by step (the resumed run's log holds each step once).
    logged = [
        [(row["step"], row["loss"], row["val_loss"]) for row in _rows(out / "log.csv")]
        for out in (tmp_path / "whole", tmp_path / "resumed")
    ]
    assert logged[0] == logged[1]
    assert [int(s) for s, loss, _ in logged[0] if loss] == list(range(1, 10))


def test_resuming_a_finished_run_does_nothing(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    again = _trainer(tmp_path, resume=True)
    before = weights(again.model)
    assert again.fit().finished
    assert_same_tensors(before, weights(again.model))


_KILLED_RUN = """
import os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
import pcflow.utils.checkpoint as checkpoint_module
from pcflow.training import Trainer
from training_toys import NoisyPlane, PlaneFit, settings

out, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "mid-checkpoint":
    real_os = os

    class HangingOs:
        # The third checkpoint write (step 4's) hangs after its temporary file is whole,
        # before it replaces last.pt: killed there, as a crash mid-write.
        calls = 0

        def __getattr__(self, name):
            return getattr(real_os, name)

        def replace(self, source, target):
            HangingOs.calls += 1
            if HangingOs.calls == 3:
                print("hanging", flush=True)
                time.sleep(600)
            real_os.replace(source, target)

    checkpoint_module.os = HangingOs()
    method = PlaneFit(lr_milestones=(2,))
else:  # killed during step 6, after step 5 was logged and step 4 checkpointed
    method = PlaneFit(lr_milestones=(2,), pause_at_step=5)
run = settings(checkpoint_every=2)
Trainer(method, out, NoisyPlane(), settings=run, progress=False).fit()
print("finished", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "resumed_at"), [("mid-run", 4), ("mid-checkpoint", 3)], ids=["mid-run", "mid-write"]
)
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, mode: str, resumed_at: int) -> None:
    whole = _trainer(tmp_path / "whole", settings={"checkpoint_every": 2})
    whole.fit()
    killed = tmp_path / "killed"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(killed), mode],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        line = process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to clean up, as in a crash
        process.wait()
    assert line in ("pausing at step 5", "hanging"), f"the run was not killed mid-run: {line!r}"
    checkpoints = killed / "checkpoints"
    partial = sorted(checkpoints.glob(".last.pt.*.tmp"))
    assert bool(partial) == (mode == "mid-checkpoint")
    assert load_checkpoint(checkpoints / "last.pt")["trainer"]["global_step"] == resumed_at
    assert [int(r["step"]) for r in _rows(killed / "log.csv")][-1] > resumed_at
    resumed = _trainer(killed, settings={"checkpoint_every": 2}, resume=True)
    assert resumed.resumed_at == resumed_at
    resumed.fit()
    assert not any(path.exists() for path in partial)
    assert_same_tensors(weights(whole.model), weights(resumed.model), "model")
    assert_same_tensors(
        load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["net_optimizer"],
        load_checkpoint(checkpoints / "last.pt")["net_optimizer"],
    )
    # The killed run's rows after its checkpoint were dropped, then logged again once.
    assert [int(r["step"]) for r in _rows(killed / "log.csv")] == list(range(1, 10))


# ---------------------------------------------------------------------------- the guard
def test_non_finite_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    method = PlaneFit(poisoned_steps=(1, 2))
    trainer = _trainer(tmp_path, method, settings={"max_consecutive_nonfinite": 3})
    seen = []
    step = trainer.train_step

    def recording(batch):
        values = step(batch)
        seen.append((values, weights(trainer.model)))
        return values

    trainer.train_step = recording  # type: ignore[method-assign]
    state = trainer.fit()
    assert state.finished and state.skipped_steps == 2 and state.consecutive_nonfinite == 0
    assert [values["skipped"] for values, _ in seen[:4]] == [0.0, 1.0, 1.0, 0.0]
    assert math.isnan(seen[1][0]["loss"]) and math.isfinite(seen[3][0]["loss"])
    # Skipped steps leave the weights as they were; the others move them.
    assert_same_tensors(seen[0][1], seen[2][1])
    assert any(not torch.equal(seen[2][1][k], seen[3][1][k]) for k in seen[2][1])
    assert [r["skipped"] for r in _rows(tmp_path / "log.csv")][:4] == ["0.0", "1.0", "1.0", "0.0"]


def test_too_many_non_finite_steps_in_a_row_stop_the_run(tmp_path: Path) -> None:
    method = PlaneFit(poisoned_steps=tuple(range(1, 9)))
    trainer = _trainer(tmp_path, method, settings={"max_consecutive_nonfinite": 3})
    batch = next(iter(trainer.loader))
    assert trainer.train_step(batch)["skipped"] == 0.0  # global step 0 is not poisoned
    trainer.state.global_step = 1
    before = weights(trainer.model)
    for expected in (1, 2):
        values = trainer.train_step(batch)
        assert values["skipped"] == 1.0 and math.isnan(values["loss"])
        assert trainer.state.consecutive_nonfinite == expected
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.train_step(batch)
    assert_same_tensors(before, weights(trainer.model))
    trainer.method.poisoned_steps = set()
    assert trainer.train_step(batch)["skipped"] == 0.0
    assert trainer.state.consecutive_nonfinite == 0 and trainer.state.skipped_steps == 3
    with pytest.raises(NonFiniteLossError):  # and through fit, from the start
        _trainer(
            tmp_path / "fit",
            PlaneFit(poisoned_steps=tuple(range(9))),
            settings={"max_consecutive_nonfinite": 3},
        ).fit()


# ---------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("average", [None, 0.5], ids=["plain", "weight-average"])
def test_best_checkpoint_holds_the_lowest_validation_weights_only(
    tmp_path: Path, average: float | None
) -> None:
    method = PlaneFit(validation_script=[3.0, 1.0, 2.0])
    trainer = _trainer(tmp_path, method, validate=True, settings={"ema_decay": average})
    trainer.fit()
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert set(best) == set(BEST_KEYS)
    assert best["trainer"]["best_epoch"] == 2 and best["trainer"]["best_metric"] == 1.0
    assert best["trainer"]["global_step"] == 6
    # Validation saw the average where kept: best.pt's average is what was validated.
    validated = method.validated_weights[1]
    assert_same_tensors(validated, best["average"] if average else best["model"])
    if average:
        assert any(not torch.equal(best["model"][k], validated[k]) for k in validated)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["trainer"]["best_epoch"] == 2 and "net_optimizer" in last


def test_no_best_checkpoint_without_a_best_metric(tmp_path: Path) -> None:
    method = PlaneFit()
    method.best_metric = None
    _trainer(tmp_path, method, validate=True).fit()
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_outputs_config_and_logs(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, validate=True, settings={"log_every": 2})
    trainer.fit()
    assert (tmp_path / "config.yaml").read_text() == "hidden: 8\nlr: 0.01\n"
    rows = _rows(tmp_path / "log.csv")
    assert list(rows[0])[:2] == ["step", "epoch"] and "val_loss" in rows[0]
    train_rows = [r for r in rows if r["loss"]]
    assert [int(r["step"]) for r in train_rows] == [2, 4, 6, 8]
    assert all(r["val_loss"] == "" and float(r["seconds_in_epoch"]) >= 0 for r in train_rows)
    validations = [r for r in rows if r["val_loss"]]
    assert [(r["step"], r["epoch"]) for r in validations] == [("3", "1"), ("6", "2"), ("9", "3")]
    pytest.importorskip("tensorboard")
    assert any((tmp_path / "tensorboard").iterdir())


def test_start_removes_partial_checkpoints_of_a_killed_run(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    partial = [folder / ".last.pt.k1ll3d.tmp", folder / ".best.pt.abc.tmp"]
    for path in partial:
        path.write_bytes(b"\0" * 1024)
    other = folder / "mine.tmp"
    other.write_bytes(b"user file")
    _trainer(tmp_path, resume=True).fit(max_steps=0)
    assert not any(path.exists() for path in partial) and other.exists()


def test_a_batch_larger_than_the_data_and_a_method_without_updaters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smaller than one batch of 64"):
        _trainer(tmp_path, settings={"batch_size": 64})

    class Idle(TrainingMethod):
        model = torch.nn.Linear(1, 1)

        def setup(self, device, group):
            return {}

    with pytest.raises(ValueError, match="at least one updater"):
        Trainer(Idle(), tmp_path / "idle", NoisyPlane(), progress=False)


def test_training_flushes_subnormals_and_restores_the_setting(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, settings={"epochs": 1})
    step, seen = trainer.train_step, []

    def recording(batch):
        seen.append(flush_denormal_is_on())
        return step(batch)

    trainer.train_step = recording  # type: ignore[method-assign]
    assert not flush_denormal_is_on()
    trainer.fit()
    assert seen and all(seen)
    assert not flush_denormal_is_on()  # as it was found
    torch.set_flush_denormal(True)
    try:
        _trainer(tmp_path / "again", settings={"epochs": 1}).fit()
        assert flush_denormal_is_on()  # a caller who flushes keeps flushing
    finally:
        torch.set_flush_denormal(False)


# ---------------------------------------------------------------------------- the run folder
@pytest.mark.parametrize("held", ["checkpoints/last.pt", "checkpoints/best.pt", *RUN_OUTPUTS[1:]])
def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(
    tmp_path: Path, held: str
) -> None:
    out = tmp_path / "my run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")  # a user's file is not a run, nor a bare folder
    (out / "checkpoints" / ".last.pt.k1ll3d.tmp").write_bytes(b"")
    check_run_folder(out, resume=False, overwrite=False)
    check_run_folder(tmp_path / "absent", resume=False, overwrite=False)
    (out / held).write_text("")
    with pytest.raises(RunExistsError, match=held) as error:
        check_run_folder(out, resume=False, overwrite=False)
    message = str(error.value)
    assert str(out) in message and "resume" in message and "overwrite" in message
    assert isinstance(error.value, FileExistsError)
    check_run_folder(out, resume=True, overwrite=False)
    check_run_folder(out, resume=False, overwrite=True)


def test_trainer_refuses_a_run_and_overwrite_deletes_only_the_run(tmp_path: Path) -> None:
    _trainer(tmp_path, validate=True).fit(max_steps=5)
    with pytest.raises(RunExistsError, match=r"resume.*overwrite"):
        _trainer(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cloud.ply").write_text("ply")
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "epoch_001.png").write_bytes(b"png")
    (tmp_path / "eval").mkdir()
    trainer = _trainer(tmp_path, overwrite=True)
    assert trainer.state.global_step == 0  # not resumed
    trainer.fit(max_steps=2)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "data" / "cloud.ply").exists()
    assert not (tmp_path / "pictures").exists() and not (tmp_path / "eval").exists()
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["trainer"]["global_step"] == 2
    assert [int(r["step"]) for r in _rows(tmp_path / "log.csv")] == [1, 2]
    # Resuming wins over overwriting: nothing is deleted.
    both = _trainer(tmp_path, resume=True, overwrite=True)
    assert both.resumed_at == 2
    both.fit(max_steps=3)
    assert [int(r["step"]) for r in _rows(tmp_path / "log.csv")] == [1, 2, 3]
