"""The paper's result tables: per-category metrics of one method, and comparisons of several."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["METRICS", "EvaluationResult", "comparison_table"]

METRICS = ("CD", "EMD", "F-score")
"""The reported metrics, in the paper's column order."""

# Display scale and direction of each metric; JSON files hold the raw values.
_DISPLAY = {
    "CD": (1e3, "x1e3", "lower"),
    "EMD": (1e2, "x1e2", "lower"),
    "F-score": (1e2, "%", "higher"),
}


@dataclass
class EvaluationResult:
    """Per-category and mean metrics of one method.

    Values are raw: CD the squared-distance Chamfer distance (mean over each cloud's points
    in both directions, summed), EMD the mean matched Euclidean distance, F-score a fraction
    in ``[0, 1]`` at the threshold in ``settings`` on squared distances. ``mean`` is the mean
    over categories (each category counts once, as in the paper's tables).

    Arguments:
        per_category: ``{category: {"CD", "EMD", "F-score", "count"}}``.
        mean: ``{"CD", "EMD", "F-score", "count"}`` over categories.
        settings: How the numbers were computed (points, EMD method, threshold, split).
    """

    per_category: dict[str, dict[str, float]]
    mean: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        """Write `to_dict` as JSON."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))
        return Path(path)

    def table(self) -> str:
        """A Markdown table: one row per category and the mean, one column per metric."""
        header = ["category", "shapes"] + [metric_column(m) for m in METRICS]
        rows = [
            [name, str(int(values["count"]))] + [metric_cell(m, values[m]) for m in METRICS]
            for name, values in self.per_category.items()
        ]
        rows.append(
            ["**mean**", str(int(self.mean["count"]))]
            + [metric_cell(m, self.mean[m]) for m in METRICS]
        )
        return markdown_table(header, rows) + "\n\n" + settings_note(self.settings)


def metric_column(metric: str) -> str:
    _, unit, direction = _DISPLAY[metric]
    arrow = "↓" if direction == "lower" else "↑"
    return f"{metric} ({unit}) {arrow}"


def metric_scale(metric: str) -> float:
    """The factor a raw value of ``metric`` is shown multiplied by (CD x1e3, EMD x1e2, F %)."""
    return _DISPLAY[metric][0]


def metric_cell(metric: str, value: float) -> str:
    return f"{value * metric_scale(metric):.3f}" if metric != "F-score" else f"{100 * value:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def settings_note(settings: dict[str, Any]) -> str:
    if not settings:
        return ""
    return (
        f"{settings.get('num_points')} predicted vs {settings.get('num_points')} ground-truth "
        f"points per shape, unit scale, split {settings.get('split', '?')!r}; CD: squared "
        f"distances; EMD: {settings.get('emd_method')} assignment, mean Euclidean distance; "
        f"F-score at {settings.get('fscore_threshold')} on squared distances; mean over "
        "categories."
    )


def comparison_table(results: dict[str, EvaluationResult], *, best: bool = True) -> str:
    """Markdown tables comparing methods: one per metric, categories as rows, methods as columns.

    Arguments:
        results: ``{method name: EvaluationResult}``, all on the same split and settings.
        best: Mark each row's best value in bold.
    """
    names = list(results)
    categories = list(next(iter(results.values())).per_category) if results else []
    blocks = []
    for metric in METRICS:
        header = ["category", *names]
        rows = []
        for category in [*categories, "mean"]:
            values = [
                (r.mean if category == "mean" else r.per_category[category])[metric]
                for r in results.values()
            ]
            target = min(values) if _DISPLAY[metric][2] == "lower" else max(values)
            cells = [
                f"**{metric_cell(metric, v)}**" if best and v == target else metric_cell(metric, v)
                for v in values
            ]
            rows.append(["**mean**" if category == "mean" else category, *cells])
        blocks.append(f"{metric_column(metric)}\n\n" + markdown_table(header, rows))
    first = next(iter(results.values())) if results else None
    note = settings_note(first.settings) if first is not None else ""
    return "\n\n".join(blocks) + ("\n\n" + note if note else "")
