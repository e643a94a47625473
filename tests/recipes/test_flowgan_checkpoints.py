"""Checkpoints written before FlowGAN's generator became a LatentPointFlow still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pcflow.recipes.flowgan import FlowGANConfig, build_model, load_model, upgrade_weights
from pcflow.utils import save_checkpoint

# How the weights were named before the move (da45d35 and earlier), by decoder.
OLD_NAMES = {
    "flow": {"generator.prior.encoder.": "generator.image_encoder.",
             "generator.prior.head.": "generator.image_head."},
    "psgn": {"generator.encoder.": "generator.image_encoder."},
}  # fmt: skip


def _old(weights: dict[str, torch.Tensor], decoder: str) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, value in weights.items():
        for new, old in OLD_NAMES[decoder].items():
            if name.startswith(new):
                name = old + name[len(new) :]
        renamed[name] = value
    return renamed


@pytest.mark.parametrize("decoder", ["flow", "psgn"])
def test_a_checkpoint_with_the_old_names_loads(tmp_path: Path, decoder: str) -> None:
    config = FlowGANConfig.preset("tiny").with_overrides([f"model.decoder={decoder}"])
    torch.manual_seed(0)
    model = build_model(config)
    old = _old(model.state_dict(), decoder)
    assert old.keys() != model.state_dict().keys()  # the names did change
    path = save_checkpoint(tmp_path / "old.pt", {"config": config.to_dict(), "model": old})
    loaded = load_model(path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert upgrade_weights(old, decoder).keys() == model.state_dict().keys()
