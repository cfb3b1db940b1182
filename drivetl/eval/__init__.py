"""drivetl.eval: detection metrics (exact rotated-box IoU, AP/APH by class, range and difficulty;
box errors of centre-distance matches: translation, scale, orientation;
score-first or Hungarian matching; a recall-grid or Waymo's score-cutoff integration, with
`EvalConfig.waymo()` reproducing Waymo's official op) and report helpers (PR curves, per-range
bars, comparison tables, BEV renders).

Importing this package loads neither torch nor matplotlib; `DetectionEvaluator.sync` uses
torch.distributed only when a process group is already initialized, and the plot helpers import
matplotlib (Agg canvas, no pyplot state) when called.
"""

from drivetl.eval._ap import (
    PRCurve,
    average_precision,
    counts_curve,
    cutoff_average_precision,
    cutoff_curve,
    pr_curve,
)
from drivetl.eval._box_errors import (
    BoxErrorAccumulator,
    BoxErrors,
    TruePositiveErrors,
    aligned_scale_error,
    heading_error_histogram,
    match_by_distance,
    orientation_error,
)
from drivetl.eval._config import (
    DEFAULT_DISTANCE_THRESHOLDS,
    DEFAULT_IOU_THRESHOLDS,
    DEFAULT_SCORE_CUTOFFS,
    LEVELS,
    Detections,
    EvalConfig,
    in_region,
)
from drivetl.eval._evaluator import DetectionEvaluator
from drivetl.eval._iou import bev_intersection_area, bev_iou, box_corners_bev, box_iou, iou_3d
from drivetl.eval._matching import centre_distance, greedy_match, heading_accuracy, hungarian_match
from drivetl.eval._report import (
    box_error_table,
    comparison_table,
    write_bev_frame,
    write_heading_histograms,
    write_pr_curves,
    write_range_bars,
)
from drivetl.eval._result import DetectionResult, MetricEntry

__all__ = [
    "BoxErrorAccumulator",
    "BoxErrors",
    "TruePositiveErrors",
    "DEFAULT_DISTANCE_THRESHOLDS",
    "DEFAULT_IOU_THRESHOLDS",
    "DEFAULT_SCORE_CUTOFFS",
    "LEVELS",
    "DetectionEvaluator",
    "DetectionResult",
    "Detections",
    "EvalConfig",
    "MetricEntry",
    "PRCurve",
    "aligned_scale_error",
    "average_precision",
    "bev_intersection_area",
    "bev_iou",
    "box_corners_bev",
    "box_error_table",
    "box_iou",
    "centre_distance",
    "comparison_table",
    "counts_curve",
    "cutoff_average_precision",
    "cutoff_curve",
    "greedy_match",
    "heading_accuracy",
    "heading_error_histogram",
    "hungarian_match",
    "in_region",
    "iou_3d",
    "match_by_distance",
    "orientation_error",
    "pr_curve",
    "write_bev_frame",
    "write_heading_histograms",
    "write_pr_curves",
    "write_range_bars",
]
