"""Priors over a shape latent: standard normal, a learned flow, or a Gaussian given a condition."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from pcflow.encoders.latent import DiagonalGaussian, GaussianHead, LatentFlowPrior

__all__ = ["ConditionalGaussianPrior", "FlowPrior", "LatentPrior", "StandardNormalPrior"]


class LatentPrior(Protocol):
    """What `pcflow.models.LatentPointFlow` needs of a prior ``p(z)`` or ``p(z | c)``."""

    latent_features: int

    def log_prob(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """``log p(z [| c])`` of latents ``(B, L)``: ``(B,)``."""
        ...

    def sample(self, num_shapes: int, condition: Tensor | None = None) -> Tensor:
        """Latents ``(B, L)``: ``num_shapes`` of them, or one per condition row."""
        ...


class StandardNormalPrior(nn.Module):
    """``p(z) = N(0, I)`` over ``latent_features`` features (no parameters).

    Example:
        >>> import torch
        >>> prior = StandardNormalPrior(4)
        >>> prior.log_prob(torch.zeros(2, 4))
        tensor([-3.6758, -3.6758])
    """

    def __init__(self, latent_features: int) -> None:
        super().__init__()
        self.latent_features = latent_features
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    def distribution(self, batch: int) -> DiagonalGaussian:
        """The prior as a `DiagonalGaussian` for ``batch`` shapes."""
        zeros = self._reference.new_zeros(batch, self.latent_features)
        return DiagonalGaussian(zeros, zeros)

    def log_prob(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """``log N(z; 0, I)`` of ``z`` ``(B, L)``: ``(B,)``; ``condition`` must be ``None``."""
        _no_condition(condition)
        return self.distribution(z.shape[0]).log_prob(z)

    def sample(self, num_shapes: int, condition: Tensor | None = None) -> Tensor:
        """``num_shapes`` latents ``(num_shapes, L)``."""
        _no_condition(condition)
        reference = self._reference
        return torch.randn(
            num_shapes, self.latent_features, device=reference.device, dtype=reference.dtype
        )


class FlowPrior(nn.Module):
    """A learned prior: a latent flow (`pcflow.encoders.LatentFlowPrior`), DPF-Nets' choice.

    Arguments:
        latent_features: Size ``L`` of the latent.
        num_layers: Autoregressive layers (DPF-Nets: 14 in the paper, 7 in its public
            configuration).
        hidden_features: Width of each layer's MADE network.
        context_features: Size of a condition, or ``None`` for an unconditional prior.

    Example:
        >>> import torch
        >>> prior = FlowPrior(4, num_layers=2, hidden_features=8)
        >>> prior.sample(3).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        latent_features: int,
        num_layers: int = 7,
        hidden_features: int = 64,
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        self.latent_features = latent_features
        self.flow = LatentFlowPrior(latent_features, context_features, num_layers, hidden_features)

    def log_prob(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """``log p(z [| c])`` of ``z`` ``(B, L)``: ``(B,)``."""
        return self.flow.log_prob(z, condition)

    def sample(self, num_shapes: int, condition: Tensor | None = None) -> Tensor:
        """Latents ``(num_shapes, L)``, or one per row of ``condition`` ``(B, C)``."""
        if condition is None:
            return self.flow.sample(num_shapes)
        return self.flow.sample(1, condition)[:, 0]


class ConditionalGaussianPrior(nn.Module):
    """``p(z | c)``: an encoder of the condition (an image, ...) and a `GaussianHead`.

    FlowGAN's image-conditioned Gaussian: ``encoder`` maps the condition to features
    ``(B, F)`` and ``head`` to a `DiagonalGaussian` over the latent. Sampling gives its mean
    (the latent FlowGAN decodes at inference) unless asked to draw.

    Arguments:
        encoder: ``condition -> (B, F)``.
        head: ``GaussianHead(F, L)``.

    Example:
        >>> import torch
        >>> from pcflow.encoders import GaussianHead
        >>> prior = ConditionalGaussianPrior(torch.nn.Linear(6, 16), GaussianHead(16, 4))
        >>> prior.log_prob(torch.zeros(2, 4), torch.randn(2, 6)).shape
        torch.Size([2])
    """

    def __init__(self, encoder: nn.Module, head: GaussianHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.latent_features = head.latent_features

    def distribution(self, condition: Tensor) -> DiagonalGaussian:
        """``p(z | c)`` for conditions ``(B, ...)``."""
        if condition is None:
            raise ValueError("this prior is conditional: give a condition, got None")
        return self.head(self.encoder(condition))

    def log_prob(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """``log p(z | c)``: ``(B,)``."""
        return self.distribution(condition).log_prob(z)

    def sample(
        self, num_shapes: int, condition: Tensor | None = None, *, mean: bool = True
    ) -> Tensor:
        """The mean of ``p(z | c)`` per condition row ``(B, L)``, or a draw with ``mean=False``
        (``num_shapes`` is ignored: one latent per condition)."""
        distribution = self.distribution(condition)
        return distribution.mean if mean else distribution.rsample()


def _no_condition(condition: Tensor | None) -> None:
    if condition is not None:
        raise ValueError("this prior is unconditional: condition must be None")
