"""The Chamfer distance and F-score a perfect sampler would reach: two independent samples of
the same true surface (a sample's ``points`` against its ``points_target``), per category.

A flow samples points independently, so even the true distribution scores this, not zero; a
regressor such as the PSGN-style baseline places its points and is not bound by it.

Usage::

    python examples/flowgan/sampling_floor.py --split val --num-points 512 1024 2500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from common import evaluation_dataset

from pcflow.data import sample_categories, select_per_category
from pcflow.losses import chamfer_distance
from pcflow.metrics import f_score
from pcflow.recipes.flowgan import FlowGANConfig


def sampling_floor(
    config: FlowGANConfig, split: str, num_points: int, per_category: int | None
) -> dict[str, tuple[float, float]]:
    """``{category: (CD, F-score)}`` between two independent samples of each true surface."""
    dataset = evaluation_dataset(config, split, num_points)
    categories = sample_categories(dataset)
    values: dict[str, list[tuple[float, float]]] = {}
    for index in select_per_category(dataset, per_category):
        sample = dataset[index]
        a, b = sample["points"][None], sample["points_target"][None]
        chamfer = float(chamfer_distance(a, b)[0])
        score = float(f_score(a, b, threshold=config.eval.fscore_threshold).f_score)
        values.setdefault(categories[index], []).append((chamfer, score))
    return {name: tuple(np.mean(v, axis=0)) for name, v in sorted(values.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--num-points", type=int, nargs="+", default=[512, 1024, 2500])
    parser.add_argument("--per-category", type=int, default=12)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = FlowGANConfig.preset(args.preset)
    print("| points | CD x1e3 | F-score % |\n| --- | --- | --- |")
    for n in args.num_points:
        table = sampling_floor(config, args.split, n, args.per_category)
        chamfer = np.mean([v[0] for v in table.values()]) * 1e3
        score = np.mean([v[1] for v in table.values()]) * 100
        print(f"| {n} | {chamfer:.2f} | {score:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
