"""Evaluate trained FlowGAN checkpoints on the held-out split: CD, EMD, F-score per category.

Examples:

    pcflow-flowgan evaluate --checkpoint runs/quick/checkpoints/last.pt \\
        --out runs/quick/eval
    # compare with the flow-only ablation, the PSGN-style baseline and the mean-cloud baseline
    pcflow-flowgan evaluate --checkpoint runs/quick/checkpoints/last.pt \\
        --compare flow-only=runs/flow-only/checkpoints/last.pt \\
        --compare PSGN=runs/psgn/checkpoints/last.pt --baselines --out runs/compare

Prints the metrics table(s) (Markdown) and writes OUT/metrics.json, OUT/table.md and
OUT/pictures.png (input image | predictions | truth, seen from the image's viewpoint) and
OUT/gallery.html, the same turned in a browser, FlowGAN's points coloured by their log-density.

For FlowGAN checkpoints it also prints the diagnosis (`pcflow.recipes.flowgan.
diagnose_reconstruction`): per category, the metrics of the *autoencoding bound* (the flow
decoding the posterior mean of the true cloud) beside the image reconstruction's, and the
distance between the image Gaussian's mean and that posterior mean; `--no-diagnosis` skips it.
`--temperature T` scales the flow's base noise, `--trim Q` drops that fraction of its least
dense draws and `--spread S` thins S draws per point to evenly spread points by farthest point
sampling (defaults: the checkpoint's eval.temperature, eval.trim and eval.spread).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from pcflow.cli import (
    add_sampling_arguments,
    add_set_argument,
    check_output_folder,
    command_line_program,
    sampling_settings,
)
from pcflow.data import select_per_category
from pcflow.flows import SamplingOptions
from pcflow.metrics import MeanCloudBaseline, comparison_table, evaluate_reconstruction
from pcflow.recipes.flowgan import (
    FlowGANConfig,
    build_dataset,
    diagnose_reconstruction,
    load_model,
)
from pcflow.utils import CheckpointError
from pcflow.viz import draw_reconstructions, view_reconstructions


def _name(config: FlowGANConfig) -> str:
    if config.model.decoder == "psgn":
        return "PSGN-style"
    return "FlowGAN" if config.model.adversarial else "flow-only"


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pcflow-flowgan evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint (last.pt)")
    parser.add_argument("--name", default=None, help="the checkpoint's column name")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="another checkpoint to evaluate on the same data (repeatable)",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also evaluate the mean-training-cloud-per-category baseline",
    )
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--data", default=None, help="override the data source (path)")
    add_set_argument(parser, "override evaluation or data settings, e.g. eval.emd_method=auction")
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON, table, picture")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled clouds")
    add_sampling_arguments(parser)
    parser.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="skip the autoencoding bound and latent distance of FlowGAN checkpoints",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.out is not None:
        check_output_folder(args.out)  # before the minutes of evaluation, not after

    try:
        entries = [(args.name, args.checkpoint)]
        for item in args.compare:
            if "=" not in item:
                raise SystemExit(f"error: --compare takes NAME=CHECKPOINT, got {item!r}")
            name, path = item.split("=", 1)
            entries.append((name, Path(path)))
        models = {}
        for name, path in entries:
            model = load_model(path)
            models[name or _name(model.config)] = model
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if len(models) != len(entries):
        print("error: two checkpoints have the same name; name them with NAME=", file=sys.stderr)
        return 2

    first = next(iter(models.values())).config
    try:
        config = first.with_overrides(args.overrides)
    except (KeyError, TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.data is not None:
        config.data.source = args.data
    eval_config = config.eval
    try:
        sampling = sampling_settings(args, eval_config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    eval_config.temperature, eval_config.trim = sampling.temperature, sampling.trim
    eval_config.spread, eval_config.draws = sampling.spread, sampling.draws
    data_config = config.with_overrides([f"data.num_points={eval_config.num_points}"])
    dataset = build_dataset(data_config, args.split, evaluation=True, progress=not args.no_progress)
    progress = not args.no_progress

    results = {}
    diagnoses = {}
    timings = {}
    for name, model in models.items():
        started = time.perf_counter()
        if hasattr(model, "autoencode") and not args.no_diagnosis:
            diagnosis = diagnose_reconstruction(
                model, dataset, eval_config, split=args.split, progress=progress, seed=args.seed
            )
            diagnoses[name] = diagnosis
            results[name] = diagnosis.image
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                results[name] = evaluate_reconstruction(
                    lambda batch, n, model=model: model.reconstruct(
                        batch["image"], n, _sampling_of(model, sampling)
                    ),
                    dataset,
                    **eval_config.protocol(),
                    split=args.split,
                    progress=progress,
                )
            results[name].settings.update(_sampling_of(model, sampling).keywords())
            del results[name].settings["chunk_size"]
        timings[name] = time.perf_counter() - started
    if args.baselines:
        started = time.perf_counter()
        train_set = build_dataset(data_config, "train", progress=False)
        baseline = MeanCloudBaseline(eval_config.num_points, seed=args.seed).fit(train_set)
        results["mean cloud"] = evaluate_reconstruction(
            baseline.predict, dataset, **eval_config.protocol(), split=args.split,
            progress=progress,
        )  # fmt: skip
        timings["mean cloud"] = time.perf_counter() - started

    if len(results) == 1:
        ((name, result),) = results.items()
        text = f"## {name} on the {args.split} split\n\n{result.table()}"
    else:
        text = comparison_table(results)
    for name, diagnosis in diagnoses.items():
        text += f"\n\n## Diagnosis of {name}: image vs autoencoding bound\n\n{diagnosis.table()}"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text + "\n")
        payload = {
            name: {**result.to_dict(), "seconds": round(timings[name], 1)}
            for name, result in results.items()
        }
        for name, diagnosis in diagnoses.items():
            payload[name]["diagnosis"] = {
                "bound": diagnosis.bound.to_dict(),
                "latent_distance": diagnosis.latent_distance,
                "latent_norm": diagnosis.latent_norm,
                "temperature": diagnosis.temperature,
                "trim": diagnosis.trim,
                "spread": diagnosis.spread,
            }
        payload["checkpoints"] = {name: str(path) for name, path in entries}
        (args.out / "metrics.json").write_text(json.dumps(payload, indent=2))
        picks = [dataset[i] for i in select_per_category(dataset, 1)]
        settings = {"num_points": eval_config.num_points, "seed": args.seed}
        view_reconstructions(
            models, picks, args.out / "gallery.html", **settings, sampling=sampling,
            title=f"{', '.join(models)} on the {args.split} split: input, prediction, truth",
        )  # fmt: skip
        try:
            draw_reconstructions(
                models, picks, args.out / "pictures.png", **settings, sampling=sampling,
                examples_per_row=2 if len(models) == 1 else 1,
            )  # fmt: skip
        except ImportError as error:
            print(f"no picture: {error}", file=sys.stderr)
        print(
            f"\nwrote {args.out / 'metrics.json'}, table.md, pictures.png, gallery.html",
            file=sys.stderr,
        )
    return 0


def _sampling_of(model, sampling: SamplingOptions) -> SamplingOptions:
    # The PSGN-style baseline regresses its points: it neither tempers, trims nor thins (the
    # defaults are the model's own samples).
    return sampling if hasattr(model, "autoencode") else SamplingOptions()


if __name__ == "__main__":
    sys.exit(main())
