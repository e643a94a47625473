"""Score sampling settings of a trained DPF-Nets model on the validation split, to choose one.

Each setting generates as many shapes as the split holds (one category, the model's) and is
scored by 1-NNA, COV and MMD with the Chamfer distance under PointFlow's protocol; with
--autoencode the split's own clouds are decoded from their posterior means instead (what the
decoder alone reaches). This is how `results/RULE.md` chose the quick preset's sampling.

Example:

    python examples/dpfnets/screen_sampling.py --checkpoint runs/dpf/checkpoints/best.pt \\
        --setting 1,0,1,random --setting 1,0.15,2,random --setting 1,0.1,1,sobol

A setting is ``T,trim,spread,draws``. Prints one line per setting and the oracle's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pcflow.cli import command_line_program
from pcflow.data import build_dataset
from pcflow.flows import SamplingOptions
from pcflow.metrics import PointFlowStatistics, category_clouds, oracle_clouds, protocol_scores
from pcflow.recipes.dpfnets import generate, load_model


def parse_setting(text: str) -> SamplingOptions:
    """``"T,trim,spread,draws"`` as `pcflow.flows.SamplingOptions` (checked)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a setting is T,trim,spread,draws; got {text!r}")
    try:
        return SamplingOptions(float(parts[0]), float(parts[1]), int(parts[2]), draws=parts[3])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"setting {text!r}: {error}") from None


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--setting", type=parse_setting, action="append", required=True,
                        help="T,trim,spread,draws (repeat for each candidate)")  # fmt: skip
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--autoencode", action="store_true", help="decode the split's clouds")
    args = parser.parse_args(argv)

    model, config = load_model(args.checkpoint)
    category = config.data.categories[0]
    split = build_dataset(config.data, args.split, images=False, progress=False)
    train = build_dataset(config.data, "train", images=False, progress=False)
    reference = category_clouds(split, args.points, args.seed)[category]
    training = category_clouds(train, args.points, args.seed)[category]
    statistics = PointFlowStatistics.of(training)

    def report(name: str, clouds: torch.Tensor) -> None:
        scores = protocol_scores(clouds, reference, statistics=statistics, metrics=("cd",),
                                 num_points=args.points)  # fmt: skip
        print(f"{name:45s} 1-NNA-CD {100 * scores['1-NNA-CD']:5.1f}  "
              f"COV-CD {100 * scores['COV-CD']:5.1f}  MMD-CD {1e3 * scores['MMD-CD']:6.2f}",
              flush=True)  # fmt: skip

    report("oracle", oracle_clouds(training, reference.shape[0], args.seed))
    for sampling in args.setting:
        if args.autoencode:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                clouds = model.autoencode(reference, args.points, sampling)
        else:
            clouds = generate(model, reference.shape[0], args.points, seed=args.seed,
                              sampling=sampling)  # fmt: skip
        report(("autoencode " if args.autoencode else "generate ") + sampling.describe(), clouds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
