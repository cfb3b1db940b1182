"""Beam-pattern estimation: how many beams a spinning LiDAR has and at which inclinations.

A spinning LiDAR's beams sit at fixed elevation angles in its own frame, so the elevation angles of
a scan's points (in the sensor frame) pile up on a few narrow peaks, one per beam. We histogram the
elevations finely, smooth lightly, keep local maxima that are separated by at least
`min_separation_deg` and hold a sensible share of the points, and refine each peak with the mean of
the elevations within a narrow window around it. Several scans give one estimate together.

Pure numpy; angles in radians unless the name says `_deg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivetl.errors import DataError


@dataclass(frozen=True)
class BeamPattern:
    """An estimated beam pattern.

    inclinations: (H,) float64 radians, ascending (the order `LidarModel.inclinations` uses).
    counts: (H,) int64 number of points assigned to each beam.
    """

    inclinations: np.ndarray
    counts: np.ndarray

    @property
    def count(self) -> int:
        """Number of beams."""
        return int(self.inclinations.shape[0])

    @property
    def inclinations_deg(self) -> np.ndarray:
        """(H,) inclinations in degrees, ascending."""
        return np.degrees(self.inclinations)


def point_inclinations(points_sensor: np.ndarray) -> np.ndarray:
    """(N,) elevation angles in radians of (N, >=3) points given in the LiDAR's own frame."""
    xyz = np.asarray(points_sensor, dtype=np.float64)[:, :3]
    return np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))


def estimate_beams(
    scans: Sequence[np.ndarray],
    *,
    min_separation_deg: float = 0.3,
    bin_deg: float = 0.01,
    min_range: float = 0.0,
    min_share: float = 0.1,
) -> BeamPattern:
    """Estimate the beam pattern from one or more scans in the sensor frame.

    scans: arrays (N_i, >=3) of x, y, z in metres, LiDAR frame (not the vehicle frame: a tilted
        mount would smear every beam). min_separation_deg: closest two beams may be; peaks closer
        than this are one beam. min_range: points nearer than this (metres) are ignored.
    min_share: a peak is a beam only when it holds at least this fraction of the median beam's
        points (rejects the scatter between beams and a few stray returns).
    Raises DataError when the scans hold too few points to estimate anything.
    """
    elev = []
    for scan in scans:
        xyz = np.asarray(scan, dtype=np.float64)[:, :3]
        xyz = xyz[np.isfinite(xyz).all(axis=1)]
        rng = np.linalg.norm(xyz, axis=1)
        xyz = xyz[(rng > max(min_range, 1e-6))]
        elev.append(np.degrees(point_inclinations(xyz)))
    el = np.concatenate(elev) if elev else np.zeros(0)
    if el.size < 100:
        raise DataError(f"beam estimation needs at least 100 valid points, got {el.size}")
    lo, hi = el.min() - 5 * bin_deg, el.max() + 5 * bin_deg
    nbins = int(np.ceil((hi - lo) / bin_deg))
    hist, edges = np.histogram(el, bins=nbins, range=(lo, lo + nbins * bin_deg))
    centres = 0.5 * (edges[:-1] + edges[1:])
    smooth = _gaussian_smooth(hist.astype(np.float64), sigma_bins=max(1.0, 0.03 / bin_deg))

    # Local maxima that dominate a +-min_separation/2 window.
    half = max(1, int(round(0.5 * min_separation_deg / bin_deg)))
    padded = np.pad(smooth, half, constant_values=-1.0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    is_peak = (smooth >= windows.max(axis=1)) & (smooth > 0)
    peaks = np.flatnonzero(is_peak)
    # Plateaus give neighbouring equal maxima: keep the first of each run.
    if peaks.size:
        peaks = peaks[np.concatenate([[True], np.diff(peaks) > half])]
    # Refine each peak: mean elevation within a narrow window; count points nearest to each peak.
    cand = centres[peaks]
    refined, counts = _refine(el, cand, min_separation_deg)
    keep = counts >= min_share * np.median(counts) if counts.size else counts.astype(bool)
    refined, counts = refined[keep], counts[keep]
    # Re-count after dropping weak peaks so each point goes to its nearest kept beam.
    refined, counts = _refine(el, refined, min_separation_deg)
    order = np.argsort(refined)
    return BeamPattern(np.radians(refined[order]), counts[order].astype(np.int64))


def _gaussian_smooth(values: np.ndarray, sigma_bins: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma_bins))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma_bins) ** 2)
    return np.convolve(values, kernel / kernel.sum(), mode="same")


def _refine(el_deg: np.ndarray, centres_deg: np.ndarray, min_sep: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean elevation of the points within a narrow window of each centre, and per-beam counts."""
    if centres_deg.size == 0:
        return centres_deg, np.zeros(0, np.int64)
    centres = np.sort(centres_deg)
    idx, dist = nearest_beam(np.radians(el_deg), np.radians(centres))
    dist = np.degrees(dist)
    counts = np.bincount(idx, minlength=centres.size)
    window = 0.25 * min_sep
    near = dist <= window
    sums = np.bincount(idx[near], weights=el_deg[near], minlength=centres.size)
    nums = np.bincount(idx[near], minlength=centres.size)
    refined = np.where(nums > 0, sums / np.maximum(nums, 1), centres)
    return refined, counts


def nearest_beam(inclinations: np.ndarray, beams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest beam for each point, and the absolute angular distance to it.

    inclinations: (N,) radians (per-point elevation in the sensor frame). beams: (H,) radians, ascending.
    Returns ((N,) int64 beam index into `beams`, (N,) float64 radians).
    """
    beams = np.asarray(beams, dtype=np.float64)
    inc = np.asarray(inclinations, dtype=np.float64)
    pos = np.clip(np.searchsorted(beams, inc), 1, max(1, beams.size - 1))
    if beams.size == 1:
        return np.zeros(inc.shape, np.int64), np.abs(inc - beams[0])
    left, right = beams[pos - 1], beams[pos]
    use_left = np.abs(inc - left) <= np.abs(inc - right)
    idx = np.where(use_left, pos - 1, pos).astype(np.int64)
    return idx, np.abs(inc - beams[idx])


def beam_spacing(beams: np.ndarray) -> np.ndarray:
    """(H,) local spacing of ascending beams (radians): the smaller gap to a neighbour."""
    beams = np.asarray(beams, dtype=np.float64)
    if beams.size < 2:
        return np.full(beams.shape, np.inf)
    gaps = np.diff(beams)
    left = np.concatenate([[np.inf], gaps])
    right = np.concatenate([gaps, [np.inf]])
    return np.minimum(left, right)


def beams_from_rings(points_sensor: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beam inclinations from a driver's ring (laser) index: one beam per ring value.

    points_sensor: (N, >=3) metres in the LiDAR's own frame; ring: (N,) integer beam index as the
    driver numbers it. Returns ((H,) float64 radians ascending, the median elevation of each ring's
    points; (N,) int64 index of each point's beam into them). DataError when two rings share one
    elevation (the field is not a beam index).
    """
    elev = point_inclinations(points_sensor)
    rings, ring_idx = np.unique(np.asarray(ring).astype(np.int64), return_inverse=True)
    medians = np.array([np.median(elev[ring_idx == i]) for i in range(rings.size)])
    order = np.argsort(medians)
    inc = medians[order]
    if inc.size > 1 and not np.all(np.diff(inc) > 0):
        raise DataError("two ring values share one elevation; the ring field is not a beam index")
    return inc, np.argsort(order)[ring_idx].astype(np.int64)


def estimate_columns(points_sensor: np.ndarray, beam: np.ndarray, default_deg: float = 0.2) -> int:
    """Columns per revolution: 2 pi over the median azimuth step between neighbouring points of a beam.

    points_sensor: (N, >=3) in the LiDAR frame; beam: (N,) beam index of each point.
    """
    xyz = np.asarray(points_sensor, dtype=np.float64)
    az = np.arctan2(xyz[:, 1], xyz[:, 0])
    steps = []
    for b in np.unique(beam):
        a = np.sort(az[beam == b])
        d = np.diff(a)
        steps.append(d[d > 1e-6])
    allsteps = np.concatenate(steps) if steps else np.zeros(0)
    step = float(np.median(allsteps)) if allsteps.size else np.radians(default_deg)
    return max(1, int(round(2 * np.pi / step)))
