"""Where a FlowGAN's error comes from: the image reconstruction next to the autoencoding bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from pcflow.flows import SamplingOptions
from pcflow.metrics import evaluate_reconstruction
from pcflow.recipes.flowgan import EvalConfig, diagnose_reconstruction


class Clouds(Dataset):
    """Three categories of random clouds, two objects each, two views per object."""

    names = ("bowl", "chair", "lamp")

    def __init__(self, num_points: int = 20, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.objects = torch.rand(6, num_points, 3, generator=generator) - 0.5

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> dict:
        obj = index // 2
        return {
            "image": torch.full((3, 8, 8), obj / 6),
            "points": self.objects[obj],
            "category": obj // 2,
            "category_name": self.names[obj // 2],
            "model_id": f"m{obj}",
        }


def test_diagnosis_on_the_tiny_preset() -> None:
    from pcflow.recipes.flowgan import FlowGAN, FlowGANConfig, build_model

    config = FlowGANConfig.preset("tiny")
    torch.manual_seed(0)
    model = FlowGAN(config).eval()
    with torch.no_grad():  # an image head far from the posterior: the two latents differ
        model.generator.prior.head.linear.bias.add_(3.0)
    data = Clouds(num_points=config.data.num_points)
    eval_config = EvalConfig(num_points=config.data.num_points, batch_size=5)
    sampling = SamplingOptions(temperature=0.9)
    diagnosis = diagnose_reconstruction(
        model, data, eval_config, sampling=sampling, progress=False, seed=3
    )

    # The image half is evaluate_reconstruction of reconstruct; the bound, of autoencode.
    def image(batch: dict, n: int) -> torch.Tensor:
        return model.reconstruct(batch["image"], n, sampling)

    def bound(batch: dict, n: int) -> torch.Tensor:
        return model.autoencode(batch["points"], n, sampling)

    for predict, result in ((image, diagnosis.image), (bound, diagnosis.bound)):
        torch.manual_seed(3)
        expected = evaluate_reconstruction(predict, data, **eval_config.protocol(), progress=False)
        assert result.per_category == expected.per_category
    assert diagnosis.image.mean["CD"] != diagnosis.bound.mean["CD"]
    # Latent distances, sample by sample, by hand.
    distances: dict[str, list[float]] = {name: [] for name in Clouds.names}
    for index in range(len(data)):
        sample = data[index]
        with torch.no_grad():
            z_image = model.image_distribution(sample["image"][None]).mean[0]
        z_posterior = model.posterior_mean(sample["points"][None])[0]
        distances[sample["category_name"]].append(float((z_image - z_posterior).norm()))
    for name, values in distances.items():
        assert diagnosis.latent_distance[name] == pytest.approx(np.mean(values), rel=1e-5)
    assert diagnosis.latent_distance["mean"] == pytest.approx(
        np.mean([np.mean(v) for v in distances.values()]), rel=1e-5
    )
    assert diagnosis.temperature == 0.9 and diagnosis.bound.settings["temperature"] == 0.9
    table = diagnosis.table()
    assert "bound" in table and "latent distance" in table and "**mean**" in table
    psgn = build_model(config.with_overrides(["model.decoder=psgn"]))
    with pytest.raises(TypeError, match="model must be a FlowGAN"):
        diagnose_reconstruction(psgn, data, eval_config, progress=False)
