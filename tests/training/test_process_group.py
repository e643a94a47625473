"""The training processes as a trainer sees them, without torchrun (the two-process run is
tested by tests/examples/test_flowgan_examples.py::test_torchrun_two_processes_stay_in_sync)."""

from __future__ import annotations

import torch
from torch import nn

from pcflow.training import ProcessGroup


def test_a_single_process_is_its_own_group() -> None:
    group = ProcessGroup.current()
    assert (group.distributed, group.rank, group.world_size, group.is_main) == (False, 0, 1, True)
    module = nn.Linear(2, 2)
    assert group.wrap(module, torch.device("cpu")) is module
    values = torch.tensor([1.0, 3.0])
    assert torch.equal(group.mean(values), values)
    assert group.gather({"a": 1}) == [{"a": 1}]
    assert group.all_finite(values) and not group.all_finite(torch.tensor([1.0, float("nan")]))
    assert group.device("cpu") == torch.device("cpu")
    group.barrier()  # nothing to wait for


def test_only_rank_zero_prints(capsys) -> None:
    ProcessGroup(True, 1, 2).print("from rank 1")
    ProcessGroup().print("from rank 0")
    assert capsys.readouterr().err == "from rank 0\n"
