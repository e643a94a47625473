"""Sample new shapes from a trained DPF-Nets model: N clouds as PLY files and a picture.

Examples:

    python examples/dpfnets/sample.py --checkpoint runs/dpf-airplane/checkpoints/best.pt \\
        --num-shapes 8 --num-points 4096 --out samples/airplane
    # each shape beside its nearest training shape by Chamfer distance (reads the training data)
    python examples/dpfnets/sample.py --checkpoint runs/dpf-airplane/checkpoints/best.pt \\
        --nearest --out samples/airplane-nearest

Writes OUT/shape_000.ply, ... and OUT/samples.png (OUT/nearest.png with --nearest). Files
already there are refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pcflow.cli import (
    add_sampling_arguments,
    check_output_folder,
    command_line_program,
    sampling_settings,
)
from pcflow.data import build_dataset
from pcflow.io import write_ply
from pcflow.metrics import category_clouds
from pcflow.recipes.dpfnets import draw_nearest_training, generate, load_model
from pcflow.viz import plot_point_clouds


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint (best.pt)")
    parser.add_argument("--num-shapes", type=int, default=8, help="shapes to sample")
    parser.add_argument("--num-points", type=int, default=2048, help="points per shape")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--out", type=Path, default=Path("samples"), help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace files in OUT")
    parser.add_argument(
        "--nearest", action="store_true",
        help="draw each shape beside its nearest training shape by Chamfer distance",
    )  # fmt: skip
    parser.add_argument("--data", default=None, help="the training data (default: the run's)")
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("num_shapes", "num_points"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be at least 1, got {getattr(args, name)}")
    names = [f"shape_{i:03d}.ply" for i in range(args.num_shapes)]
    names.append("nearest.png" if args.nearest else "samples.png")
    held = [n for n in names if (args.out / n).exists()]
    if held and not args.overwrite:
        raise FileExistsError(
            f"{args.out} already holds {', '.join(held[:3])}{' ...' if len(held) > 3 else ''}; "
            "choose another --out or pass --overwrite"
        )
    model, config = load_model(args.checkpoint)
    sampling = sampling_settings(args, config.eval)
    check_output_folder(args.out)
    clouds = generate(model, args.num_shapes, args.num_points, seed=args.seed,
                      sampling=sampling)  # fmt: skip
    for name, cloud in zip(names, clouds):
        write_ply(args.out / name, cloud.numpy())
    if args.nearest:
        if args.data is not None:
            config.data.source = args.data
        train = build_dataset(config.data, "train", images=False, progress=False)
        reference = category_clouds(train, args.num_points, seed=args.seed)
        category = "/".join(reference)
        train_clouds = {category: torch.cat(list(reference.values()))}
        path = draw_nearest_training({category: clouds}, train_clouds, args.out / names[-1],
                                     per_category=args.num_shapes)  # fmt: skip
    else:
        path = args.out / names[-1]
        titles = [f"shape {i}" for i in range(args.num_shapes)]
        plot_point_clouds(list(clouds), titles, path=path, columns=min(args.num_shapes, 8))
    print(f"[sample] {args.num_shapes} shapes of {args.num_points} points in {args.out}; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
