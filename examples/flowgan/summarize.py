"""Summarise evaluations of several seeds: mean ± std over seeds, per method and per category.

Each ``metrics.json`` (written by ``evaluate.py --out``) holds one seed's results for one or more
methods (FlowGAN, the flow-only ablation, the PSGN-style baseline, the mean cloud), evaluated on
the same data. This prints, over the given files:

- the category-mean CD, EMD and F-score of every method, as mean ± std over the files (seeds),
  with the autoencoding bound beside each FlowGAN-type method that was diagnosed;
- per category, the seeds' mean of every method, so that "beats the mean cloud in every
  category" can be read off.

Usage::

    python examples/flowgan/summarize.py runs/seeds/s*/eval-test/metrics.json --out table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pcflow.metrics.tables import METRICS, metric_column, metric_scale

_SKIP = ("checkpoints",)


def _load(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: {path}: not a readable metrics.json ({error})") from None
    methods = {k: v for k, v in payload.items() if k not in _SKIP}
    if not methods or not all(isinstance(v, dict) and "mean" in v for v in methods.values()):
        raise SystemExit(f"error: {path} is not a metrics.json written by evaluate.py --out")
    return methods


def _cell(values: list[float], scale: float) -> str:
    values = np.asarray(values) * scale
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def summarize(paths: list[Path]) -> str:
    """The Markdown summary of ``metrics.json`` files (one per seed)."""
    runs = [_load(p) for p in paths]
    names = list(runs[0])
    for path, run in zip(paths, runs):
        if list(run) != names:
            raise SystemExit(f"error: {path} holds methods {list(run)}, the first file {names}")
    header = ["method", *(metric_column(metric) for metric in METRICS)]
    lines = [
        f"Mean ± std over {len(runs)} seed(s) (sample std); category means.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for name in names:
        row = [name]
        for metric in METRICS:
            row.append(_cell([run[name]["mean"][metric] for run in runs], metric_scale(metric)))
        lines.append("| " + " | ".join(row) + " |")
        if all("diagnosis" in run[name] for run in runs):
            row = [f"{name}: autoencoding bound"]
            for metric in METRICS:
                values = [run[name]["diagnosis"]["bound"]["mean"][metric] for run in runs]
                row.append(_cell(values, metric_scale(metric)))
            lines.append("| " + " | ".join(row) + " |")
    settings = runs[0][names[0]].get("settings", {})
    lines += ["", f"Settings: {json.dumps(settings)}", ""]
    categories = list(runs[0][names[0]]["per_category"])
    for metric in METRICS:
        scale = metric_scale(metric)
        lines += [f"Per category, {metric_column(metric)} (mean over seeds):", ""]
        lines.append("| category | " + " | ".join(names) + " |")
        lines.append("|" + " --- |" * (len(names) + 1))
        for category in categories:
            cells = []
            for name in names:
                values = [run[name]["per_category"][category][metric] for run in runs]
                cells.append(f"{np.mean(values) * scale:.2f}")
            lines.append(f"| {category} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=Path, nargs="+", help="metrics.json files, one per seed")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    for path in args.metrics:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    text = summarize(args.metrics)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
