"""Procedural part-based meshes for the synthetic dataset's object categories.

Each category builder draws random proportions from a ``numpy.random.Generator`` and returns the
object as a list of :class:`Part` meshes made from trimesh primitives (boxes, cylinders, capsules,
convex hulls, revolved profiles). Parts may overlap; :func:`sample_visible_surface` samples the
surface of their union by dropping the points that fall inside another part. The frame is y-up
(like ShapeNet), with the object's front towards +z.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import trimesh

__all__ = [
    "CATEGORY_BUILDERS",
    "Part",
    "build_object",
    "normalize_parts",
    "sample_visible_surface",
]

_SECTIONS = 24
_Y_UP = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], [0.0, 1.0, 0.0])


@dataclass
class Part:
    """One closed mesh of an object.

    Arguments:
        mesh: A watertight ``trimesh.Trimesh``.
        convex: Whether the mesh is convex, which allows an exact half-space inside test.
        tint: Brightness of the part relative to the object's colour in renderings (dark tyres,
            tinted windows); it does not change the geometry.
    """

    mesh: trimesh.Trimesh
    convex: bool = True
    tint: float = 1.0

    def hides(
        self, points: np.ndarray, normals: np.ndarray, later: np.ndarray, tolerance: float = 1e-6
    ) -> np.ndarray:
        """Which surface points of *other* parts this part hides.

        A point strictly inside the part is hidden. For convex parts, a point on the part's
        surface is hidden too when the faces touch back to back (a leg's top against a seat's
        underside: a joint, not surface), and when they coincide facing the same way (shared
        outer surface) for the part listed later (``later``), so that it is sampled once.

        Arguments:
            points: ``(N, 3)`` points on other parts' surfaces.
            normals: ``(N, 3)`` their outward normals.
            later: ``(N,)`` bool, whether each point's part comes after this one.
            tolerance: Distance under which a point counts as on this part's surface.

        Returns:
            ``(N,)`` bool.
        """
        if not self.convex:
            return self.mesh.contains(points)
        face_normals = self.mesh.face_normals
        offsets = np.einsum("fd,fd->f", face_normals, self.mesh.triangles[:, 0])
        signed = points @ face_normals.T - offsets
        active = signed.argmax(axis=1)
        distance = signed[np.arange(len(points)), active]
        alignment = np.einsum("nd,nd->n", normals, face_normals[active])
        on_surface = np.abs(distance) <= tolerance
        touching = on_surface & ((alignment < -0.5) | ((alignment > 0.5) & later))
        return (distance < -tolerance) | touching


# --- primitives --------------------------------------------------------------------------------


def _box(
    size: Sequence[float], center: Sequence[float], rotation: np.ndarray | None = None
) -> Part:
    transform = np.eye(4)
    if rotation is not None:
        transform[:3, :3] = rotation
    transform[:3, 3] = center
    return Part(trimesh.creation.box(extents=size, transform=transform))


def _cylinder(radius: float, start: Sequence[float], end: Sequence[float]) -> Part:
    return Part(trimesh.creation.cylinder(radius=radius, segment=[start, end], sections=_SECTIONS))


def _capsule(radius: float, start: Sequence[float], end: Sequence[float]) -> Part:
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = float(np.linalg.norm(axis))
    mesh = trimesh.creation.capsule(height=length, radius=radius, count=[12, 12])
    # trimesh's capsule is centred on the origin along z; align it with the segment.
    transform = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], axis / length)
    transform[:3, 3] = (start + end) / 2
    mesh.apply_transform(transform)
    return Part(mesh)


def _sphere(radius: float, center: Sequence[float]) -> Part:
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    mesh.apply_translation(center)
    return Part(mesh)


def _hull(points: np.ndarray) -> Part:
    return Part(trimesh.convex.convex_hull(np.asarray(points, float)))


def _frustum(
    bottom_radius: float, top_radius: float, start: Sequence[float], end: Sequence[float]
) -> Part:
    """A closed truncated cone from ``start`` (radius ``bottom_radius``) to ``end``."""
    angles = np.linspace(0.0, 2.0 * np.pi, _SECTIONS, endpoint=False)
    circle = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    rotation = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], axis / np.linalg.norm(axis))[:3, :3]
    ring = circle @ rotation.T
    points = np.concatenate([start + bottom_radius * ring, end + top_radius * ring])
    return _hull(points)


def _revolved(profile: np.ndarray, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> Part:
    """A solid of revolution about the vertical axis; ``profile`` holds (radius, height) rows."""
    mesh = trimesh.creation.revolve(np.asarray(profile, float), sections=64)
    mesh.apply_transform(_Y_UP)
    mesh.apply_translation(offset)
    return Part(mesh, convex=False)


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _wing(
    root: Sequence[float],
    span: Sequence[float],
    root_chord: float,
    tip_chord: float,
    sweep: float,
    thickness: float,
) -> Part:
    """A tapered, swept slab from ``root`` along ``span``; chords run along z (nose at +z)."""
    root, span = np.asarray(root, float), np.asarray(span, float)
    tip = root + span + np.array([0.0, 0.0, -sweep])
    corners = []
    for centre, chord, thick in ((root, root_chord, thickness), (tip, tip_chord, 0.6 * thickness)):
        for dz in (-chord / 2, chord / 2):
            for dy in (-thick / 2, thick / 2):
                corners.append(centre + np.array([0.0, dy, dz]))
    # A slab spanning along y (a fin) needs its thickness along x instead.
    corners = np.array(corners)
    if abs(span[1]) > abs(span[0]):
        base = np.array([root, root, root, root, tip, tip, tip, tip])
        corners = base + (corners - base)[:, [1, 0, 2]]
    return _hull(corners)


# --- categories --------------------------------------------------------------------------------


def chair(rng: np.random.Generator) -> list[Part]:
    """A chair: four legs, a seat, a back (solid panel, slats or frame), sometimes armrests."""
    width, depth = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.15)
    seat_height, seat_thickness = rng.uniform(0.75, 1.15), rng.uniform(0.06, 0.14)
    back_height = rng.uniform(0.8, 1.5)
    leg = rng.uniform(0.035, 0.075)
    round_legs = rng.random() < 0.5
    parts = [_box([width, seat_thickness, depth], [0.0, seat_height + seat_thickness / 2, 0.0])]
    inset = leg + rng.uniform(0.0, 0.08)
    splay = rng.uniform(0.0, 0.08)
    for sx in (-1, 1):
        for sz in (-1, 1):
            top = [sx * (width / 2 - inset), seat_height, sz * (depth / 2 - inset)]
            bottom = [top[0] + sx * splay, 0.0, top[2] + sz * splay]
            if round_legs:
                parts.append(_cylinder(leg, bottom, top))
            else:
                parts.append(_hull(_square_prism(bottom, top, leg)))
    base_y = seat_height + seat_thickness
    tilt = rng.uniform(0.0, 0.25)
    back_z = -depth / 2 + 0.05
    rotation = _rotation_x(-tilt)

    def back_point(y: float, z: float = 0.0) -> np.ndarray:
        return np.array([0.0, base_y, back_z]) + rotation @ np.array([0.0, y, z])

    style = rng.choice(["solid", "slats", "frame"])
    panel = rng.uniform(0.05, 0.1)
    if style == "solid":
        centre = back_point(back_height / 2)
        parts.append(_box([width * rng.uniform(0.85, 1.0), back_height, panel], centre, rotation))
    else:
        post = rng.uniform(0.035, 0.06)
        for sx in (-1, 1):
            x = sx * (width / 2 - post)
            bottom, top = back_point(0.0), back_point(back_height)
            parts.append(
                _box([2 * post, back_height, 2 * post], [x, *((bottom + top) / 2)[1:]], rotation)
            )
        rail = rng.uniform(0.08, 0.2)
        parts.append(_box([width, rail, panel], back_point(back_height - rail / 2), rotation))
        if style == "slats":
            count = int(rng.integers(2, 6))
            for x in np.linspace(-width / 2, width / 2, count + 2)[1:-1]:
                centre = back_point((back_height - rail) / 2)
                centre[0] = x
                parts.append(
                    _box(
                        [rng.uniform(0.03, 0.06), back_height - rail, panel * 0.6], centre, rotation
                    )
                )
        else:
            parts.append(_box([width, rail * 0.6, panel], back_point(back_height * 0.4), rotation))
    if rng.random() < 0.35:
        arm_height = rng.uniform(0.2, 0.35)
        for sx in (-1, 1):
            x = sx * (width / 2 + 0.02)
            parts.append(_box([0.07, 0.05, depth * 0.85], [x, base_y + arm_height, 0.0]))
            parts.append(
                _cylinder(0.03, [x, base_y, depth * 0.3], [x, base_y + arm_height, depth * 0.3])
            )
    return parts


def _square_prism(bottom: Sequence[float], top: Sequence[float], half: float) -> np.ndarray:
    offsets = np.array([[-half, 0, -half], [-half, 0, half], [half, 0, -half], [half, 0, half]])
    return np.concatenate([np.asarray(bottom) + offsets, np.asarray(top) + offsets])


def table(rng: np.random.Generator) -> list[Part]:
    """A table: rectangular with four legs or round on a pedestal, sometimes with a shelf."""
    height, thickness = rng.uniform(0.6, 1.0), rng.uniform(0.04, 0.1)
    parts = []
    if rng.random() < 0.65:
        width, depth = rng.uniform(1.2, 2.2), rng.uniform(0.6, 1.2)
        parts.append(_box([width, thickness, depth], [0.0, height - thickness / 2, 0.0]))
        leg = rng.uniform(0.03, 0.07)
        inset = leg + rng.uniform(0.0, 0.15)
        for sx in (-1, 1):
            for sz in (-1, 1):
                bottom = [sx * (width / 2 - inset), 0.0, sz * (depth / 2 - inset)]
                top = [bottom[0], height - thickness, bottom[2]]
                parts.append(_hull(_square_prism(bottom, top, leg)))
        if rng.random() < 0.4:
            shelf_y = rng.uniform(0.15, 0.35) * height
            parts.append(_box([width - 2 * inset, 0.03, depth - 2 * inset], [0.0, shelf_y, 0.0]))
        elif rng.random() < 0.5:
            apron = rng.uniform(0.06, 0.14)
            y = height - thickness - apron / 2
            parts.append(_box([width - 2 * inset, apron, 0.03], [0.0, y, depth / 2 - inset]))
            parts.append(_box([width - 2 * inset, apron, 0.03], [0.0, y, -depth / 2 + inset]))
    else:
        radius = rng.uniform(0.5, 0.9)
        parts.append(_cylinder(radius, [0.0, height - thickness, 0.0], [0.0, height, 0.0]))
        parts.append(
            _cylinder(rng.uniform(0.04, 0.09), [0.0, 0.0, 0.0], [0.0, height - thickness, 0.0])
        )
        if rng.random() < 0.5:
            parts.append(_cylinder(rng.uniform(0.25, 0.5) * radius * 1.2, [0, 0, 0], [0, 0.05, 0]))
        else:
            foot = rng.uniform(0.3, 0.55)
            for angle in np.linspace(0.0, 2.0 * np.pi, int(rng.integers(3, 5)), endpoint=False):
                end = [foot * np.cos(angle), 0.03, foot * np.sin(angle)]
                parts.append(_capsule(0.03, [0.0, 0.03, 0.0], end))
    return parts


def airplane(rng: np.random.Generator) -> list[Part]:
    """An airplane: a fuselage, swept wings, a tailplane, a fin and sometimes engines."""
    length, radius = rng.uniform(2.4, 3.4), rng.uniform(0.1, 0.18)
    nose, tail = length / 2, -length / 2
    parts = [_capsule(radius, [0.0, 0.0, tail + radius * 2], [0.0, 0.0, nose - radius])]
    parts.append(
        _frustum(radius, radius * 0.35, [0, 0, tail + radius * 2], [0, radius * 0.6, tail])
    )
    span, chord = rng.uniform(1.1, 1.7), rng.uniform(0.35, 0.7)
    taper, sweep = rng.uniform(0.25, 0.6), rng.uniform(0.0, 0.7)
    wing_z, wing_y = rng.uniform(-0.1, 0.15) * length, rng.uniform(-0.6, 0.5) * radius
    dihedral = rng.uniform(-0.05, 0.2)
    thickness = rng.uniform(0.035, 0.06)
    for side in (-1, 1):
        parts.append(
            _wing(
                [0.0, wing_y, wing_z],
                [side * span, dihedral * span, 0.0],
                chord,
                chord * taper,
                sweep,
                thickness,
            )
        )
    tail_span, tail_chord = rng.uniform(0.3, 0.55), rng.uniform(0.2, 0.35)
    tail_z = tail + radius * 2 + tail_chord / 2
    for side in (-1, 1):
        parts.append(
            _wing(
                [0.0, radius * 0.3, tail_z],
                [side * tail_span, 0.02, 0.0],
                tail_chord,
                tail_chord * 0.5,
                tail_chord * 0.4,
                0.03,
            )
        )
    fin_height = rng.uniform(0.3, 0.55)
    parts.append(
        _wing(
            [0.0, 0.0, tail_z],
            [0.0, fin_height, 0.0],
            tail_chord * 1.3,
            tail_chord * 0.6,
            tail_chord * 0.7,
            0.03,
        )
    )
    engines = int(rng.choice([0, 2, 2, 4]))
    if engines:
        engine_radius = rng.uniform(0.05, 0.09)
        positions = [0.35] if engines == 2 else [0.28, 0.6]
        for fraction in positions:
            for side in (-1, 1):
                x = side * fraction * span
                y = wing_y + dihedral * fraction * span - engine_radius - thickness / 2
                z = wing_z - sweep * fraction + chord * 0.2
                engine = _cylinder(engine_radius, [x, y, z - 0.35], [x, y, z + 0.1])
                engine.tint = 0.7
                parts.append(engine)
    return parts


def lamp(rng: np.random.Generator) -> list[Part]:
    """A lamp: a floor lamp (base, pole, shade) or a desk lamp with a jointed arm."""
    base_radius = rng.uniform(0.2, 0.4)
    base_height = rng.uniform(0.04, 0.1)
    parts = [_cylinder(base_radius, [0, 0, 0], [0, base_height, 0])]
    pole = rng.uniform(0.015, 0.035)
    if rng.random() < 0.5:
        height = rng.uniform(1.4, 2.2)
        parts.append(_cylinder(pole, [0, base_height, 0], [0, height, 0]))
        bottom, top = rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.28)
        shade = rng.uniform(0.25, 0.45)
        start = height - shade * rng.uniform(0.2, 0.6)
        parts.append(_frustum(bottom, top, [0, start, 0], [0, start + shade, 0]))
        parts[-1].tint = 1.2
    else:
        lower = rng.uniform(0.6, 1.0)
        lower_angle = rng.uniform(-0.35, 0.35)
        upper = rng.uniform(0.5, 0.9)
        upper_angle = rng.uniform(0.6, 1.3)
        joint = np.array(
            [0.0, base_height + lower * np.cos(lower_angle), -lower * np.sin(lower_angle)]
        )
        head = joint + upper * np.array([0.0, np.cos(upper_angle) * 0.6, np.sin(upper_angle)])
        parts.append(_capsule(pole, [0, base_height, 0], joint))
        parts.append(_capsule(pole, joint, head))
        parts.append(_sphere(pole * 2.0, joint))
        mouth = rng.uniform(0.14, 0.26)
        length = rng.uniform(0.2, 0.35)
        direction = np.array([0.0, -np.cos(rng.uniform(0.2, 0.7)), np.sin(rng.uniform(0.0, 0.5))])
        direction /= np.linalg.norm(direction)
        parts.append(
            _frustum(mouth * 0.35, mouth, head - 0.05 * direction, head + length * direction)
        )
    return parts


def car(rng: np.random.Generator) -> list[Part]:
    """A car: a bevelled body, a cabin (sedan, hatchback or van shape) and four wheels."""
    length, width = rng.uniform(3.6, 4.8), rng.uniform(1.6, 2.0)
    wheel_radius, wheel_width = rng.uniform(0.28, 0.4), rng.uniform(0.18, 0.28)
    clearance = wheel_radius * rng.uniform(0.5, 0.8)
    body_height = rng.uniform(0.45, 0.75)
    bevel = rng.uniform(0.1, 0.3)
    y0, y1 = clearance, clearance + body_height
    hw, hl = width / 2, length / 2
    body = []
    for x in (-hw, hw):
        body += [
            [x, y0, -hl + bevel * 0.5],
            [x, y0, hl - bevel],
            [x, y1, hl - bevel * 2.5],
            [x, y1, -hl + bevel],
            [x, y0 + body_height * 0.5, hl],
            [x, y0 + body_height * 0.6, -hl],
        ]
    parts = [_hull(np.array(body))]
    style = rng.choice(["sedan", "hatchback", "van"])
    cabin_height = rng.uniform(0.35, 0.55) if style != "van" else rng.uniform(0.6, 0.85)
    cabin_front = rng.uniform(0.05, 0.3) * hl
    if style == "sedan":
        cabin_back = -rng.uniform(0.35, 0.55) * hl
    elif style == "hatchback":
        cabin_back = -hl + 0.1
    else:
        cabin_back, cabin_front = -hl + 0.05, rng.uniform(0.35, 0.6) * hl
    slope = rng.uniform(0.3, 0.8) * cabin_height
    inset = rng.uniform(0.05, 0.15)
    cabin = []
    for x in (-(hw - inset), hw - inset):
        cabin += [
            [x, y1 - 0.01, cabin_front + slope * 0.8],
            [x, y1 - 0.01, cabin_back],
            [x * 0.95, y1 + cabin_height, cabin_front - slope * 0.5],
            [
                x * 0.95,
                y1 + cabin_height,
                cabin_back + (0.35 * slope if style == "sedan" else 0.05),
            ],
        ]
    parts.append(_hull(np.array(cabin)))
    parts[-1].tint = 0.5
    axle = hl - rng.uniform(0.14, 0.22) * length
    for z in (-axle, axle):
        for side in (-1, 1):
            x_out = side * (hw + 0.05)
            x_in = side * (hw - wheel_width)
            wheel = _cylinder(wheel_radius, [x_in, wheel_radius, z], [x_out, wheel_radius, z])
            wheel.tint = 0.25
            parts.append(wheel)
    return parts


def mug(rng: np.random.Generator) -> list[Part]:
    """A mug: a hollow, sometimes tapered cup with a bent handle."""
    radius, height = rng.uniform(0.35, 0.55), rng.uniform(0.7, 1.2)
    top = radius * rng.uniform(0.85, 1.2)
    wall, bottom = rng.uniform(0.03, 0.06), rng.uniform(0.04, 0.1)
    profile = [
        [0.0, 0.0],
        [radius, 0.0],
        [top, height],
        [top - wall, height],
        [radius - wall, bottom],
        [0.0, bottom],
    ]
    parts = [_revolved(np.array(profile))]
    arc_radius = rng.uniform(0.22, 0.36) * height
    handle = rng.uniform(0.035, 0.07)
    centre_y = height * rng.uniform(0.45, 0.55)
    stretch = rng.uniform(0.8, 1.4)
    points = []
    for a in np.linspace(-np.pi / 2, np.pi / 2, 10):
        y = centre_y + arc_radius * np.sin(a)
        wall_radius = radius + (top - radius) * y / height
        points.append([wall_radius - wall + stretch * arc_radius * np.cos(a), y, 0.0])
    for start, end in itertools.pairwise(points):
        parts.append(_capsule(handle, start, end))
    return parts


def vase(rng: np.random.Generator) -> list[Part]:
    """A vase: a hollow solid of revolution with a random belly, neck and lip."""
    height = rng.uniform(1.0, 2.0)
    base, belly, neck, lip = (
        rng.uniform(0.15, 0.35),
        rng.uniform(0.3, 0.6),
        rng.uniform(0.08, 0.25),
        rng.uniform(0.12, 0.35),
    )
    belly_at, neck_at = rng.uniform(0.25, 0.55), rng.uniform(0.65, 0.88)
    knots = np.array([0.0, belly_at, neck_at, 1.0])
    radii = np.array([base, belly, neck, lip])
    heights = np.linspace(0.0, 1.0, 24)
    # A monotone-in-height, smooth radius profile through the knots.
    outer = np.interp(heights, knots, radii)
    outer = np.convolve(np.pad(outer, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    wall = rng.uniform(0.02, 0.04)
    bottom = rng.uniform(0.03, 0.08)
    y = heights * height
    inner_mask = y > bottom
    profile = [[0.0, 0.0]]
    profile += [[r, h] for r, h in zip(outer, y)]
    profile += [[r - wall, h] for r, h in zip(outer[::-1], y[::-1]) if h > bottom]
    profile += [[outer[inner_mask][0] - wall, bottom], [0.0, bottom]]
    return [_revolved(np.array(profile))]


CATEGORY_BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "chair": chair,
    "table": table,
    "airplane": airplane,
    "lamp": lamp,
    "car": car,
    "mug": mug,
    "vase": vase,
}
"""Builders by category name; each maps a random generator to a list of parts."""


# --- normalisation and sampling ----------------------------------------------------------------


def build_object(category: str, rng: np.random.Generator) -> list[Part]:
    """Build one random object of ``category`` (a key of ``CATEGORY_BUILDERS``)."""
    if category not in CATEGORY_BUILDERS:
        raise ValueError(
            f"unknown category {category!r}; known categories: {sorted(CATEGORY_BUILDERS)}"
        )
    return CATEGORY_BUILDERS[category](rng)


def normalize_parts(parts: list[Part]) -> trimesh.Trimesh:
    """Centre the parts on their area-weighted centroid and scale them to the unit sphere.

    The parts are moved in place; the returned mesh is their concatenation, whose largest vertex
    radius is 1 (the paper's normalisation).

    Arguments:
        parts: The object's parts.

    Returns:
        The concatenated, normalised mesh.
    """
    mesh = trimesh.util.concatenate([part.mesh for part in parts])
    areas = mesh.area_faces
    centroid = (mesh.triangles_center * areas[:, None]).sum(axis=0) / areas.sum()
    scale = 1.0 / np.linalg.norm(mesh.vertices - centroid, axis=1).max()
    transform = np.diag([scale, scale, scale, 1.0])
    transform[:3, 3] = -scale * centroid
    for part in parts:
        part.mesh.apply_transform(transform)
    mesh.apply_transform(transform)
    return mesh


def sample_visible_surface(
    parts: list[Part], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``count`` points by area on the surface of the union of ``parts``, with normals.

    Points are drawn uniformly by area over all parts' faces (``trimesh.sample.sample_surface``)
    and those hidden by another part are dropped (see :meth:`Part.hides`): inside it, on a joint,
    or on a face that another part already covers, so the result is uniform over the union's
    outer surface.

    Arguments:
        parts: The object's parts (watertight meshes).
        count: Number of points to return.
        rng: Random generator.

    Returns:
        ``points`` ``(count, 3)`` and unit outward ``normals`` ``(count, 3)``, float64.
    """
    mesh = trimesh.util.concatenate([part.mesh for part in parts])
    owner = np.repeat(np.arange(len(parts)), [len(part.mesh.faces) for part in parts])
    kept_points, kept_normals, total = [], [], 0
    oversample = 1.3
    while total < count:
        draw = int((count - total) * oversample) + 64
        points, faces = trimesh.sample.sample_surface(mesh, draw, seed=rng)
        normals = mesh.face_normals[faces]
        hidden = np.zeros(draw, dtype=bool)
        for index, part in enumerate(parts):
            others = owner[faces] != index
            if others.any():
                later = owner[faces][others] > index
                hidden[others] |= part.hides(points[others], normals[others], later)
        kept_points.append(points[~hidden])
        kept_normals.append(normals[~hidden])
        total += int((~hidden).sum())
        oversample = min(4.0, oversample * 1.5)
    return np.concatenate(kept_points)[:count], np.concatenate(kept_normals)[:count]
