"""Transforms for samples (dicts) and point clouds: normalisation, subsampling, augmentation.

The sample transforms are callables ``sample -> sample`` on the dicts that pcflow's datasets
return; they change the points, the image and the camera together, so that projecting
``"points"`` with ``"camera"`` still lands on the object (see :mod:`pcflow.data.camera`). They
draw randomness from torch's global generator (seeded per ``DataLoader`` worker) unless given a
``generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ColorJitter",
    "Compose",
    "NormalizePoints",
    "RandomBackground",
    "RandomRotation",
    "Resize",
    "SubsamplePoints",
    "normalize_points",
    "random_rotation_matrix",
    "subsample_points",
]

_POINT_KEYS = ("points", "points_target")
_NORMAL_KEYS = ("normals", "normals_target")
Sample = dict[str, Any]


def normalize_points(
    points: Tensor, mode: str = "unit_sphere", center: str = "centroid"
) -> tuple[Tensor, Tensor, Tensor]:
    """Translate and scale point clouds to a canonical size.

    ``mode="unit_sphere"``: the farthest point from the centre is at distance 1 (the paper's
    normalisation, applied there to mesh vertices). ``mode="unit_diagonal"``: the axis-aligned
    bounding box's diagonal has length 1. ``center="centroid"`` uses the points' mean (for
    area-uniform surface samples, the area-weighted centroid); ``center="bbox"`` the bounding
    box's centre.

    Arguments:
        points: ``(N, 3)`` or ``(B, N, 3)``.
        mode: ``"unit_sphere"`` or ``"unit_diagonal"``.
        center: ``"centroid"`` or ``"bbox"``.

    Returns:
        ``normalized`` (same shape), ``centers`` ``(..., 1, 3)`` and ``scales`` ``(..., 1, 1)``
        with ``points = normalized * scales + centers``.
    """
    if not isinstance(points, Tensor) or points.dim() not in (2, 3) or points.shape[-1] != 3:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a tensor shaped (N, 3) or (B, N, 3), got {shape}")
    if points.shape[-2] == 0:
        raise ValueError("points is empty (N = 0): nothing to normalise")
    if mode not in ("unit_sphere", "unit_diagonal"):
        raise ValueError(f"mode must be 'unit_sphere' or 'unit_diagonal', got {mode!r}")
    if center == "centroid":
        centers = points.mean(dim=-2, keepdim=True)
    elif center == "bbox":
        low, high = points.amin(dim=-2, keepdim=True), points.amax(dim=-2, keepdim=True)
        centers = (low + high) / 2
    else:
        raise ValueError(f"center must be 'centroid' or 'bbox', got {center!r}")
    shifted = points - centers
    if mode == "unit_sphere":
        scales = shifted.norm(dim=-1, keepdim=True).amax(dim=-2, keepdim=True)
    else:
        extent = points.amax(dim=-2, keepdim=True) - points.amin(dim=-2, keepdim=True)
        scales = extent.norm(dim=-1, keepdim=True)
    if bool((scales <= 0).any()):
        raise ValueError("points are all identical: a cloud of zero extent cannot be normalised")
    return shifted / scales, centers, scales


def subsample_points(
    points: Tensor, num_points: int, generator: torch.Generator | None = None
) -> Tensor:
    """Indices of a random subset of ``num_points`` among ``points.shape[-2]`` points.

    Without replacement when there are enough points, otherwise all points (shuffled) followed
    by random repeats.

    Arguments:
        points: ``(N, D)``.
        num_points: Any positive size.
        generator: Optional torch generator.

    Returns:
        ``(num_points,)`` int64 indices into ``points``.
    """
    count = points.shape[-2]
    if count == 0:
        raise ValueError("cannot subsample an empty point set (N = 0)")
    if int(num_points) < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    order = torch.randperm(count, generator=generator)
    if num_points <= count:
        return order[:num_points]
    extra = torch.randint(count, (num_points - count,), generator=generator)
    return torch.cat([order, extra])


def random_rotation_matrix(
    axis: str | None = None, max_angle: float = 180.0, generator: torch.Generator | None = None
) -> Tensor:
    """A random rotation ``(3, 3)``: about one coordinate axis, or uniform over SO(3).

    Arguments:
        axis: ``"x"``, ``"y"`` or ``"z"`` for a rotation about that axis by an angle uniform in
            ``[-max_angle, max_angle]`` degrees; ``None`` for a uniformly random rotation (QR of
            a Gaussian matrix, sign-corrected).
        max_angle: Degrees, used with ``axis``.
        generator: Optional torch generator.
    """
    if axis is None:
        q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))
        if torch.det(q) < 0:
            q[:, 0] = -q[:, 0]
        return q.float()
    if axis not in ("x", "y", "z"):
        raise ValueError(f"axis must be 'x', 'y', 'z' or None, got {axis!r}")
    angle = math.radians(max_angle) * (2 * torch.rand((), generator=generator).item() - 1)
    c, s = math.cos(angle), math.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    rotation = torch.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


class Compose:
    """Apply sample transforms in order.

    Arguments:
        transforms: Callables ``sample -> sample``.
    """

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _camera(sample: Sample) -> dict[str, Tensor] | None:
    camera = sample.get("camera")
    return dict(camera) if camera is not None else None


class NormalizePoints:
    """Normalise ``"points"`` and ``"points_target"`` together (see :func:`normalize_points`).

    The centre and scale come from both clouds together, so the two stay aligned; the camera's
    extrinsics are updated so that projections do not change.

    Arguments:
        mode: ``"unit_sphere"`` or ``"unit_diagonal"``.
        center: ``"centroid"`` or ``"bbox"``.
    """

    def __init__(self, mode: str = "unit_sphere", center: str = "centroid") -> None:
        self.mode, self.center = mode, center

    def __call__(self, sample: Sample) -> Sample:
        keys = [k for k in _POINT_KEYS if k in sample]
        _, centers, scales = normalize_points(
            torch.cat([sample[k] for k in keys]), self.mode, self.center
        )
        sample = dict(sample)
        for key in keys:
            sample[key] = (sample[key] - centers) / scales
        camera = _camera(sample)
        if camera is not None:
            # x_cam = R (s p' + c) + t = s (R p' + (R c + t) / s); projection ignores the factor s.
            extrinsics = camera["extrinsics"].clone()
            rotation = extrinsics[:, :3]
            extrinsics[:, 3] = (rotation @ centers[0].to(rotation) + extrinsics[:, 3]) / scales[
                0, 0
            ].to(rotation)
            camera["extrinsics"] = extrinsics
            sample["camera"] = camera
        return sample

    def __repr__(self) -> str:
        return f"NormalizePoints(mode={self.mode!r}, center={self.center!r})"


class SubsamplePoints:
    """Randomly subsample ``"points"`` and ``"points_target"`` (and their normals) to any size.

    Each cloud gets its own draw (see :func:`subsample_points`); a cloud's normals follow it.

    Arguments:
        num_points: Points kept in each cloud.
        generator: Optional torch generator.
    """

    def __init__(self, num_points: int, generator: torch.Generator | None = None) -> None:
        if int(num_points) < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.num_points, self.generator = int(num_points), generator

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        for points_key, normals_key in zip(_POINT_KEYS, _NORMAL_KEYS):
            if points_key in sample:
                index = subsample_points(sample[points_key], self.num_points, self.generator)
                sample[points_key] = sample[points_key][index]
                if normals_key in sample:
                    sample[normals_key] = sample[normals_key][index]
        return sample

    def __repr__(self) -> str:
        return f"SubsamplePoints(num_points={self.num_points})"


class RandomRotation:
    """Rotate the clouds (and normals) by one random rotation; the camera follows.

    The extrinsics become ``[R_cam Q^T | t]`` for the rotation ``Q``, so the image still shows the
    rotated cloud from the same place.

    Arguments:
        axis: ``"x"``, ``"y"``, ``"z"`` (about that axis; ``"y"`` is up in pcflow's data) or
            ``None`` (uniform over all rotations).
        max_angle: Largest angle in degrees, with ``axis``.
        generator: Optional torch generator.
    """

    def __init__(
        self,
        axis: str | None = "y",
        max_angle: float = 180.0,
        generator: torch.Generator | None = None,
    ) -> None:
        random_rotation_matrix(axis, max_angle)  # validates the arguments
        self.axis, self.max_angle, self.generator = axis, max_angle, generator

    def __call__(self, sample: Sample) -> Sample:
        rotation = random_rotation_matrix(self.axis, self.max_angle, self.generator)
        sample = dict(sample)
        for key in _POINT_KEYS + _NORMAL_KEYS:
            if key in sample:
                sample[key] = sample[key] @ rotation.T.to(sample[key])
        camera = _camera(sample)
        if camera is not None:
            extrinsics = camera["extrinsics"].clone()
            extrinsics[:, :3] = extrinsics[:, :3] @ rotation.T.to(extrinsics)
            camera["extrinsics"] = extrinsics
            sample["camera"] = camera
        return sample

    def __repr__(self) -> str:
        return f"RandomRotation(axis={self.axis!r}, max_angle={self.max_angle})"


class Resize:
    """Resize ``"image"`` and ``"mask"`` (bilinear, antialiased) and scale the intrinsics.

    Arguments:
        size: Output ``H = W`` or ``(H, W)``.
    """

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (int(size), int(size)) if isinstance(size, int) else tuple(map(int, size))
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {size}")

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        height, width = sample["image"].shape[-2:]
        for key in ("image", "mask"):
            if key in sample:
                sample[key] = F.interpolate(
                    sample[key][None],
                    size=self.size,
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )[0].clamp(0.0, 1.0)
        camera = _camera(sample)
        if camera is not None:
            scale = torch.tensor([self.size[1] / width, self.size[0] / height, 1.0])
            camera["intrinsics"] = camera["intrinsics"] * scale[:, None].to(camera["intrinsics"])
            sample["camera"] = camera
        return sample

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class ColorJitter:
    """Random brightness, contrast and saturation of the object; the background stays.

    The jittered image is composited again over the original background with ``"mask"``.

    Arguments:
        brightness: Factor drawn from ``[1 - brightness, 1 + brightness]``.
        contrast: Likewise, around the image's mean grey.
        saturation: Likewise, blending with the grey image.
        generator: Optional torch generator.
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.generator = generator

    def _factor(self, amount: float) -> float:
        return 1.0 + amount * (2 * torch.rand((), generator=self.generator).item() - 1)

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        jittered = image * self._factor(self.brightness)
        grey = (jittered * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
        jittered = grey.mean() + (jittered - grey.mean()) * self._factor(self.contrast)
        grey = (jittered * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
        jittered = grey + (jittered - grey) * self._factor(self.saturation)
        mask = sample.get("mask", torch.ones_like(image[:1]))
        sample = dict(sample)
        sample["image"] = (mask * jittered + (1 - mask) * image).clamp(0.0, 1.0)
        return sample

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation})"
        )


class RandomBackground:
    """Replace the white background with a random uniform colour, with probability ``p``.

    Assumes the image was composited on white with ``"mask"`` as alpha (as pcflow's datasets do).

    Arguments:
        p: Probability of changing the background.
        generator: Optional torch generator.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand((), generator=self.generator).item() >= self.p:
            return sample
        color = torch.rand(3, 1, 1, generator=self.generator)
        background = 1 - sample["mask"]
        sample = dict(sample)
        sample["image"] = (sample["image"] - background + background * color).clamp(0.0, 1.0)
        return sample

    def __repr__(self) -> str:
        return f"RandomBackground(p={self.p})"
