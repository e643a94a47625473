"""The helpers of `benchmarks/flowgan_step.py`: each variant really runs as it is named.

No timing is asserted (speed lives in the benchmark's output).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from pcflow.recipes.flowgan import FlowGANConfig, Trainer
from pcflow.training.trainer import flush_denormal_is_on

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "flowgan_step.py"


def _script():
    spec = importlib.util.spec_from_file_location("flowgan_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Shapes(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {
            "image": torch.rand(3, 32, 32, generator=generator),
            "points": torch.randn(32, 3, generator=generator) * 0.3,
            "points_target": torch.randn(32, 3, generator=generator) * 0.3,
            "category": 0,
            "category_name": "blob",
            "model_id": f"{index:04d}",
        }


def test_variants_run_fused_or_looped_flushed_or_not(tmp_path: Path) -> None:
    script = _script()
    config = FlowGANConfig.preset("tiny").with_overrides(
        ["data.num_points=32", "train.batch_size=4", "train.checkpoint_every=1000"]
    )
    trainer = Trainer(config, tmp_path / "run", Shapes(), progress=False)
    trainer.fit(max_steps=1)
    trainer.save(tmp_path / "last.pt")  # saved fused: the loop variant must still loop
    for checkpoint in (None, tmp_path / "last.pt"):
        for fused in (True, False):
            made = script.make_trainer(config, Shapes(), checkpoint, fused)
            groups = [g for u in made.updaters.values() for g in u.optimizer.param_groups]
            assert all(group["fused"] is (True if fused else None) for group in groups)
            assert made.state.global_step == (0 if checkpoint is None else 1)
    batches = [batch for _, batch in zip(range(2), iter(trainer.loader))]
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda batch: (seen.append(flush_denormal_is_on()), step(batch))[1]
    for flush in (True, False):
        assert script.time_steps(trainer, batches, flush) > 0
    assert seen == [True, True, False, False]
    assert not flush_denormal_is_on()
