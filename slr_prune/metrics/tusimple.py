"""The official TuSimple lane-detection metric: accuracy, FP and FN.

Per image (the benchmark's `LaneEval.bench`): every ground-truth lane gets a pixel threshold of
20 / cos θ, θ the angle of a least-squares fit of x on y over its labelled points; a predicted
lane's accuracy against it is the fraction of h_samples where |x_pred − x_gt| < threshold (missing
points on either side are mapped to −100 first, so rows missing on both sides count as hits).
A ground-truth lane is matched when its best predicted lane reaches 0.85; unmatched ones are false
negatives, predictions left over are false positives.  Images with more than 4 ground-truth lanes
drop their worst lane from the accuracy and forgive one miss.  The dataset score is the mean of
the per-image accuracy, FP rate and FN rate over all ground-truth images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PIXEL_THRESH", "PT_THRESH", "MAX_RUN_TIME", "lane_angle", "line_accuracy", "bench",
           "evaluate_lanes", "evaluate_files"]

PIXEL_THRESH = 20.0  # pixels at 1280×720, widened by 1/cos θ for slanted lanes
PT_THRESH = 0.85  # fraction of h_samples a prediction must hit to match a ground-truth lane
MAX_RUN_TIME = 200.0  # ms; slower predictions score (0, 0, 1)
MISSING = -100.0  # every negative x becomes this before comparing


def lane_angle(xs: Sequence[float], ys: Sequence[float]) -> float:
    """θ = arctan(k), k the least-squares slope of x on y over the points with x ≥ 0 (0 if < 2)."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    valid = x >= 0
    x, y = x[valid], y[valid]
    if len(x) < 2:
        return 0.0
    dy = y - y.mean()
    denom = float(dy @ dy)
    if denom == 0.0:  # all points on one row: the minimum-norm least-squares slope is 0
        return 0.0
    return math.atan(float(dy @ (x - x.mean())) / denom)


def line_accuracy(pred: Sequence[float], gt: Sequence[float], thresh: float) -> float:
    """Fraction of rows where |pred − gt| < thresh, negatives on both sides mapped to −100."""
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    p = np.where(p >= 0, p, MISSING)
    g = np.where(g >= 0, g, MISSING)
    return float(np.mean(np.abs(p - g) < thresh)) if len(g) else 0.0


def bench(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]], y_samples: Sequence[float],
          run_time: float = 0.0) -> tuple[float, float, float]:
    """(accuracy, FP rate, FN rate) of one image, exactly as the benchmark's `LaneEval.bench`."""
    for i, lane in enumerate(pred):
        if len(lane) != len(y_samples):
            raise ValueError(f"predicted lane {i} has {len(lane)} x values but h_samples has "
                             f"{len(y_samples)}; each lane needs one x per h_sample (-2 where absent)")
    if run_time > MAX_RUN_TIME or len(pred) > len(gt) + 2:
        return 0.0, 0.0, 1.0
    threshs = [PIXEL_THRESH / math.cos(lane_angle(g, y_samples)) for g in gt]
    line_accs: list[float] = []
    fn = matched = 0
    for g, thresh in zip(gt, threshs, strict=True):
        best = max((line_accuracy(p, g, thresh) for p in pred), default=0.0)
        if best < PT_THRESH:
            fn += 1
        else:
            matched += 1
        line_accs.append(best)
    fp = len(pred) - matched
    if len(gt) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gt) > 4:
        s -= min(line_accs)
    return (s / max(min(4.0, len(gt)), 1.0),
            fp / len(pred) if len(pred) > 0 else 0.0,
            fn / max(min(float(len(gt)), 4.0), 1.0))


def evaluate_lanes(predictions: Iterable[Mapping[str, Any]],
                   ground_truth: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Dataset score: mean accuracy, FP and FN over the ground-truth images (the official rule).

    Both inputs are TuSimple records (`raw_file`, `lanes`; ground truth also `h_samples`,
    predictions also `run_time`).  Every ground-truth `raw_file` must have exactly one prediction.
    """
    preds: dict[str, Mapping[str, Any]] = {}
    for i, p in enumerate(predictions):
        missing = [k for k in ("raw_file", "lanes", "run_time") if k not in p]
        if missing:
            raise ValueError(f"prediction {i} lacks {', '.join(missing)}; each needs raw_file, lanes and run_time")
        preds[p["raw_file"]] = p
    gts = list(ground_truth)
    if not gts:
        raise ValueError("no ground-truth images to evaluate")
    absent = [g["raw_file"] for g in gts if g["raw_file"] not in preds]
    if absent:
        raise ValueError(f"{len(absent)} of {len(gts)} ground-truth images have no prediction, e.g. "
                         f"{', '.join(map(repr, absent[:3]))}; the benchmark needs one per test image")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} distinct predicted images for {len(gts)} ground-truth images; "
                         "the benchmark needs exactly one prediction per test image")
    acc = fp = fn = 0.0
    for g in gts:
        p = preds[g["raw_file"]]
        try:
            a, f_p, f_n = bench(p["lanes"], g["lanes"], g["h_samples"], float(p["run_time"]))
        except ValueError as e:
            raise ValueError(f"prediction for {g['raw_file']!r}: {e}") from e
        acc, fp, fn = acc + a, fp + f_p, fn + f_n
    n = len(gts)
    return {"accuracy": acc / n, "fp": fp / n, "fn": fn / n, "images": n}


def evaluate_files(pred_file: str | Path, gt_file: str | Path) -> dict[str, float]:
    """The benchmark's `bench_one_submit`: prediction and ground-truth JSON-lines files.

    The ground truth is validated as TuSimple labels (every lane one x per h_sample).
    """
    from ..data.tusimple import read_json_lines, read_labels

    return evaluate_lanes(read_json_lines(pred_file), [g.to_dict() for g in read_labels(gt_file)])
