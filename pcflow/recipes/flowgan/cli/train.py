"""Train FlowGAN (or its flow-only ablation, or the PSGN-style baseline) from a preset or config.

Examples:

    # the quick preset on the built-in synthetic data (generated on first use)
    pcflow-flowgan train --preset quick --out runs/quick
    # continue a killed run exactly where it stopped
    pcflow-flowgan train --preset quick --out runs/quick --resume
    # the flow-only ablation and the PSGN-style baseline, same budget
    pcflow-flowgan train --out runs/flow-only --set model.adversarial=false
    pcflow-flowgan train --out runs/psgn --set model.decoder=psgn
    # the paper's settings on ShapeNet, 2 processes (GPUs, or CPU with gloo)
    torchrun --nproc_per_node 2 -m pcflow.recipes.flowgan train --preset paper \\
        --data /data/shapenet --out runs/paper

Outputs in --out: config.yaml, checkpoints/last.pt and best.pt, log.csv, tensorboard/,
pictures/epoch_XXX.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

from pcflow.cli import (
    add_config_arguments,
    add_run_arguments,
    check_output_folder,
    command_line_program,
    run_config,
)
from pcflow.recipes.flowgan import FlowGANConfig, Trainer, build_dataset
from pcflow.training import check_run_folder
from pcflow.utils import CheckpointError


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pcflow-flowgan train", description=__doc__.split("\n")[0]
    )
    add_config_arguments(parser, list(FlowGANConfig.PRESETS))
    add_run_arguments(parser, "runs/flowgan")
    parser.add_argument(
        "--save-rank-weights",
        action="store_true",
        help="at the end, every process writes its weights to OUT/rank_weights/rank<R>.pt "
        "(to check that distributed ranks stayed in sync)",
    )
    args = parser.parse_args(argv)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if distributed else 0
    try:
        config = run_config(args, FlowGANConfig, notice=rank == 0)
        check_run_folder(args.out, resume=args.resume, overwrite=args.overwrite)
        if rank == 0:
            check_output_folder(args.out)
            print(f"[train] output folder {args.out}", file=sys.stderr)
        # Rank 0 generates the synthetic data (first use); the others wait, then read it.
        if rank == 0:
            train_set = build_dataset(config, "train", progress=not args.no_progress)
            val_set = build_dataset(config, "val", evaluation=True, progress=False)
        if distributed:
            dist.barrier()
        if rank != 0:
            train_set = build_dataset(config, "train", progress=False)
            val_set = build_dataset(config, "val", evaluation=True, progress=False)
        if len(val_set) == 0:
            val_set = None
        trainer = Trainer(
            config, args.out, train_set, val_set, resume=args.resume, overwrite=args.overwrite,
            progress=not args.no_progress,
        )  # fmt: skip
        started = time.perf_counter()
        state = trainer.fit(max_steps=args.max_steps)
        if args.save_rank_weights:
            path = args.out / "rank_weights" / f"rank{rank}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(trainer.model.state_dict(), path)
        if rank == 0:
            best = (
                f"best val Chamfer {state.best_metric:.5f} (epoch {state.best_epoch})"
                if state.best_epoch >= 0
                else "not validated yet"
            )
            print(
                f"[train] step {state.global_step}, epoch {state.epoch}/{config.train.epochs} "
                f"done, {time.perf_counter() - started:.0f} s; skipped steps "
                f"{state.skipped_steps}; {best}; checkpoints in {args.out / 'checkpoints'}",
                file=sys.stderr,
            )
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
