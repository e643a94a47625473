"""Choosing samples of a dataset by category, without loading what is not needed."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from torch.utils.data import Dataset, Subset

from pcflow.data.protocol import CategorizedShapes

__all__ = ["sample_categories", "select_per_category", "spread_subset"]


def select_per_category(dataset: Dataset, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` samples per category of ``dataset``, spread evenly over each
    category (``limit`` ``None``: all).

    Samples of one object (its views) are contiguous in pcflow's datasets, so even spreading
    visits as many objects as possible.
    """
    by_category: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(sample_categories(dataset)):
        by_category[name].append(index)
    chosen = []
    for indices in by_category.values():
        if limit is None or len(indices) <= limit:
            chosen += indices
        else:
            positions = np.linspace(0, len(indices) - 1, limit).round().astype(int)
            chosen += [indices[p] for p in positions]
    return sorted(chosen)


def sample_categories(dataset: Dataset) -> list[str]:
    """The category name of every sample of ``dataset`` (or of a `Subset` of one).

    A `pcflow.data.CategorizedShapes` dataset answers without loading its samples; any other
    dataset's samples are loaded for their ``"category_name"``.
    """
    if isinstance(dataset, CategorizedShapes):
        return [dataset.sample_category(i) for i in range(len(dataset))]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, CategorizedShapes):
        return [dataset.dataset.sample_category(int(i)) for i in dataset.indices]
    return [dataset[i]["category_name"] for i in range(len(dataset))]


def spread_subset(dataset: Dataset, count: int | None) -> Dataset:
    """About ``count`` samples of ``dataset`` spread evenly over its categories (at least
    ``count``: as many per category, rounded up), so that a metric on them weighs every
    category, not just the first ones of a category-ordered split; all of it for ``None``."""
    if count is None:
        return dataset
    categories = len(set(sample_categories(dataset)))
    return Subset(dataset, select_per_category(dataset, -(-count // max(categories, 1))))
