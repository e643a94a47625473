"""Data for training: a seeded, resumable sampler and the loader built on it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pcflow.training.rng import seed_all

__all__ = ["ResumableSampler", "SeededSamples", "make_loader"]


class SeededSamples(Dataset):
    """Wrap a dataset so that each access is seeded by the sampler, not by the process's RNG.

    Items are requested as ``(index, seed)`` pairs (see `ResumableSampler`); the wrapped
    dataset's own randomness (random point subsets, augmentation) then depends only on
    ``seed``, whichever process or worker loads it and whatever ran before, which makes
    resumed runs exact. The caller's random states are left untouched.

    Arguments:
        dataset: Any map-style dataset.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (the global RNG is saved and restored)
        with torch.random.fork_rng(devices=[]):
            seed_all(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)  # noqa: NPY002 (the global RNG is saved and restored)


class ResumableSampler(DistributedSampler):
    """`torch.utils.data.DistributedSampler` that can start part-way into an epoch.

    The epoch's order is ``DistributedSampler``'s (a permutation seeded by ``seed + epoch``,
    split across ``num_replicas`` ranks), so a resumed run sees the same batches in the same
    order. Each index is yielded with a per-sample seed drawn from ``(seed, epoch, index)``
    for `SeededSamples`.

    Arguments:
        dataset: The dataset (only its length is used).
        num_replicas: Number of processes.
        rank: This process's rank.
        seed: The run's seed.
        shuffle: Shuffle each epoch.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0,
        shuffle: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
            drop_last=False,
        )  # fmt: skip
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip this rank's first ``start`` samples of the current epoch (resuming)."""
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        for index in indices[self.start :]:
            sequence = np.random.SeedSequence([self.seed, self.epoch, index])
            yield index, int(sequence.generate_state(1, dtype=np.uint64)[0] >> 1)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    num_replicas: int = 1,
    rank: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
) -> tuple[DataLoader, ResumableSampler]:
    """A DataLoader over ``dataset`` with a `ResumableSampler`; returns the loader and sampler.

    ``batch_size`` samples a batch; this process is ``rank`` of ``num_replicas``; ``seed``
    orders every epoch (``shuffle``) and seeds every sample; ``drop_last`` drops a last partial
    batch; ``num_workers`` loader processes.

    The loader has its own generator, so creating its iterator never draws from the global
    torch RNG (which a resumed run restores from its checkpoint).
    """
    sampler = ResumableSampler(dataset, num_replicas, rank, seed, shuffle)
    loader = DataLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
    return loader, sampler
