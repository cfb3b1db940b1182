"""The LiDAR encoder: pillars through drivetl.ops, BEV shapes, point statistics, masking, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivetl.models import LidarEncoder
from drivetl.models.lidar import PillarFeatureNet, pillarize
from drivetl.ops import VoxelGrid


def _encoder(**kw) -> LidarEncoder:
    torch.manual_seed(0)
    args = dict(
        voxel_size=(0.5, 0.5, 4.0),
        point_range=(-8.0, -8.0, -1.0, 8.0, 8.0, 3.0),
        pfn_channels=(8, 8),
        widths=(8, 8, 8),
        depths=(1, 1, 1),
        strides=(1, 2, 2),
        out_channels=8,
        out_stride=2,
    )
    args.update(kw)
    return LidarEncoder(**args)


def _points():
    pts = torch.tensor(
        [
            [0.1, 0.1, 0.5, 0.3],
            [0.2, 0.3, 1.5, 0.5],
            [-7.9, 7.9, 0.0, 0.1],  # frame 0
            [5.0, -5.0, 2.0, 0.9],
            [50.0, 0.0, 0.0, 0.1],  # frame 1 (one out of range)
        ]
    )
    return pts, torch.tensor([0, 3, 5])


def test_bev_shape_and_point_statistics() -> None:
    enc = _encoder()
    pts, off = _points()
    out = enc(pts, off, ("x", "y", "z", "intensity"))
    assert enc.bev_shape == (16, 16) and enc.bev_cell_size == (1.0, 1.0)
    assert out.bev.shape == (2, 8, 16, 16)
    assert float(out.point_count.sum()) == 4.0  # the out-of-range point is dropped
    # cell of (0.1, 0.1) and (0.2, 0.3): x,y in [0, 1) -> ix = iy = 8; mean z = 1.0
    assert float(out.point_count[0, 8, 8]) == 2.0 and abs(float(out.mean_height[0, 8, 8]) - 1.0) < 1e-6
    assert float(out.point_count[0, 15, 0]) == 1.0  # (-7.9, 7.9): row = y cell 15, column = x cell 0
    assert float(out.point_count[1, 3, 13]) == 1.0
    assert not bool(out.mask.any())


def test_pillar_features_offsets() -> None:
    grid = VoxelGrid((0.5, 0.5, 4.0), (-8.0, -8.0, -1.0, 8.0, 8.0, 3.0))
    pts, off = _points()
    pillars = pillarize(pts, off, grid)
    assert pillars.num_pillars == 3 and int((pillars.point_pillar < 0).sum()) == 1
    net = PillarFeatureNet(grid, (8,))
    f = net.point_features(pts, ("x", "y", "z", "intensity"), pillars)
    assert f.shape == (4, 9)
    # first two points share a pillar centred at (0.25, 0.25): offsets to mean and centre
    assert torch.allclose(f[0, 4:7], torch.tensor([-0.05, -0.1, -0.5]), atol=1e-6)
    assert torch.allclose(f[0, 7:9], torch.tensor([-0.15, -0.15]), atol=1e-6)


def test_masking_hides_cells_and_keeps_targets() -> None:
    enc = _encoder()
    pts, off = _points()
    torch.manual_seed(3)
    masked = enc(pts, off, ("x", "y", "z", "intensity"), mask_ratio=0.5)
    plain = enc(pts, off, ("x", "y", "z", "intensity"))
    share = float(masked.mask.float().mean())
    assert 0.3 < share < 0.7
    assert torch.equal(masked.point_count, plain.point_count)  # targets are the unmasked statistics


def test_gradients_reach_the_point_net_and_deterministic() -> None:
    enc = _encoder()
    enc.eval()
    pts, off = _points()
    a = enc(pts, off, ("x", "y", "z", "intensity")).bev
    b = enc(pts, off, ("x", "y", "z", "intensity")).bev
    assert torch.equal(a, b)
    enc.train()
    enc(pts, off, ("x", "y", "z", "intensity")).bev.square().mean().backward()
    assert enc.pfn.layers[0]["linear"].weight.grad.abs().sum() > 0


def test_elongation_column_used_when_present() -> None:
    cols = ("x", "y", "z", "intensity")
    enc = _encoder(use_elongation=True).eval()
    pts, off = _points()

    def with_elongation(values: torch.Tensor) -> torch.Tensor:
        return enc(torch.cat([pts, values[:, None]], 1), off, (*cols, "elongation")).bev

    low, high = with_elongation(torch.full((5,), 0.1)), with_elongation(torch.full((5,), 0.9))
    assert low.shape == (2, 8, 16, 16)
    assert not torch.allclose(low, high)  # the encoder reads the column
    # Only frame 1 changes when only its points' elongation does.
    mixed = with_elongation(torch.tensor([0.1, 0.1, 0.1, 0.9, 0.9]))
    assert torch.equal(mixed[0], low[0]) and torch.equal(mixed[1], high[1])
    # A source without elongation reads as zeros, not as some other column.
    assert torch.equal(enc(pts, off, cols).bev, with_elongation(torch.zeros(5)))
    # The column is found by name, wherever it sits.
    time_first = torch.cat([pts, torch.full((5, 1), 7.0), torch.full((5, 1), 0.9)], 1)
    assert torch.equal(enc(time_first, off, (*cols, "time", "elongation")).bev, high)
    # Per point, the feature after intensity is the elongation value.
    pillars = pillarize(pts, off, enc.grid)
    numbered = torch.cat([pts, torch.arange(5.0)[:, None]], 1)
    feats = enc.pfn.point_features(numbered, (*cols, "elongation"), pillars)
    assert feats.shape == (4, 10) and torch.equal(feats[:, 4], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    # An encoder built without elongation ignores the column.
    plain = _encoder().eval()
    elongated = torch.cat([pts, torch.full((5, 1), 0.9)], 1)
    assert torch.equal(plain(elongated, off, (*cols, "elongation")).bev, plain(pts, off, cols).bev)


def test_bad_grid_is_rejected() -> None:
    with pytest.raises(ValueError, match="pillars"):
        _encoder(voxel_size=(0.5, 0.5, 1.0))
    with pytest.raises(ValueError, match="out_stride"):
        _encoder(out_stride=3)


def test_height_stats_are_each_pillars_extremes_and_count() -> None:
    from drivetl.models.lidar import HEIGHT_STATS, height_stats

    z = torch.tensor([0.5, 1.5, -0.8, 2.9, 0.2])
    index = torch.tensor([0, 0, 1, 2, 2])
    stats = height_stats(z, index, 3, (-1.0, 3.0))
    assert HEIGHT_STATS == ("z_max", "z_min", "log1p_count") and stats.shape == (3, 3)
    torch.testing.assert_close(stats[:, 0], torch.tensor([1.5, -0.8, 2.9]))
    torch.testing.assert_close(stats[:, 1], torch.tensor([0.5, -0.8, 0.2]))
    torch.testing.assert_close(stats[:, 2], torch.log1p(torch.tensor([2.0, 1.0, 2.0])))


def test_height_features_reach_the_backbone() -> None:
    cols = ("x", "y", "z", "intensity")
    pts, off = _points()
    enc = _encoder(height_features=True).eval()
    assert enc.canvas_channels == enc.pfn.out_channels + 3
    first = next(m for m in enc.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == enc.canvas_channels
    base = enc(pts, off, cols).bev
    assert base.shape == (2, 8, 16, 16)
    lowered = pts.clone()
    lowered[1, 2] = 0.9  # the top point of the shared pillar: lower, still above the other one
    for with_height in (True, False):
        model = _encoder(height_features=with_height).eval()
        # the pillar net blind to z (its z and z-offset weights zeroed): only the height channels see it
        with torch.no_grad():
            model.pfn.layers[0]["linear"].weight[:, [2, 6]] = 0
        a, b = model(pts, off, cols).bev, model(lowered, off, cols).bev
        assert torch.equal(a[1], b[1])
        assert torch.allclose(a[0], b[0]) != with_height
    # masking replaces the whole canvas vector, height channels included
    torch.manual_seed(3)
    assert enc(pts, off, cols, mask_ratio=0.5).mask.any()


def test_local_ground_is_the_lowest_pillar_within_the_window() -> None:
    from drivetl.models.lidar import local_ground
    from drivetl.models.lidar._pillars import NO_GROUND

    # one frame of 1 x 7 cells: pillars at columns 1 (z_min 0.3), 2 (-0.2, left out) and 5 (0.8)
    cell = torch.tensor([1, 2, 5])
    z_min = torch.tensor([0.3, NO_GROUND, 0.8])
    ground = local_ground(z_min, cell, (1, 1, 7), 3)
    assert ground.shape == (1, 1, 1, 7)
    # each cell: the lowest pillar within one column either side; none near column 3: the frame's 0
    torch.testing.assert_close(ground[0, 0, 0], torch.tensor([0.3, 0.3, 0.3, 0.0, 0.8, 0.8, 0.8]))
    wide = local_ground(torch.tensor([0.3, -0.2, 0.8]), cell, (1, 1, 7), 5)
    torch.testing.assert_close(wide[0, 0, 0], torch.tensor([-0.2, -0.2, -0.2, -0.2, -0.2, 0.8, 0.8]))


def test_ground_window_places_boxes_relative_to_the_ground() -> None:
    """A scene lifted by 0.4 m: the canvas holds heights above the local ground, so the features are
    the same and every box's z comes out exactly 0.4 m higher, the other maps unchanged (the pillar
    net's raw-z input is zeroed so that only the height channels see z)."""
    from drivetl.data.collate import collate
    from drivetl.data.records import Boxes, FrameKey, Sample
    from drivetl.models import BEVDetector

    rng = np.random.default_rng(0)
    n = 3000
    pts = np.concatenate(
        [rng.uniform(-7.5, 7.5, (n, 2)), rng.uniform(-0.5, 1.5, (n, 1)), rng.uniform(0, 1, (n, 1))], 1
    ).astype(np.float32)
    cols = ("x", "y", "z", "intensity")
    torch.manual_seed(0)
    det = BEVDetector(
        ["vehicle"], _encoder(height_features=True, ground_window=5), head_channels=8, occupancy_head=False
    ).eval()
    with torch.no_grad():
        det.lidar.pfn.layers[0]["linear"].weight[:, 2] = 0

    def run(points):
        batch = collate(
            [Sample(FrameKey("s", 0), points, cols, Boxes.empty())], columns=cols, camera_names=()
        )
        with torch.no_grad():
            return det(batch)

    lifted = pts.copy()
    lifted[:, 2] += 0.4
    a, b = run(pts), run(lifted)
    torch.testing.assert_close(b.lidar.ground, a.lidar.ground + 0.4)
    torch.testing.assert_close(b.lidar.bev, a.lidar.bev, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.heatmap, a.heatmap, atol=1e-5, rtol=1e-5)
    shift = b.regression - a.regression
    torch.testing.assert_close(shift[:, 2], torch.full_like(shift[:, 2], 0.4), atol=1e-5, rtol=0)
    assert shift[:, [0, 1, 3, 4, 5, 6, 7]].abs().max() < 1e-5
    # without the ground window the same lift moves the features (the height channels are absolute)
    plain = _encoder(height_features=True).eval()
    p0 = plain(torch.from_numpy(pts), torch.tensor([0, n]), cols).bev
    p1 = plain(torch.from_numpy(lifted), torch.tensor([0, n]), cols).bev
    assert not torch.allclose(p0, p1, atol=1e-3)


def test_ground_window_options_are_checked() -> None:
    with pytest.raises(ValueError, match="odd"):
        _encoder(height_features=True, ground_window=4)
    with pytest.raises(ValueError, match="height_features"):
        _encoder(ground_window=5)


def test_masked_pillars_do_not_inform_the_ground() -> None:
    """Masked pretraining hides a cell's pillars from the ground estimate too (their lowest point
    would leak what the occupancy head must predict): everything masked leaves the frame's 0."""
    pts, off = _points()
    enc = _encoder(height_features=True, ground_window=3)
    seen = enc(pts, off, ("x", "y", "z", "intensity")).ground
    assert seen.shape == (2, 1, 16, 16) and seen.abs().max() > 0
    hidden = enc(pts, off, ("x", "y", "z", "intensity"), mask_ratio=1.0)
    assert hidden.mask.all() and hidden.ground.abs().max() == 0
