"""Meshes of the things in a scene, each in its own frame (x forward, y left, z up, metres).

Labelled actors (vehicles, pedestrians, cyclists, sign plates) are built so that their axis-aligned
bounds in the actor frame are their exact 3D box: `centred` moves the bounds' centre to the origin
and returns the box size (length, width, height).
"""

from __future__ import annotations

import numpy as np

from drivetl.sim._mesh import Mesh, blob, box, merge, prism, tapered_box
from drivetl.sim.materials import CLOTHES, PAINTS, SIGNS

__all__ = [
    "VEHICLE_KINDS",
    "centred",
    "cyclist",
    "pedestrian",
    "sign_post",
    "street_light",
    "tree",
    "vehicle",
]

VEHICLE_KINDS: tuple[str, ...] = ("car", "suv", "pickup", "van", "truck", "bus")


def centred(mesh: Mesh) -> tuple[Mesh, np.ndarray]:
    """(mesh moved so its bounds are centred on the origin, (3,) size l, w, h of the bounds)."""
    lo, hi = mesh.bounds()
    return Mesh(mesh.vertices - (lo + hi) / 2, mesh.triangles, mesh.materials), hi - lo


def _wheels(length: float, width: float, radius: float, axles: list[float]) -> list[Mesh]:
    tyre_w = min(0.3, 0.14 * width)
    return [
        prism((x, side * (width / 2 - tyre_w / 2), radius * np.cos(np.pi / 8)), radius, tyre_w, 1, "tyre")
        for x in axles
        for side in (-1, 1)
    ]


def _plates(length: float, z: float) -> list[Mesh]:
    """Licence plates and rear reflectors: thin retroreflective patches on the front and rear faces."""
    return [
        box((-length / 2, -0.25, z - 0.06), (-length / 2 + 0.02, 0.25, z + 0.06), "reflector"),
        box((length / 2 - 0.02, -0.25, z - 0.06), (length / 2, 0.25, z + 0.06), "reflector"),
    ]


def vehicle(kind: str, length: float, width: float, height: float, rng: np.random.Generator) -> Mesh:
    """A vehicle of `kind` (one of VEHICLE_KINDS) whose bounds are exactly (length, width, height);
    frame: x forward, ground contact at z = 0."""
    paint = str(rng.choice(PAINTS))
    l2, w2 = length / 2, width / 2
    radius = float(np.clip(0.2 * height, 0.3, 0.55))
    clearance = 0.5 * radius
    side_glass = ["car_glass", "car_glass", "car_glass", "car_glass", paint, paint]
    parts: list[Mesh] = []
    match kind:
        case "car" | "suv":
            belt = height * (0.55 if kind == "car" else 0.6)
            axles = [-l2 + 0.2 * length, l2 - 0.18 * length]
            parts.append(box((-l2, -w2, clearance), (l2, w2, belt), paint))
            cab_bottom = (-l2 + 0.12 * length, l2 - 0.28 * length, -w2 + 0.06, w2 - 0.06)
            back = -l2 + (0.2 if kind == "car" else 0.13) * length
            cab_top = (back, l2 - 0.45 * length, -w2 + 0.16, w2 - 0.16)
            parts.append(tapered_box(cab_bottom, cab_top, belt, height, side_glass))
        case "pickup":
            belt = 0.58 * height
            axles = [-l2 + 0.18 * length, l2 - 0.17 * length]
            parts.append(box((-l2, -w2, clearance), (l2, w2, belt), paint))
            cab = (-0.05 * length, l2 - 0.3 * length, -w2 + 0.06, w2 - 0.06)
            parts.append(
                tapered_box(
                    cab,
                    (cab[0], cab[1] - 0.1 * length, cab[2] + 0.08, cab[3] - 0.08),
                    belt,
                    height,
                    side_glass,
                )
            )
        case "van":
            axles = [-l2 + 0.17 * length, l2 - 0.16 * length]
            nose = l2 - 0.16 * length
            parts.append(
                box((-l2, -w2, clearance), (nose, w2, height), [paint, paint, paint, paint, paint, paint])
            )
            parts.append(
                tapered_box(
                    (nose, l2, -w2, w2),
                    (nose, nose + 0.02, -w2 + 0.1, w2 - 0.1),
                    clearance,
                    height,
                    [paint, "car_glass", paint, paint, paint, paint],
                )
            )
        case "truck":
            cab_len = min(2.3, 0.3 * length)
            axles = [-l2 + 0.15 * length, -l2 + 0.3 * length, l2 - 0.6 * cab_len]
            parts.append(
                box(
                    (l2 - cab_len, -w2 + 0.05, clearance),
                    (l2, w2 - 0.05, 0.85 * height),
                    [paint, "car_glass", paint, paint, paint, paint],
                )
            )
            parts.append(box((-l2, -w2, clearance + 0.3), (l2 - cab_len - 0.2, w2, height), "paint_white"))
            parts.append(
                box((-l2 + 0.5, -w2 + 0.3, clearance), (l2 - cab_len, w2 - 0.3, clearance + 0.3), "metal")
            )
        case "bus":
            axles = [-l2 + 0.25 * length, l2 - 0.2 * length]
            parts.append(box((-l2, -w2, clearance), (l2, w2, 0.45 * height), paint))
            parts.append(
                box(
                    (-l2 + 0.02, -w2 + 0.02, 0.45 * height),
                    (l2 - 0.02, w2 - 0.02, 0.88 * height),
                    "car_glass",
                )
            )
            parts.append(box((-l2, -w2, 0.88 * height), (l2, w2, height), paint))
        case _:
            raise ValueError(f"unknown vehicle kind {kind!r}; known: {', '.join(VEHICLE_KINDS)}")
    parts += _wheels(length, width, radius, axles)
    parts += _plates(length, clearance + 0.25)
    return merge(parts)


def pedestrian(height: float, rng: np.random.Generator) -> Mesh:
    """A person `height` metres tall, walking pose with a random stride; feet at z = 0, facing +x."""
    skin, top, legs = "skin", str(rng.choice(CLOTHES)), str(rng.choice(CLOTHES))
    stride = rng.uniform(0.0, 0.35) * height
    hip = 0.52 * height
    shoulder = 0.82 * height
    half_w = rng.uniform(0.19, 0.24) * height / 1.75
    depth = rng.uniform(0.11, 0.14) * height / 1.75
    leg_w = 0.07 * height / 1.75
    parts = []
    for sign in (-1, 1):  # legs, one forward and one back
        x = sign * stride / 2
        parts.append(box((x - 0.06, sign * 0.1 - leg_w, 0.0), (x + 0.06, sign * 0.1 + leg_w, hip), legs))
        arm_x = -sign * stride / 3
        y0, y1 = sorted((sign * half_w, sign * (half_w - 0.07)))
        parts.append(box((arm_x - 0.05, y0, hip - 0.05), (arm_x + 0.05, y1, shoulder), top))
    parts.append(box((-depth, -half_w + 0.07, hip), (depth, half_w - 0.07, shoulder), top))
    parts.append(box((-0.09, -0.08, shoulder + 0.03), (0.1, 0.08, height), skin))
    parts.append(box((-0.05, -0.05, shoulder), (0.05, 0.05, shoulder + 0.03), skin))
    return merge(parts)


def cyclist(rng: np.random.Generator) -> Mesh:
    """A bicycle with its rider, facing +x, ground contact at z = 0."""
    wheel_r = rng.uniform(0.31, 0.36)
    base = rng.uniform(0.98, 1.1)
    frame = str(rng.choice(("metal", "paint_red", "paint_blue", "paint_black")))
    top = str(rng.choice(CLOTHES))
    rear, front = -base / 2, base / 2
    parts = [
        prism((rear, 0, wheel_r), wheel_r, 0.04, 1, "tyre"),
        prism((front, 0, wheel_r), wheel_r, 0.04, 1, "tyre"),
    ]
    parts.append(box((rear, -0.02, wheel_r), (front, 0.02, wheel_r + 0.35), frame))
    seat_z = wheel_r + rng.uniform(0.55, 0.65)
    parts.append(box((rear + 0.25, -0.1, seat_z - 0.05), (rear + 0.45, 0.1, seat_z), "paint_black"))
    parts.append(box((front - 0.12, -0.28, seat_z), (front - 0.08, 0.28, seat_z + 0.05), "metal"))
    for sign in (-1, 1):
        parts.append(
            box(
                (rear + 0.3, sign * 0.12 - 0.06, wheel_r),
                (rear + 0.65, sign * 0.12 + 0.06, seat_z),
                "cloth_dark",
            )
        )
    torso_top = seat_z + rng.uniform(0.55, 0.65)
    parts.append(
        tapered_box(
            (rear + 0.25, rear + 0.55, -0.2, 0.2), (rear + 0.5, rear + 0.8, -0.2, 0.2), seat_z, torso_top, top
        )
    )
    parts.append(box((rear + 0.55, -0.08, torso_top), (rear + 0.75, 0.08, torso_top + 0.24), "skin"))
    for sign in (-1, 1):
        parts.append(
            box(
                (rear + 0.6, sign * 0.24 - 0.04, seat_z + 0.05),
                (front - 0.1, sign * 0.24 + 0.04, torso_top - 0.1),
                top,
            )
        )
    return merge(parts)


def tree(rng: np.random.Generator) -> Mesh:
    """A tree: trunk and lumpy crown; trunk base at the origin."""
    trunk_h = rng.uniform(1.8, 3.5)
    trunk_r = rng.uniform(0.1, 0.22)
    crown = rng.uniform(1.3, 3.0)
    crown_h = crown * rng.uniform(0.9, 1.5)
    return merge(
        [
            prism((0, 0, (trunk_h + 0.6 * crown_h) / 2), trunk_r, trunk_h + 0.6 * crown_h, 2, "bark"),
            blob((0, 0, trunk_h + crown_h * 0.85), (crown, crown, crown_h), "foliage", rng),
        ]
    )


def street_light(rng: np.random.Generator, facing: float) -> Mesh:
    """A street light: pole with an arm reaching towards `facing` (+1: +y, -1: -y); base at the origin."""
    h = rng.uniform(6.0, 9.0)
    arm = rng.uniform(1.0, 2.2)
    return merge(
        [
            prism((0, 0, h / 2), 0.12, h, 2, "metal"),
            box((-0.08, min(0, facing * arm), h - 0.15), (0.08, max(0, facing * arm), h - 0.05), "metal"),
            box((-0.25, facing * arm - 0.15, h - 0.3), (0.25, facing * arm + 0.15, h - 0.15), "metal"),
        ]
    )


def sign_post(rng: np.random.Generator) -> tuple[Mesh, Mesh]:
    """(post, plate): a thin post (base at the origin) and a sign plate on it facing +x."""
    size = rng.uniform(0.6, 0.9)
    bottom = rng.uniform(1.9, 2.4)
    plate = box(
        (0.06, -size / 2, bottom),
        (0.1, size / 2, bottom + size),
        ["metal", str(rng.choice(SIGNS))] + ["metal"] * 4,
    )
    post = prism((0, 0, (bottom + size) / 2), 0.04, bottom + size, 2, "metal")
    return post, plate
