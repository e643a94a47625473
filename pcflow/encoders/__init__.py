"""Encoders: point clouds and images to shape latents, and latent distributions."""

from __future__ import annotations

from pcflow.encoders.images import check_rgb_images, prepare_images
from pcflow.encoders.latent import DiagonalGaussian, GaussianHead, LatentFlowPrior
from pcflow.encoders.pointnet import PointNetEncoder
from pcflow.encoders.resnet import (
    MIN_IMAGE_SIZE,
    ResNet18,
    ResNetImageEncoder,
    SmallResNet,
    adapt_first_convolution,
    check_images,
    torchvision_resnet18_keys,
)

__all__ = [
    "MIN_IMAGE_SIZE",
    "DiagonalGaussian",
    "GaussianHead",
    "LatentFlowPrior",
    "PointNetEncoder",
    "ResNet18",
    "ResNetImageEncoder",
    "SmallResNet",
    "adapt_first_convolution",
    "check_images",
    "check_rgb_images",
    "prepare_images",
    "torchvision_resnet18_keys",
]
