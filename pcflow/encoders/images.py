"""The image encoders' input: checks on RGB images, and the normalised grey + RGB input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_rgb_images", "prepare_images"]

# Per-channel normalisation of the encoders' input: ImageNet statistics for RGB, and their
# luminance-weighted mean for the grey channel (the paper feeds grey + RGB, normalised per channel).
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)
_GREY_MEAN = sum(w * m for w, m in zip(_LUMA, _RGB_MEAN))
_GREY_STD = sum(w * s for w, s in zip(_LUMA, _RGB_STD))


def check_rgb_images(name: str, images: Tensor) -> None:
    """Check RGB images ``(B, 3, H, W)``, floating point, finite, in ``[0, 1]``; ``name`` is the
    argument's name in the error."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of RGB images shaped (B, 3, H, W)")
    shape = "(" + ", ".join(str(s) for s in images.shape) + ")"
    if images.dim() != 4 or images.shape[1] != 3:
        hint = ""
        if images.dim() == 4 and images.shape[1] == 4:
            hint = " (RGBA? composite it on a white background first)"
        elif images.dim() == 4 and images.shape[-1] in (3, 4):
            hint = " (channels last? use images.permute(0, 3, 1, 2))"
        elif images.dim() == 3:
            hint = " (one image? add the batch dimension with images[None])"
        raise ValueError(f"{name} must have shape (B, 3, H, W), got shape {shape}{hint}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be floating point in [0, 1], got dtype {images.dtype} "
            "(uint8 images: divide by 255)"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch, shape {shape}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite, but holds NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")


def prepare_images(images: Tensor, size: int, channels: int = 4) -> Tensor:
    """Turn RGB images in ``[0, 1]`` into the encoders' input.

    Images are resized to ``size x size`` (bilinear, antialiased) when they differ, given a
    grey channel in front when ``channels == 4`` (the paper's grey + RGB), and normalised per
    channel.

    Arguments:
        images: RGB images ``(B, 3, H, W)`` in ``[0, 1]``.
        size: The encoders' image height and width.
        channels: 4 (grey + RGB) or 3 (RGB).

    Returns:
        Normalised images ``(B, channels, size, size)``.
    """
    check_rgb_images("images", images)
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 (RGB) or 4 (grey + RGB), got {channels}")
    if images.shape[-2:] != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(_RGB_MEAN, dtype=images.dtype, device=images.device)
    std = torch.tensor(_RGB_STD, dtype=images.dtype, device=images.device)
    rgb = (images - mean[:, None, None]) / std[:, None, None]
    if channels == 3:
        return rgb
    luma = torch.tensor(_LUMA, dtype=images.dtype, device=images.device)
    grey = torch.einsum("bchw,c->bhw", images, luma)[:, None]
    return torch.cat([(grey - _GREY_MEAN) / _GREY_STD, rgb], dim=1)
