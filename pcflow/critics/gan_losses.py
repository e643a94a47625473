"""GAN losses for critics that output logits, and gradient penalties on point clouds."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from pcflow._checks import check_lengths, check_points, check_same_batch

__all__ = ["GAN_LOSS_KINDS", "critic_loss", "generator_loss", "gradient_penalty", "r1_penalty"]

GAN_LOSS_KINDS = ("lsgan", "nonsaturating", "hinge", "wasserstein")
"""The loss kinds accepted by `critic_loss` and `generator_loss`."""

Critic = Callable[..., Tensor]


def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSS_KINDS:
        raise ValueError(f"kind must be one of {GAN_LOSS_KINDS}, got {kind!r}")


def _check_logits(name: str, logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of critic outputs, shaped (B,)")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(logits.shape)})")


def critic_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "lsgan") -> Tensor:
    r"""The critic's loss on real and generated pairs (to minimise), averaged over each batch.

    With $r$ the real logits and $f$ the fake ones (means over their batches):

    - ``"lsgan"`` (FlowGAN, Mao et al.): $\tfrac12\,\mathrm{mean}((r - 1)^2) +
      \tfrac12\,\mathrm{mean}(f^2)$, real to 1, fake to 0, with the paper's ``1/2`` factors.
    - ``"nonsaturating"`` (Goodfellow et al., binary cross-entropy on logits):
      $\mathrm{mean}(\mathrm{softplus}(-r)) + \mathrm{mean}(\mathrm{softplus}(f))$.
    - ``"hinge"``: $\mathrm{mean}(\mathrm{relu}(1 - r))
      + \mathrm{mean}(\mathrm{relu}(1 + f))$.
    - ``"wasserstein"``: $\mathrm{mean}(f) - \mathrm{mean}(r)$; add
      `gradient_penalty` (weight 10 in WGAN-GP).

    References:
        Mao et al. "Least Squares Generative Adversarial Networks." ICCV 2017.

        Goodfellow et al. "Generative Adversarial Nets." NeurIPS 2014.

        Lim, Ye. "Geometric GAN." arXiv:1705.02894, 2017.

        Gulrajani et al. "Improved Training of Wasserstein GANs." NeurIPS 2017.

    Arguments:
        real_logits: Critic outputs on real pairs, ``(B,)`` (any shape is averaged).
        fake_logits: Critic outputs on generated pairs, ``(B',)``.
        kind: One of ``"lsgan"``, ``"nonsaturating"``, ``"hinge"``, ``"wasserstein"``.

    Returns:
        The loss, a scalar.

    Example:
        >>> import torch
        >>> from pcflow.critics import critic_loss
        >>> critic_loss(torch.ones(4), torch.zeros(4), kind="lsgan")
        tensor(0.)
    """
    _check_kind(kind)
    _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)
    if kind == "lsgan":
        return 0.5 * ((real_logits - 1.0) ** 2).mean() + 0.5 * (fake_logits**2).mean()
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()


def generator_loss(fake_logits: Tensor, kind: str = "lsgan") -> Tensor:
    r"""The generator's loss on generated pairs (to minimise), averaged over the batch.

    With $f$ the critic's logits on generated pairs:

    - ``"lsgan"``: $\tfrac12\,\mathrm{mean}((f - 1)^2)$ (push fake to 1, as FlowGAN).
    - ``"nonsaturating"``: $\mathrm{mean}(\mathrm{softplus}(-f))$, i.e.
      $-\log \sigma(f)$.
    - ``"hinge"`` and ``"wasserstein"``: $-\mathrm{mean}(f)$.

    Arguments:
        fake_logits: Critic outputs on generated pairs, ``(B,)``; keep them attached to the
            generator's graph.
        kind: One of ``"lsgan"``, ``"nonsaturating"``, ``"hinge"``, ``"wasserstein"``.

    Returns:
        The loss, a scalar.
    """
    _check_kind(kind)
    _check_logits("fake_logits", fake_logits)
    if kind == "lsgan":
        return 0.5 * ((fake_logits - 1.0) ** 2).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def _check_per_sample(critic: Critic, include_images: bool, function: str) -> None:
    """Refuse or warn when BatchNorm in training mode couples the samples being penalised.

    A critic may say how its points are normalised with a ``couples_points_across_batch``
    property (as `CrossModalCritic` does): when true the penalty is refused, when false only
    its ``image_encoder`` (if it has one) is checked. A critic that says nothing has every
    BatchNorm layer checked.
    """
    critic = getattr(critic, "module", critic)  # DistributedDataParallel wraps the critic
    coupled = getattr(critic, "couples_points_across_batch", None)
    if coupled:
        raise ValueError(
            f"{function} needs one logit per pair that depends on that pair alone, but this "
            f"{type(critic).__name__} uses norm='batch' in training mode (BatchNorm mixes the "
            "pairs of a batch, so per-sample gradient norms are ill-defined). Build the critic "
            "with norm='layer' or norm=None, or call critic.eval() for the penalty."
        )
    if coupled is None:
        modules = critic.modules() if isinstance(critic, nn.Module) else iter(())
    else:
        encoder = getattr(critic, "image_encoder", None)
        modules = encoder.modules() if include_images and encoder is not None else iter(())
    if any(isinstance(m, _BatchNorm) and m.training for m in modules):
        warnings.warn(
            f"{function}: the critic has BatchNorm layers in training mode, which couple the "
            "samples of a batch; the per-sample gradient penalty is then ill-defined",
            stacklevel=3,
        )


def _call(critic: Critic, points: Tensor, images: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return critic(points, images)
    return critic(points, images, lengths)


def _gradients(logits: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    """Per-sample input gradients of ``logits.sum()``, graph kept; zeros for unused inputs."""
    if logits.dim() != 1 or logits.shape[0] != inputs[0].shape[0]:
        raise ValueError(
            f"the critic must return one logit per pair, shape ({inputs[0].shape[0]},), "
            f"got shape {tuple(logits.shape)}"
        )
    if not logits.requires_grad:  # a critic constant in its inputs
        return [torch.zeros_like(x) for x in inputs]
    gradients = torch.autograd.grad(logits.sum(), inputs, create_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, gradients)]


def gradient_penalty(
    critic: Critic,
    real_points: Tensor,
    fake_points: Tensor,
    images: Tensor,
    *,
    lengths: Tensor | None = None,
    alpha: Tensor | None = None,
    target: float = 1.0,
) -> Tensor:
    r"""WGAN-GP penalty on random interpolates between real and generated point clouds.

    $\hat x = \alpha x_{\text{real}} + (1 - \alpha) x_{\text{fake}}$ with one
    $\alpha \sim U(0, 1)$ per pair, paired with the same image;
    the penalty is $\mathrm{mean}_b (\lVert \nabla_{\hat x} D(\hat x_b, I_b) \rVert_2 -
    \text{target})^2$, the norm taken over all ``N x 3`` coordinates of a cloud. Both clouds are
    detached (the penalty trains the critic only); the graph is kept so the penalty can be
    back-propagated into the critic's parameters. Multiply by the weight (10 in WGAN-GP) and add
    to `critic_loss` with ``kind="wasserstein"``.

    The critic must give each pair a logit that depends on that pair alone: a
    `CrossModalCritic` with ``norm="batch"`` in training mode is refused; other critics
    with BatchNorm in training mode get a warning.

    References:
        Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. "Improved Training of Wasserstein
        GANs." NeurIPS 2017.

    Arguments:
        critic: Called as ``critic(points (B, N, 3), images)`` (plus ``lengths`` if given),
            returning logits ``(B,)``.
        real_points: Real clouds ``(B, N, 3)``.
        fake_points: Generated clouds ``(B, N, 3)``.
        images: The images of the pairs, ``(B, C, H, W)``, shared by real and fake.
        lengths: Optional valid points per cloud ``(B,)``, the same for real and fake.
        alpha: Optional interpolation weights ``(B,)`` in ``[0, 1]``; drawn uniformly if
            ``None``.
        target: The gradient norm aimed at.

    Returns:
        The penalty, a scalar (unweighted).
    """
    batch, num_points, _ = check_points("real_points", real_points, 3)
    check_points("fake_points", fake_points, 3)
    if fake_points.shape != real_points.shape:
        raise ValueError(
            "real_points and fake_points must have the same shape to be interpolated, got "
            f"{tuple(real_points.shape)} and {tuple(fake_points.shape)}"
        )
    check_same_batch("real_points", real_points, "images", images)
    check_lengths("lengths", lengths, batch, num_points)
    if alpha is None:
        alpha = torch.rand(batch, device=real_points.device, dtype=real_points.dtype)
    elif alpha.shape != (batch,) or bool(((alpha < 0) | (alpha > 1)).any()):
        raise ValueError(f"alpha must have shape ({batch},) with values in [0, 1]")
    _check_per_sample(critic, include_images=False, function="gradient_penalty")
    weight = alpha.to(real_points.dtype)[:, None, None]
    interpolates = weight * real_points.detach() + (1.0 - weight) * fake_points.detach()
    interpolates.requires_grad_(True)
    logits = _call(critic, interpolates, images, lengths)
    (gradients,) = _gradients(logits, [interpolates])
    norms = torch.linalg.vector_norm(gradients.flatten(1), dim=1)
    return ((norms - target) ** 2).mean()


def r1_penalty(
    critic: Critic,
    real_points: Tensor,
    images: Tensor,
    *,
    lengths: Tensor | None = None,
    include_images: bool = False,
) -> Tensor:
    r"""R1 penalty: the squared gradient norm of the critic at real pairs.

    $\mathrm{mean}_b \lVert \nabla_{x} D(x_b, I_b) \rVert_2^2$ over the real clouds'
    coordinates, and, with ``include_images=True``, over the images' pixels as well (one joint
    norm per pair). The graph is kept for back-propagation into the critic. Multiply by
    $\gamma / 2$ and add to the critic's loss.

    The same per-sample requirement as `gradient_penalty` applies; with
    ``include_images=True`` the image branch's BatchNorm (in training mode) couples the images,
    and a warning says so (call ``critic.image_encoder.eval()`` to avoid it).

    References:
        Mescheder, Geiger, Nowozin. "Which Training Methods for GANs do actually Converge?"
        ICML 2018.

    Arguments:
        critic: Called as ``critic(points (B, N, 3), images)`` (plus ``lengths`` if given),
            returning logits ``(B,)``.
        real_points: Real clouds ``(B, N, 3)``.
        images: The images of the pairs, ``(B, C, H, W)``.
        lengths: Optional valid points per cloud ``(B,)``.
        include_images: Whether the gradient with respect to the images is penalised too.

    Returns:
        The penalty, a scalar (unweighted).
    """
    batch, num_points, _ = check_points("real_points", real_points, 3)
    check_same_batch("real_points", real_points, "images", images)
    check_lengths("lengths", lengths, batch, num_points)
    _check_per_sample(critic, include_images=include_images, function="r1_penalty")
    points = real_points.detach().requires_grad_(True)
    inputs = [points]
    if include_images:
        images = images.detach().requires_grad_(True)
        inputs.append(images)
    logits = _call(critic, points, images, lengths)
    gradients = _gradients(logits, inputs)
    squared = sum(g.flatten(1).pow(2).sum(dim=1) for g in gradients)
    return squared.mean()
