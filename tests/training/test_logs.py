"""A run's logs: the CSV file widens its header, drops rows a killed run logged past its
checkpoint, and TensorBoard gets the same values."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pcflow.training import CsvLog, RunLog


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_csv_header_widens_and_keeps_the_rows(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "log.csv")
    log.write(1, {"loss": 2.5})
    log.write(2, {"loss": 2.0, "critic_loss": 0.5})  # a second network switched on
    log.write(2, {"val_chamfer": 0.1})
    rows = _rows(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "loss", "critic_loss", "val_chamfer"]
    assert [r["step"] for r in rows] == ["1", "2", "2"]
    assert rows[0]["critic_loss"] == "" and rows[1]["critic_loss"] == "0.5"
    assert rows[2]["val_chamfer"] == "0.1" and rows[2]["loss"] == ""


def test_resuming_drops_the_rows_past_the_checkpoint(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "log.csv")
    for step in range(1, 6):
        log.write(step, {"loss": float(step)})
    resumed = CsvLog(tmp_path / "log.csv", resume_step=3)  # killed at 5, checkpoint at 3
    assert [r["step"] for r in _rows(tmp_path / "log.csv")] == ["1", "2", "3"]
    resumed.write(4, {"loss": 4.5})
    assert [r["loss"] for r in _rows(tmp_path / "log.csv")] == ["1.0", "2.0", "3.0", "4.5"]
    # The header survives the cut, and widens again after it.
    resumed.write(5, {"loss": 5.0, "val_loss": 0.5})
    rows = _rows(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "loss", "val_loss"] and rows[-1]["val_loss"] == "0.5"


def test_run_log_writes_both_logs(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    log = RunLog(tmp_path)
    assert log.tensorboard is not None
    log.write(7, 1, {"total_loss": 3.0}, seconds=1.23456, lr=1e-3)
    log.write(8, 2, {"val_chamfer": 0.25})
    log.close()
    rows = _rows(tmp_path / "log.csv")
    assert rows[0] == {
        "step": "7", "epoch": "1", "total_loss": "3.0", "seconds_in_epoch": "1.235",
        "val_chamfer": "",
    }  # fmt: skip
    assert rows[1]["val_chamfer"] == "0.25" and rows[1]["epoch"] == "2"
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/lr", "train/total_loss", "val/val_chamfer"]
    assert [(e.step, e.value) for e in events.Scalars("train/total_loss")] == [(7, 3.0)]
    assert [(e.step, e.value) for e in events.Scalars("val/val_chamfer")] == [(8, 0.25)]


def test_run_log_without_tensorboard_writes_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    log = RunLog(tmp_path)
    assert log.tensorboard is None
    log.write(1, 0, {"loss": 1.5}, lr=0.1)
    log.close()
    assert _rows(tmp_path / "log.csv") == [{"step": "1", "epoch": "0", "loss": "1.5"}]
    assert not (tmp_path / "tensorboard").exists()
