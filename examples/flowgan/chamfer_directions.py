"""Split a reconstruction's Chamfer distance into its two directions, per category.

- **accuracy**: the mean over predicted points of the squared distance to the nearest true
  point (high when points stray off the surface or sit on parts the shape does not have);
- **completeness**: the mean over true points of the squared distance to the nearest predicted
  point (high when parts of the shape are missed).

Their sum is the CD of `evaluate.py`'s tables. FlowGAN samples at the checkpoint's evaluation
settings unless ``--temperature/--trim/--spread`` say otherwise; ``--bound`` decodes the true
cloud's posterior latent instead of the image's (the autoencoding bound). A PSGN-style
checkpoint predicts its fixed cloud.

Usage::

    python examples/flowgan/chamfer_directions.py --checkpoint runs/standard/checkpoints/last.pt \\
        --split val --out runs/standard/chamfer-directions-val.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import evaluation_dataset
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pcflow.cli import add_sampling_arguments, command_line_program, sampling_settings
from pcflow.losses import chamfer_distance
from pcflow.metrics import Predictor, check_prediction
from pcflow.recipes.flowgan import load_model

DIRECTIONS = ("accuracy", "completeness")


def chamfer_directions(
    predict: Predictor, dataset: Dataset, num_points: int, batch_size: int = 16
) -> dict[str, dict[str, float]]:
    """``{category: {"accuracy": a, "completeness": c}}``, means over the category's samples,
    plus ``"mean"`` over categories; ``a + c`` is the Chamfer distance (squared distances).

    Arguments:
        predict: ``predict(batch, num_points) -> (B, num_points, 3)`` unit-scale clouds.
        dataset: An evaluation split whose ``"points"`` hold ``num_points`` points.
        num_points: Points per predicted cloud.
        batch_size: Samples per call of ``predict``.

    Raises:
        ValueError: If the dataset is empty, or a prediction fails `check_prediction`.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the evaluation dataset is empty")
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    one_way = {"batch_reduction": None, "single_directional": True}
    for batch in DataLoader(dataset, batch_size=batch_size):  # type: ignore[arg-type]
        truth, names = batch["points"], batch["category_name"]
        pred = predict(batch, num_points)
        check_prediction(pred, truth, names, num_points)
        accuracy = chamfer_distance(pred, truth, **one_way)[0]
        completeness = chamfer_distance(truth, pred, **one_way)[0]
        for name, a, c in zip(names, accuracy.tolist(), completeness.tolist()):
            sums[name]["accuracy"] += a
            sums[name]["completeness"] += c
            sums[name]["count"] += 1
    table = {
        name: {key: values[key] / values["count"] for key in DIRECTIONS}
        for name, values in sorted(sums.items())
    }
    count = len(table)
    table["mean"] = {key: sum(row[key] for row in table.values()) / count for key in DIRECTIONS}
    return table


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--bound", action="store_true", help="decode the true cloud's latent")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flow's draws")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    config = model.config
    settings = sampling_settings(args, config.eval)
    num_points = config.eval.num_points
    dataset = evaluation_dataset(config, args.split, num_points)
    is_flow = config.model.decoder == "flow"
    if args.bound and not is_flow:
        raise ValueError("--bound needs a FlowGAN checkpoint; this one is PSGN-style")

    def predict(batch: dict, n: int) -> Tensor:
        if not is_flow:
            return model.reconstruct(batch["image"], n)
        if args.bound:
            return model.autoencode(batch["points"], n, settings)
        return model.reconstruct(batch["image"], n, settings)

    torch.manual_seed(args.seed)
    table = chamfer_directions(predict, dataset, num_points)
    print("| category | accuracy x1e3 | completeness x1e3 | CD x1e3 |\n| --- | --- | --- | --- |")
    for name, row in table.items():
        a, c = row["accuracy"] * 1e3, row["completeness"] * 1e3
        print(f"| {name} | {a:.3f} | {c:.3f} | {a + c:.3f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"split": args.split, "bound": args.bound, "sampling": settings, "table": table}
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
