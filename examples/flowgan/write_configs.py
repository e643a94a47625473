"""Write the presets' YAML files, examples/flowgan/configs/<preset>.yaml, from their one source.

The presets' values live in `pcflow/recipes/flowgan/presets/*.yaml`; these files show them written
out, as a starting point for a config of one's own. After editing a preset:

    python examples/flowgan/write_configs.py           # rewrite the files
    python examples/flowgan/write_configs.py --check   # exit status 1 if one is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pcflow.recipes.flowgan import PRESETS, FlowGANConfig
from pcflow.recipes.flowgan.presets import PRESET_DESCRIPTIONS

CONFIGS = Path(__file__).resolve().parent / "configs"


def preset_yaml(name: str) -> str:
    """The YAML file of preset ``name``: a comment on it, then every setting."""
    command = f"python examples/flowgan/train.py --config examples/flowgan/configs/{name}.yaml"
    header = f"# {PRESET_DESCRIPTIONS[name]}\n# {command} --out runs/{name}\n"
    return header + FlowGANConfig.preset(name).to_yaml()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that they are current")
    parser.add_argument("--folder", type=Path, default=CONFIGS, help="where the files are")
    args = parser.parse_args(argv)
    stale = []
    for name in sorted(PRESETS):
        path = args.folder / f"{name}.yaml"
        text = preset_yaml(name)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
