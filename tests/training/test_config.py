"""Typed run configurations (`RunConfig`): presets, YAML files and strings, overrides, and
errors that name the key; hostile YAML (alias bombs, ``!!python`` tags) refused quickly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from pcflow.training import RunConfig, load_yaml


@dataclass
class Model:
    hidden: int = 8
    kind: Literal["mlp", "flow"] = "mlp"
    widths: list[int] = field(default_factory=lambda: [4, 4])
    dropout: float | None = None


@dataclass
class Train:
    epochs: int = 2
    lr: float = 1e-3
    warmup_epochs: int = 0
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToyConfig(RunConfig):
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"model": {"hidden": 4}},
        "big": {"model": {"hidden": 64, "kind": "flow"}, "train": {"epochs": 10}},
    }
    POSITIVE: ClassVar[tuple[str, ...]] = ("model.hidden", "model.dropout", "train.lr")
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ("train.warmup_epochs",)
    FREE_FORM: ClassVar[tuple[str, ...]] = ("train.options",)

    def check(self) -> None:
        if self.train.warmup_epochs > self.train.epochs:
            raise ValueError(
                f"config key 'train.warmup_epochs' must be at most train.epochs "
                f"({self.train.epochs}), got {self.train.warmup_epochs}"
            )


def test_presets_override_the_defaults() -> None:
    big = ToyConfig.preset("big")
    assert (big.model.hidden, big.model.kind, big.train.epochs) == (64, "flow", 10)
    assert big.model.widths == [4, 4] and big.train.lr == 1e-3  # the rest: defaults
    assert ToyConfig.preset("tiny") == ToyConfig(model=Model(hidden=4))
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of \['big', 'tiny'\]"):
        ToyConfig.preset("huge")


def test_yaml_files_and_strings(tmp_path: Path) -> None:
    config = ToyConfig.preset("big").with_overrides(["train.options.beta=0.5"])
    path = tmp_path / "sub" / "config.yaml"
    text = config.to_yaml(path)
    assert path.read_text() == text and "kind: flow" in text
    assert ToyConfig.from_yaml(path) == config
    assert ToyConfig.from_yaml(str(path)) == config
    from_string = ToyConfig.from_yaml("model:\n  hidden: 16\ntrain:\n  lr: 1e-2\n")
    assert from_string.model.hidden == 16 and from_string.train.lr == 0.01  # "1e-2": a float
    assert from_string.model.kind == "mlp"
    # Over a preset, nested sections merge key by key.
    merged = ToyConfig.preset("big").with_yaml("model:\n  hidden: 32\n")
    assert (merged.model.hidden, merged.model.kind, merged.train.epochs) == (32, "flow", 10)
    assert ToyConfig.from_yaml("") == ToyConfig()  # an empty file: the defaults
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml"):
        ToyConfig.from_yaml(str(tmp_path / "absent.yaml"))


def test_overrides_including_free_form_keys() -> None:
    config = ToyConfig().with_overrides(
        [
            "model.hidden=32",
            "model.widths=[1, 2, 3]",
            "model.dropout=0.1",
            "train.lr=1e-2",
            "train.resume=true",
            "train.options.beta=0.5",
            "train.options.schedule.kind=cosine",
        ]
    )
    assert config.model.hidden == 32 and config.model.widths == [1, 2, 3]
    assert config.model.dropout == 0.1 and config.train.lr == 0.01 and config.train.resume
    assert config.train.options == {"beta": 0.5, "schedule": {"kind": "cosine"}}
    assert config.with_overrides(["model.dropout=null"]).model.dropout is None
    assert ToyConfig().train.options == {}  # the default was not changed in place


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("model.hiden=3", KeyError, "unknown config key 'model.hiden'"),
        ("modle.hidden=3", KeyError, "unknown config key 'modle'"),
        ("model=3", KeyError, "names a section"),
        ("model.hidden", ValueError, "must look like section.key=value"),
        ("model.hidden=abc", TypeError, "'model.hidden' must be an integer, got 'abc'"),
        ("model.hidden=true", TypeError, "'model.hidden' must be an integer, got True"),
        ("model.hidden=2.5", TypeError, "'model.hidden' must be an integer"),
        ("train.resume=1", TypeError, "'train.resume' must be true or false, got 1"),
        ("train.lr=fast", TypeError, "'train.lr' must be a number, got 'fast'"),
        ("model.widths=3", TypeError, "'model.widths' must be a list"),
        ("model.widths=[1, x]", TypeError, r"'model.widths\[1\]' must be an integer"),
        ("model.kind=rnn", ValueError, "'model.kind' must be one of 'mlp', 'flow'; got 'rnn'"),
        ("model.kind=true", ValueError, "'model.kind' must be one of"),
        ("model.hidden=0", ValueError, "'model.hidden' must be positive, got 0"),
        ("model.dropout=-0.1", ValueError, "'model.dropout' must be positive"),
        ("train.lr=-1", ValueError, "'train.lr' must be positive, got -1.0"),
        ("train.warmup_epochs=-1", ValueError, "'train.warmup_epochs' must be zero or positive"),
        ("train.warmup_epochs=3", ValueError, "'train.warmup_epochs' must be at most"),
        ("train.options=3", TypeError, "'train.options' must be a mapping"),
    ],
)
def test_bad_settings_are_errors_naming_the_key(
    override: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ToyConfig().with_overrides([override])


def test_yaml_and_dict_errors_name_the_key() -> None:
    with pytest.raises(KeyError, match=r"unknown config key 'train\.epoch'.*'epochs'"):
        ToyConfig.from_yaml("train:\n  epoch: 3\n")
    with pytest.raises(KeyError, match="unknown config key 'optim'"):
        ToyConfig.from_dict({"optim": {}})
    with pytest.raises(TypeError, match="section 'model' must be a mapping"):
        ToyConfig.from_yaml("model: 3\n")
    with pytest.raises(TypeError, match="a config must be a YAML mapping, got list"):
        ToyConfig.from_yaml("- 1\n- 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        ToyConfig.from_yaml("model: [1, 2\n")


def test_a_config_edited_in_code_is_checked_as_a_loaded_one() -> None:
    config = ToyConfig()
    config.model.hidden = "many"  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"'model\.hidden' must be an integer"):
        config.validate()
    config.model.hidden = 0
    with pytest.raises(ValueError, match=r"'model\.hidden' must be positive"):
        config.validate()
    config.model.hidden = 3
    assert config.validate() is config


def _alias_bomb(levels: int = 6, fanout: int = 10) -> str:
    """YAML of ``fanout ** levels`` leaves through nested aliases, a few hundred bytes."""
    lines = [f"a0: &a0 [{', '.join(['x'] * fanout)}]"]
    for level in range(1, levels + 1):
        items = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"a{level}: &a{level} [{items}]")
    return "\n".join(lines) + f"\nmodel:\n  widths: *a{levels}\n"


def test_an_alias_bomb_is_refused_quickly() -> None:
    text = _alias_bomb()  # 6 levels of 10 aliases: about 12 million nodes once expanded
    assert len(text) < 1000
    started = time.perf_counter()
    with pytest.raises(ValueError, match="aliases expand to more than 100,000 nodes"):
        ToyConfig.from_yaml(text)
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    with pytest.raises(ValueError, match="expand to more than"):
        load_yaml(text, "bomb.yaml")
    assert time.perf_counter() - started < 1.0
    # A few shared aliases are fine: the limit is on the expanded size, not on aliases.
    shared = load_yaml("a: &a [1, 2]\nb: *a\nc: *a\n", "ok")
    assert shared == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(ValueError, match="recursive"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "model:\n  hidden: !!python/object/apply:os.system ['echo owned']\n",
        "train:\n  options: !!python/name:os.system\n",
    ],
)
def test_python_tags_are_refused(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid for pcflow"):
        ToyConfig.from_yaml(text)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"config\.yaml is not valid for pcflow"):
        ToyConfig.from_yaml(path)
    with pytest.raises(ValueError, match="not valid for pcflow"):
        ToyConfig().with_overrides([f"model.hidden={text.split(': ', 2)[-1].strip()}"])
