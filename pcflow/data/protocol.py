"""The dataset protocol that evaluation relies on: each sample's category, each object's points."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["CategorizedShapes"]


@runtime_checkable
class CategorizedShapes(Protocol):
    """A dataset of (image, point cloud) samples grouped into objects and categories.

    Implemented by `pcflow.data.SyntheticShapes`, `pcflow.data.ShapeNetR2N2` and
    `pcflow.data.DPFNetsShapeNet`. It answers what evaluation asks of a whole split without
    loading every sample's image: the category of each sample (to spread a selection over
    the categories) and each object's points (for the mean-cloud baseline). Any dataset that
    returns samples with ``"category_name"``, ``"model_id"`` and ``"points"`` works without it,
    more slowly.

    """

    @property
    def num_objects(self) -> int:
        """Number of objects (shapes) in the dataset; each has one or more samples (views)."""
        ...

    def sample_category(self, index: int) -> str:
        """The category name of sample ``index``, without loading the sample."""
        ...

    def object_category(self, index: int) -> str:
        """The category name of object ``index`` (``0 <= index < num_objects``)."""
        ...

    def object_points(self, index: int) -> Any:
        """Surface points ``(P, 3)`` of object ``index`` (array or tensor), in the frame of
        its samples' ``"points"``."""
        ...


class ModelCategories:
    """`CategorizedShapes`' ``num_objects`` and ``object_category`` for a dataset that keeps
    its models as ``self._models``, sequences whose first item is the model's index into
    ``self.categories`` (`pcflow.data.ShapeNetR2N2`, `pcflow.data.DPFNetsShapeNet`)."""

    categories: list[str]
    _models: list[Any]

    @property
    def num_objects(self) -> int:
        """Number of models in the dataset."""
        return len(self._models)

    def object_category(self, index: int) -> str:
        """The category name of model ``index``."""
        return self.categories[self._models[index][0]]
