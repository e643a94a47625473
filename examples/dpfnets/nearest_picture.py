"""One picture for several categories: each model's generated shapes beside their nearest
training shapes by Chamfer distance, a row per model (the docs' `dpfnets-nearest.png`).

Example:

    python examples/dpfnets/nearest_picture.py --out docs/images/dpfnets-nearest.png \\
        runs/dpf/airplane-flow-s0/checkpoints/best.pt runs/dpf/car-flow-s0/checkpoints/best.pt \\
        runs/dpf/chair-flow-s0/checkpoints/best.pt

Each model samples with its checkpoint's sampling (`eval.*`) unless the sampling flags say
otherwise; shapes and the training clouds have 2,048 points.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pcflow.cli import add_sampling_arguments, command_line_program, sampling_settings
from pcflow.data import build_dataset
from pcflow.metrics import category_clouds
from pcflow.recipes.dpfnets import draw_nearest_training, generate, load_model


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="one model per category")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--per-category", type=int, default=4, help="shapes per row")
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    if args.per_category < 1:
        raise ValueError(f"--per-category must be at least 1, got {args.per_category}")
    generated, train = {}, {}
    for path in args.checkpoints:
        model, config = load_model(path)
        category = config.data.categories[0]
        train_set = build_dataset(config.data, "train", images=False, progress=False)
        train[category] = category_clouds(train_set, args.points, args.seed)[category]
        sampling = sampling_settings(args, config.eval)
        generated[category] = generate(model, args.per_category, args.points, seed=args.seed,
                                       sampling=sampling)  # fmt: skip
    path = draw_nearest_training(generated, train, args.out, per_category=args.per_category)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
