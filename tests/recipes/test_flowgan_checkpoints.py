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


def test_a_checkpoints_reconstruct_uses_its_stored_sampling(tmp_path: Path) -> None:
    """The sampling chosen on validation travels in the checkpoint's configuration, and
    ``reconstruct`` without options uses it; ``SamplingOptions()`` is the model itself."""
    from pcflow.flows import SamplingOptions

    stored = SamplingOptions(temperature=0.9, trim=0.2, spread=2, draws="sobol")
    config = FlowGANConfig.preset("tiny").with_overrides(
        ["eval.temperature=0.9", "eval.trim=0.2", "eval.spread=2", "eval.draws=sobol"]
    )
    torch.manual_seed(0)
    model = build_model(config)
    path = save_checkpoint(tmp_path / "run.pt", {"config": config.to_dict(),
                                                 "model": model.state_dict()})  # fmt: skip
    loaded = load_model(path)
    assert loaded.config.eval.sampling == stored
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = loaded.image_latent(images)
        torch.manual_seed(7)
        expected = loaded.generator.flow.sample(40, context=z, **stored.keywords())
        torch.manual_seed(7)
        plain = loaded.generator.flow.sample(40, context=z)
    torch.manual_seed(7)
    assert torch.equal(loaded.reconstruct(images, 40), expected * config.model.cloud_scale)
    torch.manual_seed(7)
    own = loaded.reconstruct(images, 40, SamplingOptions())
    assert torch.equal(own, plain * config.model.cloud_scale)
    assert not torch.equal(own, expected * config.model.cloud_scale)


def test_the_presets_store_the_validated_sampling() -> None:
    for name, trim in (("quick", 0.15), ("standard", 0.1)):  # results/sampling/RULE.md
        sampling = FlowGANConfig.preset(name).eval.sampling
        assert (sampling.temperature, sampling.trim, sampling.spread) == (1.0, trim, 2), name
    assert FlowGANConfig.preset("paper").eval.sampling.is_model  # the paper's own samples
