"""Latent distributions: diagonal Gaussians, the head that predicts them, a latent flow prior."""

from __future__ import annotations

import math

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow
from nflows.transforms import (
    CompositeTransform,
    MaskedAffineAutoregressiveTransform,
    ReversePermutation,
)
from torch import Tensor, nn

from pcflow._checks import check_context, check_finite

__all__ = ["DiagonalGaussian", "GaussianHead", "LatentFlowPrior"]

_LOG_TWO_PI = math.log(2.0 * math.pi)


def _shape(tensor: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in tensor.shape) + ")"


def _check_latent(name: str, tensor: Tensor, features: int | None = None) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (B, L)")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (B, L) (2 dimensions), got {_shape(tensor)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if features is not None and tensor.shape[1] != features:
        raise ValueError(f"{name} must have shape (B, {features}), got {_shape(tensor)}")


class DiagonalGaussian:
    r"""A batch of Gaussians with diagonal covariance, one per shape, over ``L`` latent features.

    $q(z) = \prod_l \mathcal{N}(z_l;\ \mu_l, \exp(\log\sigma^2_l))$. Densities, entropies
    and divergences are summed over the ``L`` features and returned per shape ``(B,)``, in
    closed form. Sampling is reparameterised, so gradients reach ``mean`` and ``log_var``.

    Arguments:
        mean: Means ``(B, L)``.
        log_var: Log-variances ``(B, L)``.

    Example:
        >>> import torch
        >>> from pcflow.encoders import DiagonalGaussian
        >>> q = DiagonalGaussian(torch.zeros(2, 4), torch.zeros(2, 4))
        >>> q.kl_to_standard_normal()
        tensor([0., 0.])
    """

    def __init__(self, mean: Tensor, log_var: Tensor) -> None:
        _check_latent("mean", mean)
        _check_latent("log_var", log_var)
        if mean.shape != log_var.shape:
            raise ValueError(
                f"mean and log_var must have the same shape (B, L), got {_shape(mean)} and "
                f"{_shape(log_var)}"
            )
        check_finite("mean", mean)
        check_finite("log_var", log_var)
        self.mean = mean
        self.log_var = log_var

    @property
    def variance(self) -> Tensor:
        """Variances ``(B, L)``."""
        return self.log_var.exp()

    @property
    def stddev(self) -> Tensor:
        """Standard deviations ``(B, L)``."""
        return (0.5 * self.log_var).exp()

    @property
    def batch_size(self) -> int:
        """Number of distributions ``B``."""
        return self.mean.shape[0]

    @property
    def latent_features(self) -> int:
        """Number of latent features ``L``."""
        return self.mean.shape[1]

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw one reparameterised sample per shape, ``mean + stddev * eps``.

        Arguments:
            generator: Optional random generator for ``eps``.

        Returns:
            Samples ``(B, L)``, differentiable with respect to ``mean`` and ``log_var``.
        """
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.stddev * noise

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Like `rsample`, without gradients. Returns ``(B, L)``."""
        with torch.no_grad():
            return self.rsample(generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of ``z``, summed over the latent features.

        Arguments:
            z: Latents ``(B, L)``, or ``(S, B, L)`` for ``S`` samples per shape.

        Returns:
            Log-densities ``(B,)`` (or ``(S, B)``).
        """
        if not isinstance(z, Tensor) or z.dim() < 2 or z.shape[-2:] != self.mean.shape:
            got = _shape(z) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape {_shape(self.mean)} or (S, B, L), got {got}")
        squared = (z - self.mean) ** 2 / self.variance
        return -0.5 * (squared + self.log_var + _LOG_TWO_PI).sum(dim=-1)

    def entropy(self) -> Tensor:
        r"""Differential entropy per shape, ``(B,)``.

        $\frac12 \sum_l (\log(2\pi e) + \log\sigma_l^2)$.
        """
        return 0.5 * (self.log_var + _LOG_TWO_PI + 1.0).sum(dim=-1)

    def kl_to_standard_normal(self) -> Tensor:
        r"""KL divergence to $\mathcal{N}(0, I)$, ``(B,)``.

        $\frac12 \sum_l (\sigma_l^2 + \mu_l^2 - 1 - \log\sigma_l^2)$.
        """
        return 0.5 * (self.variance + self.mean**2 - 1.0 - self.log_var).sum(dim=-1)

    def kl(self, other: DiagonalGaussian) -> Tensor:
        r"""KL divergence $\mathrm{KL}(\text{self} \,\|\, \text{other})$ per shape, ``(B,)``.

        $\frac12 \sum_l \big(\log\sigma_{o,l}^2 - \log\sigma_l^2
        + (\sigma_l^2 + (\mu_l - \mu_{o,l})^2) / \sigma_{o,l}^2 - 1\big)$.

        Arguments:
            other: A `DiagonalGaussian` of the same shape ``(B, L)``.

        Returns:
            Divergences ``(B,)``, non-negative.
        """
        if not isinstance(other, DiagonalGaussian):
            raise TypeError(f"other must be a DiagonalGaussian, got {type(other).__name__}")
        if other.mean.shape != self.mean.shape:
            raise ValueError(
                f"other has shape {_shape(other.mean)} but this distribution has shape "
                f"{_shape(self.mean)}"
            )
        ratio = (self.variance + (self.mean - other.mean) ** 2) / other.variance
        return 0.5 * (other.log_var - self.log_var + ratio - 1.0).sum(dim=-1)

    def to_torch(self) -> torch.distributions.Independent:
        """The same distribution as ``Independent(Normal(mean, stddev), 1)`` from torch."""
        return torch.distributions.Independent(
            torch.distributions.Normal(self.mean, self.stddev), 1
        )

    def __repr__(self) -> str:
        return (
            f"DiagonalGaussian(batch_size={self.batch_size}, "
            f"latent_features={self.latent_features})"
        )


class GaussianHead(nn.Module):
    """One linear layer from features to a `DiagonalGaussian` over the latent.

    ``Linear(in_features, 2 * latent_features)`` gives the mean and the log-variance (FlowGAN's
    posterior head on PointNet features and its image-conditioned head on ResNet features).
    The log-variance is clamped to ``[log_var_min, log_var_max]`` (default ``[-20, 10]``, i.e.
    standard deviations from 4.5e-5 to 148) so that ``exp`` neither overflows nor underflows
    early in training; inside the range the head is exactly linear. Outside it the gradient of
    the log-variance is zero, so the bounds are set wide enough not to be reached in practice.

    Arguments:
        in_features: Size ``F`` of the input features.
        latent_features: Size ``L`` of the latent.
        log_var_min: Lower clamp of the log-variance.
        log_var_max: Upper clamp of the log-variance.

    Example:
        >>> import torch
        >>> from pcflow.encoders import GaussianHead
        >>> q = GaussianHead(512, 128)(torch.randn(4, 512))
        >>> q.rsample().shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int,
        log_var_min: float = -20.0,
        log_var_max: float = 10.0,
    ) -> None:
        super().__init__()
        if not log_var_min < log_var_max:
            raise ValueError(
                f"log_var_min must be below log_var_max, got {log_var_min} and {log_var_max}"
            )
        self.in_features = in_features
        self.latent_features = latent_features
        self.log_var_min = float(log_var_min)
        self.log_var_max = float(log_var_max)
        self.linear = nn.Linear(in_features, 2 * latent_features)

    def forward(self, features: Tensor) -> DiagonalGaussian:
        """Predict the distribution.

        Arguments:
            features: Input features ``(B, in_features)``.

        Returns:
            A `DiagonalGaussian` with mean and log-variance ``(B, latent_features)``.
        """
        _check_latent("features", features, self.in_features)
        check_finite("features", features)
        mean, log_var = self.linear(features).chunk(2, dim=-1)
        return DiagonalGaussian(mean, log_var.clamp(self.log_var_min, self.log_var_max))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, latent_features={self.latent_features}, "
            f"log_var_range=({self.log_var_min}, {self.log_var_max})"
        )


class LatentFlowPrior(Flow):
    """A conditional normalising flow over latent vectors, the learned prior of DPF-Nets.

    A stack of nflows ``MaskedAffineAutoregressiveTransform`` layers (each conditioned on a
    context vector, e.g. image features) separated by feature reversals, over a standard
    normal base. It is an ``nflows.flows.Flow``: ``log_prob(z (B, L), context (B, C)) -> (B,)``
    and ``sample(num_samples, context (B, C)) -> (B, num_samples, L)``. DPF-Nets' public
    configuration uses 7 layers; FlowGAN's image-conditioned model does not use this prior
    (it uses `GaussianHead`), so it is offered as an option.

    References:
        Papamakarios, Pavlakou, Murray. "Masked Autoregressive Flow for Density Estimation."
        NeurIPS 2017.

        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020.

    Arguments:
        latent_features: Size ``L`` of the latent.
        context_features: Size ``C`` of the context, or ``None`` for an unconditional prior.
        num_layers: Number of autoregressive layers.
        hidden_features: Width of each layer's MADE network.

    Example:
        >>> import torch
        >>> from pcflow.encoders import LatentFlowPrior
        >>> prior = LatentFlowPrior(8, context_features=16, num_layers=2)
        >>> prior.log_prob(torch.randn(3, 8), context=torch.randn(3, 16)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        latent_features: int,
        context_features: int | None = None,
        num_layers: int = 7,
        hidden_features: int = 64,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        layers: list[nn.Module] = []
        for index in range(num_layers):
            if index:
                layers.append(ReversePermutation(latent_features))
            layers.append(
                MaskedAffineAutoregressiveTransform(
                    features=latent_features,
                    hidden_features=hidden_features,
                    context_features=context_features,
                )
            )
        super().__init__(CompositeTransform(layers), StandardNormal([latent_features]))
        self.latent_features = latent_features
        self.context_features = context_features

    def log_prob(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of latents under the prior.

        Arguments:
            inputs: Latents ``(B, latent_features)``.
            context: Context ``(B, context_features)``, or ``None`` if the prior has none.

        Returns:
            Log-densities ``(B,)``.
        """
        _check_latent("inputs", inputs, self.latent_features)
        check_finite("inputs", inputs)
        check_context("context", context, inputs.shape[0], self.context_features)
        return super().log_prob(inputs, context)
