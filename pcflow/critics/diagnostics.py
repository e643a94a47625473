"""How much a critic drives a generator: the adversarial share of its gradient."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["adversarial_gradient_share"]


def adversarial_gradient_share(
    flow: nn.Module, likelihood: Tensor, adversarial: Tensor
) -> dict[str, Tensor]:
    """How much of a generator's gradient the adversarial term makes.

    The gradients of the rest of a generator's loss and of its weighted adversarial term with
    respect to ``module``'s parameters (e.g. a point flow's), taken separately (the graph is kept
    for the step's own backward pass)::

        share = |g_adversarial| / (|g_adversarial| + |g_likelihood|)

    0 when the critic does not move the flow, 0.5 when both pull as hard, 1 when only it does.

    Arguments:
        flow: The module whose gradient is split (FlowGAN: the point flow ``p(X | z)``).
        likelihood: The scalar rest of the loss (FlowGAN: the likelihood terms).
        adversarial: The scalar weighted adversarial term.

    Returns:
        ``{"flow_grad_norm_likelihood", "flow_grad_norm_adversarial",
        "adversarial_grad_share"}``, scalars.
    """
    parameters = [p for p in flow.parameters() if p.requires_grad]

    def norm(loss: Tensor) -> Tensor:
        grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        return torch.stack(squares).sum().sqrt() if squares else torch.zeros(())

    likelihood_norm, adversarial_norm = norm(likelihood), norm(adversarial)
    return {
        "flow_grad_norm_likelihood": likelihood_norm,
        "flow_grad_norm_adversarial": adversarial_norm,
        "adversarial_grad_share": adversarial_norm
        / (adversarial_norm + likelihood_norm).clamp_min(1e-30),
    }
