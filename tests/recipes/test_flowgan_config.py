"""FlowGANConfig: presets, YAML round trips, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcflow.recipes.flowgan import PRESETS, FlowGANConfig

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "flowgan" / "configs"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_yaml_round_trip(name: str, tmp_path: Path) -> None:
    config = FlowGANConfig.preset(name)
    assert FlowGANConfig.from_yaml(config.to_yaml()) == config
    config.to_yaml(tmp_path / "config.yaml")
    assert FlowGANConfig.from_yaml(tmp_path / "config.yaml") == config
    assert FlowGANConfig.from_yaml(str(tmp_path / "config.yaml")) == config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shipped_config_files_match_the_presets(name: str) -> None:
    assert FlowGANConfig.from_yaml(CONFIGS / f"{name}.yaml") == FlowGANConfig.preset(name)


def test_defaults_are_the_quick_preset() -> None:
    assert FlowGANConfig() == FlowGANConfig.preset("quick")


def test_paper_preset_has_the_papers_settings() -> None:
    config = FlowGANConfig.preset("paper")
    model, optim, train = config.model, config.optim, config.train
    assert (model.num_layers, model.hidden_features, model.latent_features) == (63, 64, 512)
    assert (model.image_size, model.image_channels, model.image_arch) == (224, 4, "resnet18")
    assert (model.point_features, model.point_hidden_features) == (512, [64, 128, 256])
    assert config.data.num_points == 2500 and model.cloud_scale == 2.0 and model.adversarial
    assert train.batch_size == 64 and train.critic_warmup_epochs == 5 and train.epochs == 30
    assert optim.betas == [0.9, 0.995] and optim.amsgrad and optim.weight_decay == 1e-6
    assert optim.lr == 2.56e-4
    assert optim.lr * optim.lr_gamma == pytest.approx(6.4e-5) and optim.lr_milestones == [20]
    assert config.loss.gan_kind == "lsgan"
    weights = (config.loss.points_weight, config.loss.prior_weight, config.loss.entropy_weight)
    assert weights == (1.0, 1.0, 1.0)
    assert config.eval.num_points == 2500 and config.eval.fscore_threshold == 1e-3


def test_unknown_keys_are_named() -> None:
    with pytest.raises(KeyError, match=r"unknown config key 'model\.laten_features'"):
        FlowGANConfig.from_dict({"model": {"laten_features": 3}})
    with pytest.raises(KeyError, match=r"unknown config key 'modle'"):
        FlowGANConfig.from_dict({"modle": {}})
    with pytest.raises(KeyError, match=r"'train\.epoch'"):
        FlowGANConfig.from_yaml("train:\n  epoch: 3\n")
    with pytest.raises(KeyError, match=r"'optim\.learning_rate'"):
        FlowGANConfig().with_overrides(["optim.learning_rate=0.1"])
    with pytest.raises(KeyError, match=r"'optimizer'"):
        FlowGANConfig().with_overrides(["optimizer.lr=0.1"])


def test_wrong_types_are_named() -> None:
    with pytest.raises(TypeError, match=r"'model\.num_layers' must be an integer, got 'many'"):
        FlowGANConfig.from_dict({"model": {"num_layers": "many"}})
    with pytest.raises(TypeError, match=r"'model\.adversarial' must be true or false"):
        FlowGANConfig().with_overrides(["model.adversarial=3"])
    with pytest.raises(TypeError, match=r"section 'train' must be a mapping"):
        FlowGANConfig.from_dict({"train": 3})
    with pytest.raises(TypeError, match="YAML mapping"):
        FlowGANConfig.from_yaml("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"section\.key=value"):
        FlowGANConfig().with_overrides(["train.epochs"])
    with pytest.raises(ValueError, match="unknown preset"):
        FlowGANConfig.preset("huge")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FlowGANConfig.from_yaml("missing.yaml")


def test_overrides() -> None:
    config = FlowGANConfig().with_overrides(
        [
            "train.epochs=3",
            "model.adversarial=false",
            "optim.lr=1e-4",  # YAML 1.1 reads this as a string; it is still a number here
            "optim.grad_clip_norm=null",
            "data.categories=[chair, lamp]",
            "data.synthetic.objects_per_category=5",
        ]
    )
    assert config.train.epochs == 3 and config.model.adversarial is False
    assert config.optim.lr == 1e-4 and config.optim.grad_clip_norm is None
    assert config.data.categories == ["chair", "lamp"]
    assert config.data.synthetic == {"objects_per_category": 5}
    assert FlowGANConfig().train.epochs != 3  # the original is untouched
    assert isinstance(FlowGANConfig().with_overrides(["optim.lr=1"]).optim.lr, float)


def test_missing_dataset_directory_is_named(tmp_path: Path) -> None:
    from pcflow.recipes.flowgan import build_dataset

    config = FlowGANConfig(data=FlowGANConfig().data).with_overrides(
        [f"data.source={tmp_path / 'no-shapenet-here'}"]
    )
    with pytest.raises(FileNotFoundError, match="no-shapenet-here"):
        build_dataset(config, "train")
