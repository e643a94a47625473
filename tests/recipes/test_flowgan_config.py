"""FlowGANConfig: presets, YAML round trips, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import re
import time
import typing
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


def _alias_bomb(levels: int) -> str:
    lines = ["data:", "  options:", "    l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels + 1):
        previous = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"    l{level}: &l{level} [{previous}]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_at_once() -> None:
    # 9^8 = 43 million strings once expanded: minutes and gigabytes without the guard.
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"aliases expand to more than 100,000 nodes"):
        FlowGANConfig.from_yaml(_alias_bomb(7)).with_overrides([])
    with pytest.raises(ValueError, match="aliases expand"):
        FlowGANConfig().with_overrides([f"data.options.bomb={_alias_bomb(7)!s}"])
    # Counting stops at the limit: refused within a second however deep the nesting.
    assert time.perf_counter() - start < 1


def test_yaml_aliases_of_normal_size_and_recursive_ones() -> None:
    text = "optim:\n  betas: &betas [0.5, 0.9]\ndata:\n  options: {betas: *betas}\n"
    config = FlowGANConfig.from_yaml(text)
    assert config.optim.betas == config.data.options["betas"] == [0.5, 0.9]
    with pytest.raises(ValueError, match="recursive"):
        FlowGANConfig.from_yaml("data:\n  options: &loop {again: *loop}\n")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.gan_kind=lsgn", "'loss.gan_kind' must be one of 'lsgan', 'nonsaturating'"),
        ("model.decoder=psg", "'model.decoder' must be one of 'flow', 'psgn'"),
        ("model.coupling=affin", "'model.coupling' must be one of"),
        ("loss.adversarial_latent=median", "'loss.adversarial_latent' must be one of"),
        ("eval.emd_method=hungarian", "'eval.emd_method' must be one of"),
        ("model.image_channels=5", "'model.image_channels' must be one of 3, 4; got 5"),
        ("train.checkpoint_every=0", "'train.checkpoint_every' must be positive, got 0"),
        ("model.cloud_scale=0", "'model.cloud_scale' must be positive, got 0.0"),
        ("model.cloud_scale=.nan", "'model.cloud_scale' must be positive"),
        ("train.log_every=-1", "'train.log_every' must be positive"),
        ("train.val_batches=0", "'train.val_batches' must be positive"),
        ("loss.adversarial_weight=-1", "'loss.adversarial_weight' must be zero or positive"),
        ("loss.chamfer_weight=-1", "'loss.chamfer_weight' must be zero or positive"),
        ("train.chamfer_warmup_epochs=-1", "'train.chamfer_warmup_epochs' must be zero or"),
        ("optim.betas=[0.9, 1.5]", "'optim.betas' must be two numbers in"),
        ("model.point_hidden_features=[8, 0]", "'model.point_hidden_features' must hold positive"),
        ("eval.temperature=0", "'eval.temperature' must be positive, got 0.0"),
        ("eval.temperature=.inf", "'eval.temperature' must be finite, got inf"),
        ("eval.trim=1", "'eval.trim' must be in [0, 1), got 1.0"),
        ("eval.trim=-0.1", "'eval.trim' must be in [0, 1), got -0.1"),
        ("eval.spread=0", "'eval.spread' must be at least 1, got 0"),
    ],
)
def test_settings_are_validated_when_the_config_loads(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FlowGANConfig().with_overrides([override])
    section, rest = override.split(".", 1)
    key, value = rest.split("=", 1)
    with pytest.raises(ValueError, match=re.escape(message)):
        FlowGANConfig.from_yaml(f"{section}:\n  {key}: {value}\n")


def test_gan_kinds_allowed_by_the_config_are_the_losses_kinds() -> None:
    from pcflow.critics import GAN_LOSS_KINDS
    from pcflow.recipes.flowgan.sections import GanKind

    assert typing.get_args(GanKind) == GAN_LOSS_KINDS


def _literal_settings() -> list[tuple[str, tuple]]:
    settings = []
    for field in dataclasses.fields(FlowGANConfig):
        section, cls = field.name, typing.get_type_hints(FlowGANConfig)[field.name]
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is typing.Literal:
                settings.append((f"{section}.{name}", typing.get_args(hint)))
    return settings


def test_every_enumerated_setting_is_checked_at_load_with_its_values_listed() -> None:
    settings = _literal_settings()
    assert len(settings) >= 9  # decoder, coupling, base, two archs, channels, latent, gan, emd
    for key, allowed in settings:
        typo = f"{allowed[0]}x" if isinstance(allowed[0], str) else 99
        listed = ", ".join(map(repr, allowed))
        with pytest.raises(ValueError, match=re.escape(f"{key!r} must be one of {listed}; got")):
            FlowGANConfig().with_overrides([f"{key}={typo}"])
        for value in allowed:  # and every allowed value loads
            config = FlowGANConfig().with_overrides([f"{key}={value}"])
            section, name = key.split(".")
            assert getattr(getattr(config, section), name) == value


def test_a_setting_edited_in_code_is_checked_by_validate() -> None:
    config = FlowGANConfig()
    config.loss.gan_kind = "lsgn"
    with pytest.raises(ValueError, match=r"'loss\.gan_kind' must be one of 'lsgan'"):
        config.validate()
    config = FlowGANConfig()
    config.model.image_channels = True  # a bool is not the integer 1 (nor 3 or 4)
    with pytest.raises(ValueError, match=r"'model\.image_channels' must be one of 3, 4"):
        config.validate()
