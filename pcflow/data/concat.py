"""Datasets of different categories read as one, with every category named."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from torch.utils.data import ConcatDataset

__all__ = ["ConcatShapes"]


class ConcatShapes(ConcatDataset):
    """Several datasets as one: their samples one after the other, their categories merged.

    Each part's ``"category"`` labels index its own ``categories``; here they index the merged
    ``categories`` (names in order of first appearance), so FlowGAN's per-category files, each
    labelled 0, keep their names and get distinct labels. Implements
    `pcflow.data.CategorizedShapes` over the parts' objects, one part after the other.

    Arguments:
        datasets: `pcflow.data.CategorizedShapes` datasets with a ``categories`` list of names
            (`pcflow.data.DPFNetsShapeNet`, `pcflow.data.ShapeNetR2N2`,
            `pcflow.data.SyntheticShapes`).

    Example:
        >>> import tempfile
        >>> from pcflow.data import SyntheticConfig, SyntheticShapes
        >>> def one(category):
        ...     config = SyntheticConfig(categories=(category,), objects_per_category=2,
        ...         views_per_object=0, points_per_object=100)
        ...     return SyntheticShapes(tempfile.mkdtemp(), "train", 10, config=config,
        ...         images=False, num_workers=0, progress=False)
        >>> both = ConcatShapes([one("mug"), one("vase")])
        >>> both.categories, len(both), both[2]["category_name"], both[2]["category"]
        (['mug', 'vase'], 4, 'vase', 1)
    """

    def __init__(self, datasets: Sequence[Any]) -> None:
        datasets = list(datasets)
        if not datasets:
            raise ValueError("datasets must hold at least one dataset, got none")
        missing = [type(d).__name__ for d in datasets if not hasattr(d, "categories")]
        if missing:
            raise TypeError(f"every dataset needs a 'categories' list; {missing} have none")
        super().__init__(datasets)
        self.categories: list[str] = []
        self._labels: list[list[int]] = []  # each part's label -> merged label
        for dataset in datasets:
            for name in dataset.categories:
                if name not in self.categories:
                    self.categories.append(name)
            self._labels.append([self.categories.index(n) for n in dataset.categories])
        self._object_ends: list[int] = []
        for dataset in datasets:
            previous = self._object_ends[-1] if self._object_ends else 0
            self._object_ends.append(previous + dataset.num_objects)

    def _part(self, index: int) -> tuple[int, int]:
        """(part, index in it) of sample ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        part = bisect.bisect_right(self.cumulative_sizes, index)
        return part, index - (self.cumulative_sizes[part - 1] if part else 0)

    def _object_part(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.num_objects:
            raise IndexError(f"object {index} out of range for {self.num_objects} objects")
        part = bisect.bisect_right(self._object_ends, index)
        return part, index - (self._object_ends[part - 1] if part else 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, inner = self._part(index)
        sample = dict(self.datasets[part][inner])
        sample["category"] = self._labels[part][int(sample["category"])]
        return sample

    @property
    def num_objects(self) -> int:
        """Number of objects in all parts."""
        return self._object_ends[-1]

    def sample_category(self, index: int) -> str:
        """The category name of sample ``index``, without loading it."""
        part, inner = self._part(index)
        return self.datasets[part].sample_category(inner)

    def object_category(self, index: int) -> str:
        """The category name of object ``index``."""
        part, inner = self._object_part(index)
        return self.datasets[part].object_category(inner)

    def object_points(self, index: int) -> Any:
        """Surface points ``(P, 3)`` of object ``index``, as its part gives them."""
        part, inner = self._object_part(index)
        return self.datasets[part].object_points(inner)
