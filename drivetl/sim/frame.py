"""One simulated frame of a whole rig: every LiDAR and camera, labels with point counts, a `FrameRecord`.

Time: frame `i` of a segment is at t = i * `FRAME_PERIOD` seconds; its timestamp is the segment's
start plus t. Labels are the actors at least one LiDAR return hit at t, with `num_points` the points
(all lasers, all returns) in their box and Waymo's difficulty rule (LEVEL_2 when 5 points or fewer).
A label is its actor's exact box grown by `LABEL_MARGIN` on every side, so that returns on the outer
surfaces (a bumper, the top of a head) count as inside despite float32 storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from drivetl.calib import SensorRig
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.sim._raycast import SceneCaster, transform
from drivetl.sim.camera import CameraFrame, CameraSimulator, encode_jpeg
from drivetl.sim.lidar import POINT_COLUMNS, LidarNoise, LidarScan, LidarSimulator
from drivetl.sim.scene import Scene

__all__ = ["FRAME_PERIOD", "LABEL_MARGIN", "RigSimulator", "SimFrame", "points_in_box"]

FRAME_PERIOD = 0.1
LABEL_MARGIN = 0.02


@dataclass(frozen=True, eq=False)
class SimFrame:
    """A simulated frame: the record (what a writer takes), each laser's scan (range images, pixel
    pose, points with the actor each hit), each camera's rendering (RGB, depth, actor per pixel), and
    the actor index of each labelled box."""

    record: FrameRecord
    scans: Mapping[str, LidarScan]
    images: Mapping[str, CameraFrame]
    label_actors: np.ndarray


def points_in_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the (N, >=3) points lie in the (7,) box x, y, z, l, w, h, heading (same frame)."""
    d = points[:, :3] - box[:3]
    c, s = np.cos(box[6]), np.sin(box[6])
    lx = c * d[:, 0] + s * d[:, 1]
    ly = -s * d[:, 0] + c * d[:, 1]
    return (np.abs(lx) <= box[3] / 2) & (np.abs(ly) <= box[4] / 2) & (np.abs(d[:, 2]) <= box[5] / 2)


def _in_boxes(points: np.ndarray, boxes: np.ndarray, cos_sin: np.ndarray) -> np.ndarray:
    """(N,) bool: whether points[i] (N, >=3) lies in boxes[i] (N, 7), with cos_sin[i] (N, 2) the cos and
    sin of boxes[i]'s heading: `points_in_box` pair by pair, with the same arithmetic."""
    d = points[:, :3] - boxes[:, :3]
    c, s = cos_sin[:, 0], cos_sin[:, 1]
    lx = c * d[:, 0] + s * d[:, 1]
    ly = -s * d[:, 0] + c * d[:, 1]
    return (
        (np.abs(lx) <= boxes[:, 3] / 2)
        & (np.abs(ly) <= boxes[:, 4] / 2)
        & (np.abs(d[:, 2]) <= boxes[:, 5] / 2)
    )


class RigSimulator:
    """Renders frames of any scene through one rig; the per-sensor rays are computed once.

    waymo_layout: True when the output is Waymo v1 range images: then only the TOP laser fires from
    the moving ego's per-column pose (stored as its pixel pose, as Waymo does) and the other lasers
    from the frame's pose; otherwise every spinning laser sweeps with the ego's motion and its points
    are motion-compensated into the vehicle frame at the frame's timestamp.
    """

    def __init__(
        self,
        rig: SensorRig,
        *,
        waymo_layout: bool,
        noise: LidarNoise | None = None,
        camera_noise: float = 0.012,
    ) -> None:
        self.rig = rig
        noise = noise or LidarNoise()
        self.lidars: dict[str, LidarSimulator] = {}
        self.pixel_pose: dict[str, bool] = {}
        for lid in rig.lidars:
            moving = noise.motion and lid.spinning and (lid.name == "TOP" or not waymo_layout)
            self.lidars[lid.name] = LidarSimulator(lid, replace(noise, motion=moving))
            self.pixel_pose[lid.name] = waymo_layout and moving
        self.cameras = {cam.name: CameraSimulator(cam, camera_noise) for cam in rig.cameras}
        self.ground = float(rig.ground) if isinstance(rig.ground, (int, float)) else 0.0

    def render(
        self, caster: SceneCaster, index: int, *, segment: str, start_us: int, seed: int = 0
    ) -> SimFrame:
        """Frame `index` of the segment whose scene `caster` holds; noise drawn from (seed, index)."""
        rng = np.random.default_rng([seed, index, 7])
        t = index * FRAME_PERIOD
        caster.set_time(t)
        world_from_vehicle = caster.scene.world_from_vehicle(t, self.ground)
        scans = {
            name: sim.simulate(caster, t, self.ground, rng, self.pixel_pose[name])
            for name, sim in self.lidars.items()
        }
        images = {name: sim.simulate(caster, world_from_vehicle, rng) for name, sim in self.cameras.items()}
        boxes, label_actors = self._labels(caster.scene, t, world_from_vehicle, scans)
        record = FrameRecord(
            key=FrameKey(segment, start_us + round(t * 1e6)),
            rig=self.rig,
            lidars={n: LidarPoints(n, s.points, POINT_COLUMNS, "vehicle") for n, s in scans.items()},
            cameras={n: CameraImage(n, encode_jpeg(im.rgb), "jpeg") for n, im in images.items()},
            boxes=boxes,
            world_from_vehicle=world_from_vehicle,
        )
        return SimFrame(record, scans, images, label_actors)

    def _labels(
        self, scene: Scene, t: float, world_from_vehicle: np.ndarray, scans: Mapping[str, LidarScan]
    ) -> tuple[Boxes, np.ndarray]:
        """Boxes of the actors hit by a return, with the points inside counted per laser among those of
        the range-image tiles that can reach the box (an exact point-in-box test on those candidates)."""
        boxes, speed = scene.actor_boxes(t, np.linalg.inv(world_from_vehicle))
        boxes[:, 3:6] += 2 * LABEL_MARGIN
        counts = np.zeros(len(boxes), np.int64)
        radius = 0.5 * np.linalg.norm(boxes[:, 3:6], axis=1)
        # per box, as `points_in_box` computes them (scalar cos/sin: the same bits as its own)
        cos_sin = np.array([(np.cos(b[6]), np.sin(b[6])) for b in boxes]).reshape(-1, 2)
        for name, scan in scans.items():
            sim = self.lidars[name]
            if not len(scan.points):
                continue
            lidar_from_vehicle = np.linalg.inv(sim.lidar.vehicle_from_lidar)
            centres = transform(lidar_from_vehicle, boxes[:, :3])
            # Boxes of actors this laser hit (a box no return hit is not labelled from this laser).
            hit = np.zeros(len(boxes), bool)
            hit[scan.actor[scan.actor >= 0]] = True
            near = np.flatnonzero(hit)
            if not len(near):
                continue
            reach_radius = radius[near] + scan.sway + 0.05
            pair_box, pair_tile = np.nonzero(sim.tiles.reaching(centres[near], reach_radius))
            n_ret, n_pix = scan.range_image.shape[0], sim.directions.shape[0] * sim.directions.shape[1]
            # Per (return, pixel), flat: the point's index and its range; an extra last pixel per
            # return (no point) answers the tiles' padding.
            stride = n_pix + 1
            point_of = np.full(n_ret * stride, -1, np.int64)
            point_of[scan.points[:, 5].astype(np.int64) * stride + scan.pixel] = np.arange(len(scan.pixel))
            ranges = np.full((n_ret, stride), -1.0, np.float32)
            ranges[:, :n_pix] = scan.range_image[..., 0].reshape(n_ret, n_pix)
            pix = sim.tiles.pixels[pair_tile]
            pix[pix < 0] = n_pix
            # A point in box k lies within its bounding sphere, so its range (measured from an origin
            # at most `sway` from the frame-time one) is within reach_radius of the centre's distance.
            dist = np.linalg.norm(centres[near], axis=1)
            lo = np.maximum(dist - reach_radius - 1e-3, 1e-6)[pair_box][:, None]  # > 0: a return
            hi = (dist + reach_radius + 1e-3)[pair_box][:, None]
            box, point = [], []
            for ret in range(n_ret):
                r = np.take(ranges[ret], pix)  # (pairs, pixels per tile)
                sel = np.flatnonzero((r >= lo) & (r <= hi))
                box.append(np.take(near, np.take(pair_box, sel // pix.shape[1])))
                point.append(np.take(point_of, np.take(pix, sel) + ret * stride))
            box, point = np.concatenate(box), np.concatenate(point)
            inside = _in_boxes(
                np.take(scan.points, point, axis=0),
                np.take(boxes, box, axis=0),
                np.take(cos_sin, box, axis=0),
            )
            counts += np.bincount(box[inside], minlength=len(boxes))
        keep = np.nonzero(counts > 0)[0]
        actors = [scene.actors[i] for i in keep]
        num = counts[keep].astype(np.int32)
        return Boxes(
            boxes[keep],
            tuple(a.cls for a in actors),
            tuple(a.id for a in actors),
            num,
            np.where(num <= 5, 2, 1).astype(np.int8),
            speed[keep].astype(np.float32),
        ), keep
