"""Time FlowGAN training steps in one process, alternating variants, as a Markdown table.

Machines drift (a virtual machine's speed varies by tens of percent from one run to the next),
so the variants are timed in turn within one process, several rounds, and compared pair by pair:

- subnormal floats kept or flushed to zero (`Trainer.fit` flushes them on the CPU);
- Adam as torch's loop over the tensors or fused (`Trainer` builds it fused).

Each is timed from a fresh model and, with ``--checkpoint`` (a `last.pt` of the same preset,
e.g. one taken late in a run), from a trained state: subnormals build up as training goes on.

Usage::

    python benchmarks/flowgan_step.py --preset quick --threads 2 \\
        --checkpoint runs/quick/checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pcflow.recipes.flowgan import FlowGANConfig, Trainer, build_dataset
from pcflow.training.trainer import flush_denormal_is_on

VARIANTS = {
    "as trained (flushed, fused Adam)": {"flush": True, "fused": True},
    "subnormals kept": {"flush": False, "fused": True},
    "Adam loop": {"flush": True, "fused": False},
}


def make_trainer(config: FlowGANConfig, data, checkpoint: Path | None, fused: bool) -> Trainer:
    """A trainer in a scratch folder, resumed from ``checkpoint`` when given."""
    folder = Path(tempfile.mkdtemp(prefix="pcflow-step-"))
    if checkpoint is not None:
        (folder / "checkpoints").mkdir()
        shutil.copy(checkpoint, folder / "checkpoints" / "last.pt")
    trainer = Trainer(config, folder, data, resume=checkpoint is not None, progress=False)
    # Adam reads "fused" from its groups at every step; a loaded checkpoint brings its own
    # choice, so the variant's is set here.
    for updater in trainer.updaters.values():
        if updater is not None:
            for group in updater.optimizer.param_groups:
                group["fused"] = True if fused else None
    return trainer


def time_steps(trainer: Trainer, batches: list, flush: bool) -> float:
    """Milliseconds per `Trainer.train_step` over ``batches`` (the caller's subnormal setting
    is restored afterwards)."""
    before = flush_denormal_is_on()
    torch.set_flush_denormal(flush)
    try:
        start = time.perf_counter()
        for batch in batches:
            trainer.train_step(batch)
        return (time.perf_counter() - start) / len(batches) * 1000
    finally:
        torch.set_flush_denormal(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained state")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=12, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = FlowGANConfig.preset(args.preset)
    config.train.threads = args.threads
    data = build_dataset(config, "train", progress=False)
    states = {"fresh": None} | ({"trained": args.checkpoint} if args.checkpoint else {})
    trainers = {
        (state, name): make_trainer(config, data, path, variant["fused"])
        for state, path in states.items()
        for name, variant in VARIANTS.items()
    }
    loader = next(iter(trainers.values())).loader
    batches = [batch for _, batch in zip(range(args.steps), iter(loader))]
    for (_, name), trainer in trainers.items():  # warm-up
        time_steps(trainer, batches[:2], VARIANTS[name]["flush"])
    times: dict[tuple[str, str], list[float]] = {key: [] for key in trainers}
    for _ in range(args.rounds):
        for key, trainer in trainers.items():
            times[key].append(time_steps(trainer, batches, VARIANTS[key[1]]["flush"]))
    header = "| state | " + " | ".join(VARIANTS) + " |"
    print(f"{header}\n|{' --- |' * (len(VARIANTS) + 1)}")
    for state in states:
        cells = [f"{statistics.median(times[state, name]):.0f} ms" for name in VARIANTS]
        print(f"| {state} | " + " | ".join(cells) + " |")
    print(
        f"\nMedian ms per training step of {args.rounds} rounds x {args.steps} steps, "
        f"preset {args.preset}, {args.threads} threads, variants timed in turn in one process."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
