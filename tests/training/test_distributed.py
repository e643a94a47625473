"""The training processes: one process is its own group, and two processes (gloo on the
CPU, as ``torchrun`` starts them) train to the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from training_toys import NoisyPlane, PlaneFit, ddp_worker, settings

from pcflow.training import ProcessGroup, Trainer
from pcflow.utils import load_checkpoint


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


def test_only_rank_zero_prints(capsys: pytest.CaptureFixture) -> None:
    ProcessGroup(True, 1, 2).print("from rank 1")
    ProcessGroup().print("from rank 0")
    assert capsys.readouterr().err == "from rank 0\n"


@pytest.mark.slow
def test_two_processes_end_with_the_same_weights(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    out.mkdir()
    # 12 samples, 2 processes, batches of 2 per process: 3 steps an epoch; stop mid-epoch 2.
    torch.multiprocessing.spawn(
        ddp_worker, args=(2, str(out), str(tmp_path / "rendezvous"), 5), nprocs=2, join=True
    )
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    initial = PlaneFit().model.state_dict()
    assert ranks[0].keys() == ranks[1].keys() == initial.keys()
    for name in initial:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks differ in {name}"
        assert not torch.equal(ranks[0][name], initial[name]), f"{name} did not train"
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    assert saved["world_size"] == 2 and saved["trainer"]["global_step"] == 5
    assert saved["trainer"]["epoch"] == 1 and saved["trainer"]["step_in_epoch"] == 2
    # Each rank's random states, and they are not the same streams (seeded seed + rank).
    assert len(saved["rng"]) == 2
    assert not torch.equal(saved["rng"][0]["torch"], saved["rng"][1]["torch"])
    assert [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:]] == [
        1, 2, 3, 4, 5,
    ]  # fmt: skip
    # Resumed by one process: it warns, reseeds, and goes on from the two processes' weights.
    with pytest.warns(UserWarning, match="written by 2 processes, this run has 1"):
        single = Trainer(
            PlaneFit(lr_milestones=(1,)), out, NoisyPlane(),
            settings=settings(epochs=2, batch_size=2), resume=True, progress=False,
        )  # fmt: skip
    assert single.resumed_at == 5
    for name, value in single.model.state_dict().items():
        assert torch.equal(value, ranks[0][name]), name
