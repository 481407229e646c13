"""pycocotools mAP: exact values on hand-made cases, the YOLO→COCO conversion, and agreement with
ultralytics' own validator on the same predictions."""

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from slr_prune.data.synthetic_detection import write_synthetic_detection  # noqa: E402
from slr_prune.metrics.coco import CocoEvaluator, coco_ground_truth, label_path, yolo_ground_truth  # noqa: E402

# Tolerance of the pycocotools-vs-ultralytics agreement (absolute, mAP in [0, 1]).  The two differ
# only in how the precision-recall curve is sampled: COCOeval reads precision as a step function at
# 101 recall points, ultralytics interpolates linearly at 101 points and integrates by trapezoids.
AGREEMENT_TOL = 0.01


pytestmark = pytest.mark.usefixtures("one_thread")


def _gt(boxes_by_image, categories=((1, "a"),)):
    images = [{"id": i + 1, "file_name": f"im{i}.jpg", "width": 100, "height": 100} for i in range(len(boxes_by_image))]
    anns = []
    for i, boxes in enumerate(boxes_by_image):
        for cat, (x, y, w, h) in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": n} for c, n in categories]}


def test_perfect_detections_score_one():
    ev = CocoEvaluator(_gt([[(1, (10, 10, 30, 20))], [(1, (50, 40, 20, 20)), (1, (5, 5, 10, 40))]]), ["a"])
    ev.add("im0.jpg", [[10, 10, 40, 30]], [0.9], [0])
    ev.add("dir/im1.jpg", [[50, 40, 70, 60], [5, 5, 15, 45]], [0.8, 0.7], [0, 0])
    m = ev.compute()
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)


def test_known_values_recall_precision_and_localisation():
    # one of two objects found: precision 1 up to recall 0.5 → 51 of COCO's 101 recall points
    ev = CocoEvaluator(_gt([[(1, (0, 0, 10, 10)), (1, (50, 50, 10, 10))]]), ["a"])
    ev.add("im0.jpg", [[0, 0, 10, 10]], [0.9], [0])
    assert ev.compute()["map50"] == pytest.approx(51 / 101)

    # a false positive ranked above the true one: precision 1/2 at every recall level
    ev = CocoEvaluator(_gt([[(1, (0, 0, 10, 10))]]), ["a"])
    ev.add("im0.jpg", [[60, 60, 70, 70], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])
    assert ev.compute()["map50"] == pytest.approx(0.5)

    # IoU 100/160 = 0.625: a match at thresholds 0.50, 0.55, 0.60 only → mAP@.5:.95 = 3/10
    ev = CocoEvaluator(_gt([[(1, (0, 0, 10, 10))]]), ["a"])
    ev.add("im0.jpg", [[0, 0, 10, 16]], [0.9], [0])
    m = ev.compute()
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(0.3) and m["map75"] == 0.0


def test_class_indices_map_to_category_ids_by_order_or_name():
    gt = _gt([[(3, (0, 0, 10, 10)), (7, (50, 50, 20, 20))]], categories=((7, "dog"), (1, "cat"), (3, "bird")))
    by_order = CocoEvaluator(gt, ["x", "y", "z"])  # names differ: i-th category by id
    assert by_order.category_ids == [1, 3, 7]
    by_name = CocoEvaluator(gt, ["dog", "Bird", "cat"])
    assert by_name.category_ids == [7, 3, 1]
    by_name.add("im0.jpg", [[0, 0, 10, 10], [50, 50, 70, 70]], [0.9, 0.9], [1, 0])
    assert by_name.compute()["map"] == pytest.approx(1.0)
    by_name = CocoEvaluator(gt, ["dog", "bird", "cat"])
    by_name.add("im0.jpg", [[0, 0, 10, 10], [50, 50, 70, 70]], [0.9, 0.9], [0, 1])  # classes swapped
    assert by_name.compute()["map50"] == 0.0
    with pytest.raises(ValueError, match="2 classes"):
        CocoEvaluator(gt, ["a", "b"])


def test_no_detections_and_errors(tmp_path):
    ev = CocoEvaluator(_gt([[(1, (0, 0, 10, 10))]]), ["a"])
    with pytest.raises(ValueError, match="no images were evaluated"):
        ev.compute()
    ev.add("im0.jpg", np.zeros((0, 4)), [], [])
    assert ev.compute()["map50"] == 0.0
    with pytest.raises(ValueError, match="'other.jpg' is not in the ground truth"):
        ev.add("other.jpg", [[0, 0, 1, 1]], [0.5], [0])
    with pytest.raises(ValueError, match="outside 0..0"):
        ev.add("im0.jpg", [[0, 0, 1, 1]], [0.5], [3])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        coco_ground_truth(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="lacks annotations, categories"):
        coco_ground_truth(tmp_path / "bad.json")


def test_yolo_labels_convert_to_the_same_coco_ground_truth(tmp_path):
    write_synthetic_detection(tmp_path, train_images=1, val_images=6, image_size=96, num_classes=4, seed=3)
    images = sorted((tmp_path / "images" / "val").glob("*.jpg"))
    names = ["circle", "square", "triangle", "cross"]
    built = yolo_ground_truth(images, names)
    written = coco_ground_truth(tmp_path / "annotations" / "instances_val.json")
    assert [(i["file_name"], i["width"], i["height"]) for i in built["images"]] == \
        [(i["file_name"], i["width"], i["height"]) for i in written["images"]]
    assert len(built["annotations"]) == len(written["annotations"]) > 0
    for a, b in zip(built["annotations"], written["annotations"], strict=True):
        assert a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-3)
    assert label_path(images[0]) == tmp_path / "labels" / "val" / images[0].with_suffix(".txt").name

    bad = label_path(images[0])
    bad.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match=r"class 7 is out of range; the data has 4 classes \(valid 0..3\)"):
        yolo_ground_truth(images, names)


def _noisy_predictions(batch, rng, nc):
    """Per image: the ground-truth boxes jittered, with random scores, some classes swapped and misses,
    plus random false positives; in the letterboxed pixel frame, like NMS output."""
    import torch

    out = []
    h, w = batch["img"].shape[2:]
    for i in range(batch["img"].shape[0]):
        sel = batch["batch_idx"] == i
        xywh = batch["bboxes"][sel].numpy() * np.array([w, h, w, h])
        cls = batch["cls"][sel].numpy().reshape(-1)
        keep = rng.random(len(cls)) > 0.1
        xywh, cls = xywh[keep], cls[keep]
        xywh = xywh * (1 + rng.normal(0, 0.03, xywh.shape)) + rng.normal(0, 0.5, xywh.shape)
        swap = rng.random(len(cls)) < 0.05
        cls = np.where(swap, (cls + 1) % nc, cls)
        conf = rng.uniform(0.3, 1.0, len(cls))
        n_fp = int(rng.integers(0, 3))
        fp = np.column_stack([rng.uniform(10, w - 10, n_fp), rng.uniform(10, h - 10, n_fp),
                              rng.uniform(8, 30, n_fp), rng.uniform(8, 30, n_fp)])
        xywh = np.concatenate([xywh, fp]) if n_fp else xywh
        cls = np.concatenate([cls, rng.integers(0, nc, n_fp)]) if n_fp else cls
        conf = np.concatenate([conf, rng.uniform(0.05, 0.6, n_fp)]) if n_fp else conf
        order = np.argsort(-conf)
        xyxy = np.column_stack([xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2,
                                xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2])[order]
        out.append({"bboxes": torch.tensor(xyxy, dtype=torch.float32),
                    "conf": torch.tensor(conf[order], dtype=torch.float32),
                    "cls": torch.tensor(cls[order], dtype=torch.float32)})
    return out


def test_pycocotools_agrees_with_ultralytics_validator_on_the_same_predictions(tmp_path):
    """The same NMS-style predictions scored by slr_prune's COCO path (boxes mapped back to the
    original images, ground truth from the COCO JSON and from the YOLO labels) and by ultralytics'
    DetectionValidator (its matching and DetMetrics, in the letterboxed frame)."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")
    import torch

    from slr_prune.adapters.yolo import YoloTask

    data = write_synthetic_detection(tmp_path / "shapes", train_images=2, val_images=40, image_size=96,
                                     num_classes=4, max_objects=5, seed=11)
    task = YoloTask("yolov3-tiny", data=data, image_size=96, batch_size=8)
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import ops

    validator = DetectionValidator(args={"plots": False, "save_json": False, "verbose": False}, save_dir=tmp_path / "v")
    validator.device = torch.device("cpu")
    validator.dataloader = task.val_loader()
    validator.data = task.data.ultralytics_dict()
    validator.init_metrics(task.build_model())
    from_json = CocoEvaluator(tmp_path / "shapes" / "annotations" / "instances_val.json", task.data.names)
    from_labels = task.evaluator()
    rng = np.random.default_rng(0)
    for batch in task.val_loader():
        preds = _noisy_predictions(batch, rng, task.data.nc)
        shape = batch["img"].shape[2:]
        for i, p in enumerate(preds):
            boxes = ops.scale_boxes(shape, p["bboxes"].clone(), batch["ori_shape"][i], ratio_pad=batch["ratio_pad"][i])
            for ev in (from_json, from_labels):
                ev.add(batch["im_file"][i], boxes.numpy(), p["conf"].numpy(), p["cls"].numpy())
        validator.update_metrics(preds, validator.preprocess(dict(batch)))
    ours_json, ours_labels = from_json.compute(), from_labels.compute()
    theirs = validator.get_stats()
    assert ours_json["map50"] == pytest.approx(ours_labels["map50"], abs=1e-4)
    assert ours_json["map"] == pytest.approx(ours_labels["map"], abs=1e-4)
    print("pycocotools", ours_json["map50"], ours_json["map"], "ultralytics", theirs["metrics/mAP50(B)"],
          theirs["metrics/mAP50-95(B)"])
    assert 0.3 < ours_json["map"] < ours_json["map50"] < 0.95  # non-trivial: misses, swaps, false positives
    assert ours_json["map50"] == pytest.approx(theirs["metrics/mAP50(B)"], abs=AGREEMENT_TOL)
    assert ours_json["map"] == pytest.approx(theirs["metrics/mAP50-95(B)"], abs=AGREEMENT_TOL)
