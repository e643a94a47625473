"""The training processes as one trainer sees them: rank, device, DDP wrapping, reductions."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["ProcessGroup"]


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes (one process without ``torchrun``).

    Arguments:
        distributed: Whether a ``torch.distributed`` process group is initialised.
        rank: This process's rank (0 alone writes files and logs).
        world_size: Number of processes.
    """

    distributed: bool = False
    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> ProcessGroup:
        """The initialised ``torch.distributed`` process group, or a single process."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(True, dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def device(self, device: str | torch.device | None = None) -> torch.device:
        """``device``, or by default this rank's GPU when CUDA is available, else the CPU."""
        if device is not None:
            return torch.device(device)
        if torch.cuda.is_available():
            return torch.device("cuda", self.rank % torch.cuda.device_count())
        return torch.device("cpu")

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` when distributed, else itself."""
        if not self.distributed:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def mean(self, values: Tensor) -> Tensor:
        """The mean of ``values`` over the processes (a copy; ``values`` itself alone)."""
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def all_finite(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` is finite on every process (the same answer everywhere)."""
        flag = torch.isfinite(tensor.detach()).all().float().cpu().reshape(1)
        return bool(self.mean(flag) == 1)

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (all processes must call it)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for without a process group)."""
        if self.distributed:
            dist.barrier()

    def print(self, message: str) -> None:
        """Print ``message`` to stderr on rank 0."""
        if self.is_main:
            print(message, file=sys.stderr, flush=True)
