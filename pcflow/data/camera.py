"""Pinhole cameras: look-at construction, projection, and the 3D-R2N2 and PASCAL3D+ conventions.

pcflow stores every camera in the OpenCV convention: the extrinsics ``[R | t]`` ``(3, 4)`` map a
world point ``X`` to camera coordinates ``x = R X + t`` with x to the right, y down and z forward
(depth); the intrinsics ``K`` ``(3, 3)`` map them to pixels, ``(u, v, 1) ~ K x``, where pixel
``(0, 0)``'s centre is at ``u = v = 0.5`` (the top-left image corner is ``(0, 0)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "R2N2_FOCAL_LENGTH",
    "R2N2_MAX_CAMERA_DISTANCE",
    "intrinsics_matrix",
    "look_at_extrinsics",
    "pascal3d_camera",
    "project_points",
    "r2n2_camera",
]

R2N2_FOCAL_LENGTH = 35.0 / 32.0
"""3D-R2N2's Blender camera: a 35 mm lens on a 32 mm sensor, i.e. focal length / image width."""

R2N2_MAX_CAMERA_DISTANCE = 1.75
"""3D-R2N2 stores the camera distance as a fraction of this distance (in ShapeNet units)."""


def intrinsics_matrix(focal: float, width: int, height: int | None = None) -> np.ndarray:
    """Intrinsics ``(3, 3)`` of a camera with square pixels and the principal point at the centre.

    Arguments:
        focal: Focal length in pixels.
        width: Image width in pixels.
        height: Image height in pixels (defaults to ``width``).

    Returns:
        ``K`` ``(3, 3)``, float64.
    """
    height = width if height is None else height
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def look_at_extrinsics(
    azimuth: float, elevation: float, distance: float, up: tuple[float, float, float] = (0, 1, 0)
) -> np.ndarray:
    """World-to-camera extrinsics ``(3, 4)`` of a camera on a sphere looking at the origin.

    The camera sits at ``distance * (cos(e) sin(a), sin(e), cos(e) cos(a))`` in a y-up world
    (azimuth ``a`` about the vertical axis from +z towards +x, elevation ``e`` above the
    horizontal plane) and looks at the origin with the world's up direction pointing up in the
    image.

    Arguments:
        azimuth: Azimuth in degrees.
        elevation: Elevation in degrees, in (-90, 90).
        distance: Distance from the origin.
        up: World up direction.

    Returns:
        ``[R | t]`` ``(3, 4)``, float64, OpenCV convention.
    """
    a, e = math.radians(azimuth), math.radians(elevation)
    centre = distance * np.array(
        [math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)]
    )
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, np.asarray(up, float))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, -(rotation @ centre)[:, None]], axis=1)


def project_points(
    points: Tensor | np.ndarray, intrinsics: Tensor | np.ndarray, extrinsics: Tensor | np.ndarray
) -> tuple[Tensor, Tensor]:
    """Project world points to pixel coordinates.

    Arguments:
        points: ``(N, 3)`` or ``(B, N, 3)`` world points.
        intrinsics: ``(3, 3)`` or ``(B, 3, 3)``.
        extrinsics: ``(3, 4)`` or ``(B, 3, 4)`` world-to-camera ``[R | t]``.

    Returns:
        ``pixels`` ``(..., N, 2)`` as ``(u, v)`` (column, row; the top-left corner is ``(0, 0)``)
        and ``depth`` ``(..., N)`` along the optical axis.
    """
    points = torch.as_tensor(points)
    dtype = points.dtype if points.is_floating_point() else torch.float32
    points = points.to(dtype)
    intrinsics = torch.as_tensor(intrinsics).to(dtype)
    extrinsics = torch.as_tensor(extrinsics).to(dtype)
    if points.shape[-1] != 3 or points.dim() not in (2, 3):
        raise ValueError(f"points must have shape (N, 3) or (B, N, 3), got {tuple(points.shape)}")
    if intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must have shape (..., 3, 3), got {tuple(intrinsics.shape)}")
    if extrinsics.shape[-2:] != (3, 4):
        raise ValueError(f"extrinsics must have shape (..., 3, 4), got {tuple(extrinsics.shape)}")
    camera = points @ extrinsics[..., :3].transpose(-1, -2) + extrinsics[..., None, :, 3]
    depth = camera[..., 2]
    image = camera @ intrinsics.transpose(-1, -2)
    return image[..., :2] / image[..., 2:3], depth


def r2n2_camera(
    azimuth: float, elevation: float, distance: float, image_size: int = 137
) -> tuple[np.ndarray, np.ndarray]:
    """The camera of one 3D-R2N2 rendering, from a line of ``rendering_metadata.txt``.

    3D-R2N2 rendered ShapeNet models in Blender from a camera at ``distance *
    R2N2_MAX_CAMERA_DISTANCE`` looking at the origin, at the given azimuth and elevation (degrees)
    in ShapeNet's y-up frame, with a 35 mm lens on a 32 mm sensor. Its extrinsics (as in 3D-R2N2's
    and PyTorch3D's ``compute_extrinsic_matrix``) rotate the world by ``-azimuth`` about the up
    axis and ``-elevation`` about the horizontal axis and look along the camera's -z (Blender and
    OpenGL); here they are converted to the OpenCV convention by flipping y and z. The metadata's
    field-of-view column is not used (it does not match the renderer's lens).

    Arguments:
        azimuth: Degrees (first column).
        elevation: Degrees (second column).
        distance: Fraction of ``R2N2_MAX_CAMERA_DISTANCE`` (fourth column).
        image_size: Rendering size in pixels (137 for 3D-R2N2).

    Returns:
        ``intrinsics`` ``(3, 3)`` and ``extrinsics`` ``(3, 4)`` (OpenCV convention, ShapeNet frame).
    """
    a, e = -math.radians(azimuth), -math.radians(elevation)
    ca, sa, ce, se = math.cos(a), math.sin(a), math.cos(e), math.sin(e)
    world_to_object = np.array([[ca * ce, sa * ce, -se], [-sa, ca, 0.0], [ca * se, sa * se, ce]])
    object_to_camera = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rotation = object_to_camera @ world_to_object
    translation = -object_to_camera @ np.array([distance * R2N2_MAX_CAMERA_DISTANCE, 0.0, 0.0])
    # Blender imports .obj files z-up, which 3D-R2N2 folds into the extrinsics.
    blender_import = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    rotation = rotation @ blender_import
    opengl_to_opencv = np.diag([1.0, -1.0, -1.0])
    extrinsics = np.concatenate(
        [opengl_to_opencv @ rotation, (opengl_to_opencv @ translation)[:, None]], axis=1
    )
    return intrinsics_matrix(R2N2_FOCAL_LENGTH * image_size, image_size), extrinsics


def pascal3d_camera(
    azimuth: float,
    elevation: float,
    distance: float,
    focal: float,
    principal_point: tuple[float, float],
    theta: float,
    viewport: float = 3000.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The camera of a PASCAL3D+ viewpoint annotation, in pcflow's OpenCV convention.

    PASCAL3D+ places the camera at ``distance * (cos(e) sin(a), -cos(e) cos(a), sin(e))`` around
    the CAD model (z up), rotates by ``Rx(-(pi/2 - e)) Rz(-a)``, projects with focal length
    ``viewport * focal`` looking along -z, rotates the image plane by ``theta`` and flips v
    (its ``project_3d.m``). The same mapping is written here as ``K [R | t]``. Angles in degrees;
    pixel coordinates are 0-based (PASCAL3D+'s ``px``, ``py`` are 1-based MATLAB coordinates).

    Arguments:
        azimuth: Degrees.
        elevation: Degrees.
        distance: Camera distance in CAD units.
        focal: Focal length (PASCAL3D+ uses 1, with ``viewport`` 3000).
        principal_point: ``(px, py)`` in 1-based pixel coordinates.
        theta: In-plane rotation in degrees.
        viewport: Pixels per focal unit.

    Returns:
        ``intrinsics`` ``(3, 3)`` and ``extrinsics`` ``(3, 4)``.
    """
    a, e, t = math.radians(azimuth), math.radians(elevation), math.radians(theta)
    centre = distance * np.array(
        [math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)]
    )
    az, el = -a, -(math.pi / 2 - e)
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(el), -math.sin(el)], [0, math.sin(el), math.cos(el)]])
    # Their camera looks along -z and rotates then flips the image plane; fold both into R.
    in_plane = np.array(
        [[math.cos(t), -math.sin(t), 0.0], [-math.sin(t), -math.cos(t), 0.0], [0.0, 0.0, -1.0]]
    )
    rotation = in_plane @ rx @ rz
    extrinsics = np.concatenate([rotation, -(rotation @ centre)[:, None]], axis=1)
    f = viewport * focal
    # +0.5: their 1-based pixel centres become pcflow's 0-based centres at (i + 0.5).
    px, py = principal_point
    intrinsics = np.array([[f, 0.0, px - 0.5], [0.0, f, py - 0.5], [0.0, 0.0, 1.0]])
    return intrinsics, extrinsics
