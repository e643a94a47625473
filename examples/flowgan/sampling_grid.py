"""Score a FlowGAN checkpoint's sampling settings (temperature, trim, spread) from shared draws.

Each shape's draws are made once per temperature, as many as the most demanding setting needs,
with each draw's log-density under the model; a setting (trim q, spread s) then takes the first
``ceil(s * n / (1 - q))`` draws (independent draws, so a prefix is a sample of that size), keeps
the ``s * n`` densest and thins them to ``n`` by farthest point sampling: what
`ConditionalPointFlow.sample` does, without drawing again for every setting. Use it on the
validation split to choose ``eval.temperature``, ``eval.trim`` and ``eval.spread``; report the
chosen setting with ``evaluate.py``.

Usage::

    python examples/flowgan/sampling_grid.py --checkpoint runs/quick/checkpoints/last.pt \\
        --split val --temperature 1 0.9 --trim 0 0.05 0.1 --spread 1 2 \\
        --out runs/quick/val-grid.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import evaluation_dataset
from torch import Tensor
from torch.utils.data import Dataset

from pcflow.cli import check_sampling_arguments
from pcflow.flows import num_draws, select_draws
from pcflow.metrics import evaluate_reconstruction
from pcflow.recipes.flowgan import FlowGAN, load_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    parser.add_argument("--trim", type=float, nargs="+", default=[0.0, 0.05, 0.1])
    parser.add_argument("--spread", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def sampling_grid(
    model: FlowGAN,
    dataset: Dataset,
    temperatures: list[float],
    trims: list[float],
    spreads: list[int],
    *,
    split: str = "val",
    seed: int = 0,
    progress: bool = False,
    report: bool = False,
) -> dict[str, dict]:
    """Score every (temperature, trim, spread) setting of ``model`` on ``dataset``.

    Returns:
        ``{"T<t>-q<q>-s<s>": evaluate_reconstruction's result as a dict}``. A grid of one
        temperature, trim 0 and spread 1 scores exactly what ``model.reconstruct`` samples at
        that temperature from the same seed.
    """
    config = model.config
    num_points = config.eval.num_points
    most = max(num_draws(num_points, q, s) for q in trims for s in spreads)
    flow, scale = model.generator.flow, config.model.cloud_scale
    cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def draws_of(batch: dict, temperature: float) -> tuple[Tensor, Tensor]:
        key = (temperature, *zip(batch["model_id"], batch["view"].tolist()))
        if key not in cache:
            with torch.no_grad():
                z = model.image_latent(batch["image"])
                points = flow.sample(most, z, temperature=temperature)
                cache[key] = points * scale, flow.log_prob(points, z, per_point=True)
        return cache[key]

    results = {}
    torch.manual_seed(seed)
    for temperature in temperatures:
        for trim in trims:
            for spread in spreads:

                def predict(
                    batch: dict, n: int, t: float = temperature, q: float = trim, s: int = spread
                ) -> Tensor:
                    draws, log_prob = draws_of(batch, t)
                    return select_draws(draws, n, log_prob=log_prob, trim=q, spread=s)[0]

                eval_config = dataclasses.replace(
                    config.eval, temperature=temperature, trim=trim, spread=spread
                )
                result = evaluate_reconstruction(
                    predict, dataset, **eval_config.protocol(), split=split, progress=progress
                )
                name = f"T{float(temperature)}-q{trim:g}-s{spread}"
                results[name] = result.to_dict()
                if report:
                    mean = result.mean
                    print(
                        f"{name}: CD {mean['CD'] * 1e3:.3f} EMD {mean['EMD'] * 1e2:.3f} "
                        f"F {mean['F-score'] * 100:.2f}",
                        flush=True,
                    )
        cache.clear()  # this temperature's draws are done with
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    values = itertools.zip_longest(args.temperature, args.trim, args.spread)
    try:  # every value of each list, by the ranges the other programs check
        for temperature, trim, spread in values:
            settings = {"temperature": temperature, "trim": trim, "spread": spread}
            check_sampling_arguments(argparse.Namespace(**settings))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = load_model(args.checkpoint)
    dataset = evaluation_dataset(model.config, args.split, model.config.eval.num_points)
    results = sampling_grid(
        model, dataset, args.temperature, args.trim, args.spread, split=args.split,
        seed=args.seed, progress=not args.no_progress, report=True,
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
