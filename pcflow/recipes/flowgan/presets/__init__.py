"""FlowGAN's named presets, one YAML file each beside this module: the one place their values live.

Each file holds a ``description`` and overrides of `pcflow.recipes.flowgan.FlowGANConfig`'s
defaults (which are the ``"quick"`` preset). ``examples/flowgan/configs/`` holds them written
out in full (``python examples/flowgan/write_configs.py``; a test checks they are current).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["PRESETS", "PRESET_DESCRIPTIONS"]

_FILES = {
    path.stem: yaml.safe_load(path.read_text()) for path in Path(__file__).parent.glob("*.yaml")
}

PRESETS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in values.items() if k != "description"} for name, values in _FILES.items()
}
"""Named presets, as overrides of the quick defaults: ``"quick"``, ``"standard"``, ``"paper"``
and ``"tiny"``."""

PRESET_DESCRIPTIONS: dict[str, str] = {
    name: values["description"] for name, values in _FILES.items()
}
"""One line on each preset, written at the top of its YAML file."""
