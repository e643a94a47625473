"""Compare two FlowGAN run folders tensor by tensor: are their checkpoints bit-identical?

For checking that a restructuring of the code changes no number: train the same command at two
commits on one machine (``train.threads=1``), then

    python scripts/same_weights.py runs/before runs/after

compares ``last.pt`` and ``best.pt`` (weights, weight average, both optimisers' states, the
training state) and ``log.csv`` (every cell but the timings). Weights of checkpoints written
before the generator became a ``LatentPointFlow`` are renamed first
(``pcflow.recipes.flowgan.upgrade_weights``). Exit status 1 if anything differs.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

from pcflow.recipes.flowgan import upgrade_weights
from pcflow.utils import load_checkpoint


def _differences(a: dict, b: dict) -> list[str]:
    found = []
    for key in ("model", "average"):
        if a.get(key) is None or b.get(key) is None:
            if (a.get(key) is None) != (b.get(key) is None):
                found.append(f"{key}: in one run only")
            continue
        decoder = a["config"]["model"]["decoder"]
        left, right = upgrade_weights(a[key], decoder), upgrade_weights(b[key], decoder)
        if left.keys() != right.keys():
            found.append(f"{key}: other names")
        found += [f"{key}.{n}" for n in left if n in right and not torch.equal(left[n], right[n])]
    for key in ("generator_optimizer", "critic_optimizer"):
        if a.get(key) is None or b.get(key) is None:
            continue
        for index, state in a[key]["state"].items():
            other = b[key]["state"][index]
            found += [
                f"{key}[{index}].{name}"
                for name in state
                if not torch.equal(torch.as_tensor(state[name]), torch.as_tensor(other[name]))
            ]
    if a.get("trainer") != b.get("trainer"):
        found.append("trainer state")
    return found


def main(argv: list[str] | None = None) -> int:
    before, after = (Path(p) for p in (argv or sys.argv[1:]))
    differences = []
    for name in ("last.pt", "best.pt"):
        path_a, path_b = before / "checkpoints" / name, after / "checkpoints" / name
        if path_a.exists() or path_b.exists():
            found = _differences(load_checkpoint(path_a), load_checkpoint(path_b))
            differences += [f"{name}: {item}" for item in found]
            print(f"{name}: {'identical' if not found else f'{len(found)} differences'}")
    rows = [list(csv.DictReader(open(folder / "log.csv"))) for folder in (before, after)]
    cells = [
        (row_a["step"], key)
        for row_a, row_b in zip(*rows)
        for key in row_a
        if key != "seconds_in_epoch" and row_a[key] != row_b.get(key)
    ]
    same_length = len(rows[0]) == len(rows[1])
    print(
        f"log.csv: {len(rows[0])} rows, {len(cells)} differing cells"
        + ("" if same_length else ", other lengths")
    )
    return 1 if differences or cells or not same_length else 0


if __name__ == "__main__":
    sys.exit(main())
