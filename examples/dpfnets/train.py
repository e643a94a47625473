"""Train DPF-Nets (autoencoding and generation, one model per category) from a preset or config.

Examples:

    # the quick preset: the built-in points-only data (generated on first use), airplanes
    python examples/dpfnets/train.py --out runs/dpf-airplane
    python examples/dpfnets/train.py --out runs/dpf-car --set "data.categories=[car]"
    # the ablation: the same model with a standard normal prior instead of the latent flow
    python examples/dpfnets/train.py --out runs/dpf-airplane-normal --set model.prior=normal
    # continue a killed run exactly where it stopped
    python examples/dpfnets/train.py --out runs/dpf-airplane --resume
    # the public configuration on DPF-Nets' ShapeNetCore55v2 file
    python examples/dpfnets/train.py --preset paper --data /data/ShapeNetCore55v2_meshes.h5 \\
        --set "data.categories=[airplane]" --out runs/paper-airplane

Outputs in --out: config.yaml, checkpoints/last.pt and best.pt, log.csv, tensorboard/,
pictures/epoch_XXX.png (shapes sampled from the prior).
"""

from __future__ import annotations

import argparse
import sys
import time

from pcflow.cli import (
    add_config_arguments,
    add_run_arguments,
    check_output_folder,
    command_line_program,
    run_config,
)
from pcflow.data import build_dataset
from pcflow.recipes.dpfnets import DPFNetsConfig, Trainer
from pcflow.training import check_run_folder


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_arguments(parser, list(DPFNetsConfig.PRESETS))
    add_run_arguments(parser, "runs/dpfnets")
    args = parser.parse_args(argv)
    config = run_config(args, DPFNetsConfig)
    check_run_folder(args.out, resume=args.resume, overwrite=args.overwrite)
    check_output_folder(args.out)
    print(f"[train] output folder {args.out}", file=sys.stderr)
    progress = not args.no_progress
    train_set = build_dataset(config.data, "train", images=False, progress=progress)
    val_set = build_dataset(config.data, "val", sample_seed=config.train.seed, images=False,
                            progress=False)  # fmt: skip
    trainer = Trainer(config, args.out, train_set, val_set if len(val_set) else None,
                      resume=args.resume, overwrite=args.overwrite, progress=progress)  # fmt: skip
    started = time.perf_counter()
    state = trainer.fit(max_steps=args.max_steps)
    best = (
        f"best val NELBO per point {state.best_metric:.4f} (epoch {state.best_epoch})"
        if state.best_epoch >= 0
        else "not validated yet"
    )
    print(
        f"[train] step {state.global_step}, epoch {state.epoch}/{config.train.epochs} done, "
        f"{time.perf_counter() - started:.0f} s; skipped steps {state.skipped_steps}; {best}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
