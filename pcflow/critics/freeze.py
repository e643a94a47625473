"""A critic as a fixed function: for the generator's update, through the critic."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["frozen"]


@contextlib.contextmanager
def frozen(critic: nn.Module) -> Iterator[None]:
    """The critic as a fixed function: no parameter gradients, running statistics kept.

    For the generator's adversarial term, whose gradient runs back through the critic to the
    generator without updating the critic or moving its BatchNorm statistics.

    Batch statistics are still used (training mode), but BatchNorm's momentum is set to 0 so
    its running averages do not move; they must not be restored in place afterwards, since
    autograd saved them for the backward pass.
    """
    norms = [m for m in critic.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    counts = [
        None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for m in norms
    ]
    flags = [p.requires_grad for p in critic.parameters()]
    for module in norms:
        module.momentum = 0.0
    for parameter in critic.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(critic.parameters(), flags):
            parameter.requires_grad_(flag)
        for module, momentum, count in zip(norms, momenta, counts):
            module.momentum = momentum
            if count is not None:
                module.num_batches_tracked.copy_(count)
