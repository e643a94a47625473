"""Tables over seeds from `evaluate.py` folders: mean ± std per category and row, and the
issue's targets checked.

Example (the folders of README's grid, one per category and seed):

    python examples/dpfnets/summarize.py runs/dpf/eval/*-s[012] runs/dpf/eval/*-s[012]-emd512 \\
        --json results/quick-test.json

Each folder holds ``generation-<split>-<normalization>.json`` and, where autoencoding ran,
``autoencoding-<split>.json``; the seed is read from the generation settings and the category
from the scores. Scores of one (row, category, seed) from several folders (CD and EMD halves
run apart) are merged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from pcflow.cli import command_line_program

MODEL, ABLATION, ORACLE = "DPF-Nets", "ablation: N(0, I) prior", "oracle"
GENERATION = ["1-NNA-CD", "1-NNA-EMD", "COV-CD", "COV-EMD", "MMD-CD", "MMD-EMD", "JSD"]
SCALE = {"MMD-CD": 1e3, "MMD-EMD": 1e2, "JSD": 1e2}  # 1-NNA and COV in %
AUTOENCODING = {"CD": 1e3, "EMD": 1e2, "F-score": 1e2}


def collect(folders: list[Path], split: str) -> tuple[dict, dict, dict]:
    """``(generation, autoencoding, settings)``: ``generation[row][category][score][seed]``,
    ``autoencoding[category][metric][seed]`` and the settings of each score set."""
    generation: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    autoencoding: dict = defaultdict(lambda: defaultdict(dict))
    settings: dict = {}
    for folder in folders:
        found = sorted(folder.glob(f"generation-{split}-*.json"))
        if not found:
            raise FileNotFoundError(f"{folder} holds no generation-{split}-*.json")
        for path in found:
            data = json.loads(path.read_text())
            seed = data["settings"]["seed"]
            for row, categories in data["scores"].items():
                for category, scores in categories.items():
                    for score, value in scores.items():
                        generation[row][category][score][seed] = value
                        key = f"{score} ({data['settings'].get('points')} points)"
                        settings[key] = data["settings"].get("sampling")
        auto = folder / f"autoencoding-{split}.json"
        if auto.exists():
            data = json.loads(auto.read_text())
            for category, metrics in data["per_category"].items():
                for metric in AUTOENCODING:
                    autoencoding[category][metric][seed] = metrics[metric]
    return generation, autoencoding, settings


def mean_std(values: dict[int, float], scale: float) -> tuple[float, float, int]:
    items = [v * scale for _, v in sorted(values.items())]
    spread = statistics.stdev(items) if len(items) > 1 else float("nan")
    return statistics.fmean(items), spread, len(items)


def cell(values: dict[int, float] | None, scale: float, seeds: int = 0) -> str:
    """``mean ± std``, with the number of seeds where fewer than ``seeds`` were scored."""
    if not values:
        return ""
    mean, spread, count = mean_std(values, scale)
    text = f"{mean:.2f}" if count == 1 else f"{mean:.2f} ± {spread:.2f}"
    return text + (f" ({count} seeds)" if count < seeds else "")


def targets(generation: dict) -> list[str]:
    """The issue's targets per category, each with its numbers and a verdict."""
    lines = []
    for category in sorted(generation.get(MODEL, {})):
        model, ablation = generation[MODEL][category], generation[ABLATION].get(category, {})
        oracle = generation[ORACLE][category]
        for score in ("1-NNA-CD", "1-NNA-EMD"):
            if score not in model or score not in ablation:
                continue
            (m, ms, _), (a, as_, _) = mean_std(model[score], 100), mean_std(ablation[score], 100)
            margin = max(ms, as_)
            verdict = "met" if a - m > margin else "not met"
            lines.append(f"{category}: latent flow {m:.2f} ± {ms:.2f} against N(0, I) "
                         f"{a:.2f} ± {as_:.2f} on {score}: lower by {a - m:.2f}, seed spread "
                         f"{margin:.2f}: {verdict}")  # fmt: skip
        for score, bound, lower in (("1-NNA-CD", 15, True), ("COV-CD", 10, False)):
            m, o = mean_std(model[score], 100)[0], mean_std(oracle[score], 100)[0]
            gap = m - o if lower else o - m
            verdict = "met" if gap <= bound else "not met"
            lines.append(f"{category}: {score} {m:.2f} against the oracle's {o:.2f}: "
                         f"{gap:+.2f} points (bound {bound}): {verdict}")  # fmt: skip
    return lines


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate.py output folders")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--json", type=Path, default=None, help="write the per-seed scores")
    args = parser.parse_args(argv)
    generation, autoencoding, settings = collect(args.folders, args.split)
    if MODEL not in generation:
        raise ValueError(f"no {MODEL!r} row in {[str(f) for f in args.folders]}")
    seeds = sorted({s for v in generation[MODEL].values() for d in v.values() for s in d})
    print(f"**Generation ({args.split}), mean ± std over seeds {seeds}**\n")
    header = ["category", "row", *GENERATION]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for category in sorted(generation[MODEL]):
        for row in (MODEL, ABLATION, ORACLE):
            scores = generation.get(row, {}).get(category, {})
            cells = [cell(scores.get(s), SCALE.get(s, 100), len(seeds)) for s in GENERATION]
            print(f"| {category} | {row} | " + " | ".join(cells) + " |")
    print("\n1-NNA and COV in %, MMD-CD x10^3, MMD-EMD x10^2, JSD x10^2; sampling: "
          + "; ".join(sorted({f"{v}" for v in settings.values() if v})))  # fmt: skip
    if autoencoding:
        print(f"\n**Autoencoding ({args.split}), mean ± std over seeds**\n")
        print("| category | CD x1e3 | EMD x1e2 | F-score % |\n| --- | --- | --- | --- |")
        for category, metrics in sorted(autoencoding.items()):
            cells = [cell(metrics[m], scale) for m, scale in AUTOENCODING.items()]
            print(f"| {category} | " + " | ".join(cells) + " |")
    print("\n**Targets**\n")
    for line in targets(generation):
        print(f"- {line}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"generation": generation, "autoencoding": autoencoding,
                                         "settings": settings}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
