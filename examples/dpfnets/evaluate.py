"""Evaluate a trained DPF-Nets model: PointFlow's generation protocol per category (with the
oracle and the standard-normal-prior ablation) and autoencoding in FlowGAN's units.

Examples:

    python examples/dpfnets/evaluate.py --checkpoint runs/dpf-airplane/checkpoints/best.pt \\
        --ablation runs/dpf-airplane-normal/checkpoints/best.pt --out runs/dpf-airplane/eval
    # LION's per-shape box normalisation instead of PointFlow's
    python examples/dpfnets/evaluate.py --checkpoint runs/dpf-airplane/checkpoints/best.pt \\
        --set eval.normalization=lion-per-shape --out runs/dpf-airplane/eval

Prints the tables (Markdown) and writes OUT/generation-<split>-<normalization>.json and .md,
OUT/autoencoding-<split>.json and OUT/nearest-<split>.png (generated shapes beside their
nearest training shapes); OUT/cache/ keeps the finished blocks of distances, so an interrupted
evaluation resumes. Existing results are refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from pcflow.cli import (
    add_sampling_arguments,
    add_set_argument,
    check_output_folder,
    command_line_program,
    sampling_settings,
)
from pcflow.data import build_dataset
from pcflow.metrics import category_clouds, generation_protocol
from pcflow.recipes.dpfnets import (
    draw_nearest_training,
    evaluate_autoencoding,
    generate,
    load_model,
)


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint (best.pt)")
    parser.add_argument(
        "--ablation", type=Path, default=None,
        help="the same model trained with model.prior=normal: its row in every table",
    )  # fmt: skip
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--data", default=None, help="override the data source (path)")
    add_set_argument(parser, "override eval or data settings, e.g. eval.emd_method=exact")
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON, tables, picture")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results in OUT")
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and subsets")
    parser.add_argument("--no-autoencoding", action="store_true", help="generation only")
    parser.add_argument(
        "--metrics", nargs="+", default=["cd", "emd", "jsd"], choices=["cd", "emd", "jsd"],
        help="the protocol's distances (default: all; EMD costs most of the time)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)

    model, config = load_model(args.checkpoint)
    config = config.with_overrides(args.overrides)
    if args.data is not None:
        config.data.source = args.data
    evaluation, progress = config.eval, not args.no_progress
    sampling = sampling_settings(args, evaluation)
    evaluation.temperature, evaluation.trim = sampling.temperature, sampling.trim
    evaluation.spread, evaluation.draws = sampling.spread, sampling.draws
    stem = f"{args.split}-{evaluation.normalization}"
    outputs = [f"generation-{stem}.json", f"generation-{stem}.md", f"nearest-{args.split}.png"]
    if not args.no_autoencoding:
        outputs.append(f"autoencoding-{args.split}.json")
    held = [name for name in outputs if (args.out / name).exists()]
    if held and not args.overwrite:
        raise FileExistsError(f"{args.out} already holds {', '.join(held)}; pass --overwrite")
    check_output_folder(args.out)
    models = {"DPF-Nets": model}
    if args.ablation is not None:
        ablation, ablation_config = load_model(args.ablation)
        prior = ablation_config.model.prior
        if prior != "normal":
            raise ValueError(f"--ablation {args.ablation} has model.prior={prior!r}, not 'normal'")
        models["ablation: N(0, I) prior"] = ablation

    started = time.perf_counter()
    points = evaluation.generation_points
    test_set = build_dataset(config.data, args.split, images=False, progress=progress)
    train_set = build_dataset(config.data, "train", images=False, progress=False)
    test = category_clouds(test_set, points, args.seed, evaluation.max_per_category)
    train = category_clouds(train_set, points, args.seed)

    def generator(row_model):  # one model per category, as the paper trains them
        return lambda category, count: generate(
            row_model, count, points, seed=args.seed, sampling=sampling,
            batch_size=evaluation.batch_size,
        )  # fmt: skip

    table = generation_protocol(
        {name: generator(m) for name, m in models.items()}, test, train,
        normalization=evaluation.normalization, seed=args.seed, emd_method=evaluation.emd_method,
        metrics=tuple(args.metrics), progress=progress,
        cache_dir=args.out / "cache",  # the test set's own distances are computed once
    )  # fmt: skip
    table.settings.update(split=args.split, points=points, checkpoint=str(args.checkpoint),
                          sampling=sampling.describe())  # fmt: skip
    markdown = table.to_markdown()
    print(markdown)
    (args.out / outputs[0]).write_text(json.dumps(
        {"scores": table.scores, "settings": table.settings}, indent=2))  # fmt: skip
    (args.out / outputs[1]).write_text(markdown)
    generated = {c: generate(model, 4, points, seed=args.seed, sampling=sampling) for c in test}
    draw_nearest_training(generated, train, args.out / outputs[2])

    if not args.no_autoencoding:
        data = dataclasses.replace(config.data, num_points=evaluation.num_points)
        dataset = build_dataset(data, args.split, sample_seed=args.seed, images=False,
                                progress=False)  # fmt: skip
        result = evaluate_autoencoding(model, config, dataset, split=args.split, seed=args.seed,
                                       progress=progress)  # fmt: skip
        result.save_json(args.out / outputs[3])
        print(f"**autoencoding ({args.split})**\n\n{result.table()}")
    print(f"[evaluate] {time.perf_counter() - started:.0f} s; results in {args.out}",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
