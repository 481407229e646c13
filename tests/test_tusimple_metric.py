"""The TuSimple metric against values computed by hand from the benchmark's rules."""

import json
import math

import numpy as np
import pytest

from slr_prune.metrics.tusimple import bench, evaluate_files, evaluate_lanes, lane_angle, line_accuracy

Y = [float(y) for y in range(160, 720, 10)]  # 56 rows


def vertical(x: float) -> list[float]:
    return [x] * len(Y)


GT4 = [vertical(200), vertical(500), vertical(800), vertical(1100)]


def test_perfect_prediction_scores_one_with_no_fp_or_fn():
    assert bench(GT4, GT4, Y) == (1.0, 0.0, 0.0)
    slanted = [[100 + 0.5 * y for y in Y], [1200 - 0.8 * y for y in Y]]
    assert bench(slanted, slanted, Y) == (1.0, 0.0, 0.0)


def test_threshold_is_20_pixels_for_vertical_lanes():
    near = [vertical(219.9), *GT4[1:]]  # |Δ| = 19.9 < 20 on every row
    assert bench(near, GT4, Y) == (1.0, 0.0, 0.0)
    far = [vertical(220), *GT4[1:]]  # |Δ| = 20 is not < 20: the lane is missed
    acc, fp, fn = bench(far, GT4, Y)
    assert acc == pytest.approx(3 / 4)  # (1 + 1 + 1 + 0) / 4
    assert fp == pytest.approx(1 / 4)  # 4 predictions, 3 matched
    assert fn == pytest.approx(1 / 4)


def test_threshold_widens_with_the_lane_angle():
    gt = [[100 + 0.5 * y for y in Y]]  # x = 100 + y/2: θ = arctan(1/2), threshold 20/cos θ = 22.36
    assert lane_angle(gt[0], Y) == pytest.approx(math.atan(0.5))
    assert bench([[x + 22.3 for x in gt[0]]], gt, Y) == (1.0, 0.0, 0.0)
    assert bench([[x - 22.4 for x in gt[0]]], gt, Y) == (0.0, 1.0, 1.0)
    steep = [[100 + 1.0 * y for y in Y]]  # θ = 45°: threshold 28.28
    assert bench([[x + 28 for x in steep[0]]], steep, Y) == (1.0, 0.0, 0.0)
    assert bench([[x + 28.5 for x in steep[0]]], steep, Y) == (0.0, 1.0, 1.0)


def test_a_shifted_lane_is_missed_when_under_85_percent_of_rows_hit():
    gt = [vertical(300)]
    # 56 rows: 8 shifted rows leave 48/56 = 0.857 (matched); 9 leave 47/56 = 0.839 (missed)
    eight = [vertical(300)[:48] + [400.0] * 8]
    nine = [vertical(300)[:47] + [400.0] * 9]
    assert bench(eight, gt, Y) == (pytest.approx(48 / 56), 0.0, 0.0)
    assert bench(nine, gt, Y) == (pytest.approx(47 / 56), 1.0, 1.0)


def test_an_extra_lane_is_a_false_positive():
    gt = GT4[:2]
    pred = [*GT4[:2], vertical(900)]
    assert bench(pred, gt, Y) == (1.0, pytest.approx(1 / 3), 0.0)


def test_a_missing_lane_is_a_false_negative():
    gt = GT4[:3]
    acc, fp, fn = bench(GT4[:2], gt, Y)
    assert acc == pytest.approx(2 / 3) and fp == 0.0 and fn == pytest.approx(1 / 3)
    assert bench([], gt, Y) == (0.0, 0.0, 1.0)


def test_more_than_four_ground_truth_lanes():
    gt5 = [*GT4, vertical(1250)]
    # all five found: the worst accuracy (1) is dropped, 4/4
    assert bench(gt5, gt5, Y) == (1.0, 0.0, 0.0)
    # four found, one missed: the miss is forgiven and the worst lane (0) dropped from the sum
    assert bench(GT4, gt5, Y) == (1.0, 0.0, 0.0)
    # three found, two missed: one miss forgiven, FN = 1/4; accuracy (3 + 0 + 0 − 0) / 4
    assert bench(GT4[:3], gt5, Y) == (0.75, 0.0, 0.25)


def test_rows_missing_on_both_sides_count_as_hits():
    gt = [[-2.0] * 10 + [400.0] * 46]
    pred_same = [[-2.0] * 10 + [400.0] * 46]
    assert bench(pred_same, gt, Y) == (1.0, 0.0, 0.0)
    pred_full = [[400.0] * 56]  # predicts points where the ground truth has none: 46/56 = 0.821
    assert bench(pred_full, gt, Y) == (pytest.approx(46 / 56), 1.0, 1.0)
    # the angle is fitted on labelled points only
    assert lane_angle([-2, -2, 10, 20, 30], [0, 10, 20, 30, 40]) == pytest.approx(math.atan(1.0))


def test_too_many_predictions_or_too_slow_score_zero():
    gt = GT4[:1]
    assert bench(GT4, gt, Y) == (0.0, 0.0, 1.0)  # 4 > 1 + 2
    assert bench(GT4[:3], gt, Y)[0] == 1.0  # 3 ≤ 1 + 2 is scored
    assert bench(GT4[:1], gt, Y, run_time=201) == (0.0, 0.0, 1.0)
    assert bench(GT4[:1], gt, Y, run_time=200) == (1.0, 0.0, 0.0)


def test_format_error_names_the_lane():
    with pytest.raises(ValueError, match="predicted lane 1 has 3 x values but h_samples has 56"):
        bench([vertical(1), [1.0, 2.0, 3.0]], GT4, Y)


def test_lane_angle_matches_a_least_squares_fit():
    rng = np.random.default_rng(0)
    for _ in range(5):
        ys = np.array(Y)
        xs = rng.uniform(-1, 1) * ys + rng.normal(0, 15, len(ys)) + 600
        xs[rng.random(len(ys)) < 0.2] = -2
        design = np.stack([ys[xs >= 0], np.ones(int((xs >= 0).sum()))], 1)  # x = k·y + b, as LinearRegression
        k = np.linalg.lstsq(design, xs[xs >= 0], rcond=None)[0][0]
        assert lane_angle(xs, ys) == pytest.approx(math.atan(k), abs=1e-9)
    assert lane_angle([5, -2, -2], [0, 1, 2]) == 0.0  # fewer than 2 points: angle 0
    assert line_accuracy([1, 2], [1, 50], 20) == 0.5


def test_dataset_score_is_the_mean_over_ground_truth_images(tmp_path):
    gts = [{"raw_file": "a.jpg", "lanes": GT4[:2], "h_samples": Y},
           {"raw_file": "b.jpg", "lanes": GT4[:3], "h_samples": Y}]
    preds = [{"raw_file": "b.jpg", "lanes": GT4[:2], "run_time": 10},  # (2/3, 0, 1/3)
             {"raw_file": "a.jpg", "lanes": GT4[:3], "run_time": 10}]  # (1, 1/3, 0)
    scores = evaluate_lanes(preds, gts)
    assert scores["accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["fp"] == pytest.approx((1 / 3) / 2)
    assert scores["fn"] == pytest.approx((1 / 3) / 2)
    pred_file, gt_file = tmp_path / "pred.json", tmp_path / "gt.json"
    pred_file.write_text("".join(json.dumps(p) + "\n" for p in preds))
    gt_file.write_text("".join(json.dumps(g) + "\n" for g in gts))
    assert evaluate_files(pred_file, gt_file) == scores
    with pytest.raises(ValueError, match="have no prediction.*'b.jpg'"):
        evaluate_lanes(preds[1:], gts)
    with pytest.raises(ValueError, match="lacks run_time"):
        evaluate_lanes([{"raw_file": "a.jpg", "lanes": []}], gts)
    with pytest.raises(ValueError, match="'a.jpg'.*predicted lane 0 has 2"):
        evaluate_lanes([{"raw_file": "a.jpg", "lanes": [[1, 2]], "run_time": 1}, preds[0]], gts)
