"""Atomic checkpoints: round trip, interrupted writes keep the old file, clear errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pcflow.utils import (
    CheckpointError,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)
from pcflow.utils import checkpoint as checkpoint_module


def _state(value: float) -> dict:
    return {
        "step": 7,
        "weights": {"w": torch.full((3, 4), value), "b": torch.arange(5)},
        "history": [1.5, None, "text", (1, 2)],
    }


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "sub" / "last.pt", _state(2.0))
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["weights"]["w"], torch.full((3, 4), 2.0))
    assert torch.equal(loaded["weights"]["b"], torch.arange(5))
    assert loaded["history"] == [1.5, None, "text", (1, 2)]
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    real_save = torch.save

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(9.0))
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert torch.equal(load_checkpoint(path)["weights"]["w"], torch.full((3, 4), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_failed_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))

    def broken_replace(source, destination):
        raise KeyboardInterrupt  # e.g. Ctrl-C between the write and the rename

    monkeypatch.setattr(checkpoint_module.os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(9.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["weights"]["w"], torch.full((3, 4), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


_WRITER = """
import sys, torch
from pcflow.utils import save_checkpoint
path = sys.argv[1]
value = 0
while True:
    value += 1
    save_checkpoint(path, {"value": value, "big": torch.full((2_000_000,), float(value))})
    print(value, flush=True)
"""


def test_hard_kill_during_writes_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        # Wait for a few complete writes, then kill while the next one is in flight.
        for _ in range(3):
            line = process.stdout.readline()
            assert line, "the writer process died"
        time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    state = load_checkpoint(path)
    assert state["value"] >= 3
    assert torch.equal(state["big"], torch.full((2_000_000,), float(state["value"])))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_directory_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "garbage.pt").write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "garbage.pt")
    path = save_checkpoint(tmp_path / "whole.pt", _state(1.0))
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "truncated.pt")


class _NotAllowed:
    pass


def test_incompatible_files(tmp_path: Path) -> None:
    torch.save({"model": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a pcflow checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save({"format": "pcflow-checkpoint", "version": 99, "state": {}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="upgrade pcflow"):
        load_checkpoint(tmp_path / "new.pt")
    save_checkpoint(tmp_path / "partial.pt", {"model": {}})
    with pytest.raises(CheckpointError, match=r"lacks \['optimizer'\]"):
        load_checkpoint(tmp_path / "partial.pt", required_keys=("model", "optimizer"))
    # Arbitrary pickled objects are refused (weights_only loading), never executed.
    torch.save(
        {"format": "pcflow-checkpoint", "version": 1, "state": {"x": _NotAllowed()}},
        tmp_path / "pickle.pt",
    )
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "pickle.pt")


def test_state_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="mapping"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])  # type: ignore[arg-type]


def test_checkpoint_gets_the_usual_file_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_remove_partial_checkpoints_removes_only_its_own_temporaries(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    stale = [tmp_path / ".last.pt.abc123.tmp", tmp_path / ".last.pt.x_y.tmp"]
    kept = [tmp_path / ".best.pt.abc123.tmp", tmp_path / "last.pt.tmp", tmp_path / "notes.tmp"]
    for file in stale + kept:
        file.write_bytes(b"partial")
    assert sorted(remove_partial_checkpoints(path)) == sorted(stale)
    assert all(file.exists() for file in [path, *kept])
    assert not any(file.exists() for file in stale)
    assert remove_partial_checkpoints(tmp_path / "missing" / "last.pt") == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_full_disk_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    temporary = tmp_path / ".last.pt.full.tmp"

    def full_disk(**kwargs):  # every write to /dev/full fails with ENOSPC
        temporary.write_bytes(b"")
        return os.open("/dev/full", os.O_WRONLY), str(temporary)

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: cannot write .*last\.pt") as info:
        save_checkpoint(path, _state(2.0))
    assert info.value.errno == errno.ENOSPC
    assert not temporary.exists()
    assert torch.equal(load_checkpoint(path)["weights"]["w"], torch.full((3, 4), 1.0))
