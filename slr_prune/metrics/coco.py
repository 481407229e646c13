"""COCO box mAP with pycocotools: the judge of every detection number slr_prune reports.

Ground truth comes from a COCO instances JSON (2014 or 2017; `coco_ground_truth`) or is built
from YOLO label files (`yolo_ground_truth`: class xc yc w h normalised, one file per image, in the
`labels/` folder beside `images/`).  Predictions are added per image in pixel xyxy coordinates of
the original image; `CocoEvaluator.compute()` writes them as COCO result records and runs
COCOeval, returning mAP@0.5 ("map50"), mAP@0.5:0.95 ("map") and mAP@0.75 ("map75").

Model class i maps to the i-th COCO category (categories sorted by id, as the 80 COCO classes
are numbered 1..90 with gaps), or by name when every name matches.  pycocotools is imported
inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CocoEvaluator", "coco_ground_truth", "yolo_ground_truth", "label_path", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")


def label_path(image: str | Path) -> Path:
    """The YOLO label file of an image: the last '/images/' folder becomes '/labels/', suffix '.txt'."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, _, tail = s.rpartition(sa)
        s = head + sb + tail
    return Path(s).with_suffix(".txt")


def coco_ground_truth(json_path: str | Path) -> dict[str, Any]:
    """A COCO instances file read as a dict, with a clear error when it is missing or not COCO."""
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"COCO annotation file {str(path)!r} is not valid JSON: {e}") from e
    return check_coco(data, str(path))


def check_coco(data: Any, source: str) -> dict[str, Any]:
    """`data` if it is COCO instances ground truth with the field types pycocotools expects; else a
    ValueError naming the source, the entry and the field."""
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, Mapping) or k not in data]
    if missing:
        raise ValueError(f"{source!r} is not a COCO instances file: it lacks {', '.join(missing)}")
    number = (int, float)
    fields = {"images": {"id": int, "file_name": str, "width": number, "height": number},
              "annotations": {"id": int, "image_id": int, "category_id": int, "bbox": list},
              "categories": {"id": int}}
    for key, types in fields.items():
        if not isinstance(data[key], list):
            raise ValueError(f"{source!r}: {key} must be a list, got {type(data[key]).__name__}")
        for i, entry in enumerate(data[key]):
            for name, tp in types.items():
                value = entry.get(name) if isinstance(entry, Mapping) else None
                if not isinstance(value, tp) or isinstance(value, bool):
                    want = tp.__name__ if isinstance(tp, type) else "a number"
                    raise ValueError(f"{source!r}: {key}[{i}].{name} must be {want}, got {value!r}")
    for i, a in enumerate(data["annotations"]):
        box = a["bbox"]
        if len(box) != 4 or not all(isinstance(v, number) and math.isfinite(v) for v in box) or min(box[2:]) < 0:
            raise ValueError(f"{source!r}: annotations[{i}].bbox must be [x, y, w, h] of finite numbers with "
                             f"w, h ≥ 0, got {box!r}")
    return dict(data)


def yolo_ground_truth(images: Sequence[str | Path], names: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth built from the YOLO labels of `images` (image ids 1.., category ids 1..nc).

    A missing label file means an image without objects.  Class indices outside 0..nc-1 and
    malformed lines raise ValueError naming the file and line.
    """
    from PIL import Image

    nc = len(names)
    gt: dict[str, Any] = {"images": [], "annotations": [],
                          "categories": [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)]}
    for image_id, image in enumerate(images, start=1):
        with Image.open(image) as im:
            width, height = _exif_size(im)
        gt["images"].append({"id": image_id, "file_name": Path(image).name, "width": width, "height": height})
        lp = label_path(image)
        if not lp.is_file():
            continue
        for line_no, line in enumerate(lp.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            values = line.split()
            try:
                cls, xc, yc, w, h = (float(v) for v in values[:5])
            except ValueError as e:
                raise ValueError(f"{lp}:{line_no}: expected 'class xc yc w h', got {line!r}") from e
            if len(values) > 5 and len(values) % 2 == 0:
                raise ValueError(f"{lp}:{line_no}: expected 'class xc yc w h' (or a polygon), got {line!r}")
            if len(values) > 5:  # a segment polygon: its box
                xy = np.asarray(values[1:], dtype=np.float64).reshape(-1, 2)
                (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
                xc, yc, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            if not all(math.isfinite(v) for v in (cls, xc, yc, w, h)) or w < 0 or h < 0:
                raise ValueError(f"{lp}:{line_no}: values must be finite and the box size w, h ≥ 0, got {line!r}")
            if cls != int(cls) or not 0 <= cls < nc:
                raise ValueError(f"{lp}:{line_no}: class {values[0]} is out of range; the data has {nc} classes "
                                 f"(valid 0..{nc - 1})")
            bw, bh = w * width, h * height
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                "bbox": [(xc - w / 2) * width, (yc - h / 2) * height, bw, bh], "area": bw * bh, "iscrowd": 0})
    return gt


def _exif_size(im: Any) -> tuple[int, int]:
    """Width and height as the image is displayed (EXIF rotations 6 and 8 swap them, as ultralytics does)."""
    width, height = im.size
    with contextlib.suppress(Exception):
        if im.getexif().get(0x0112) in (6, 8):
            return height, width
    return width, height


class CocoEvaluator:
    """Collects per-image detections and scores them with pycocotools' COCOeval (bbox).

    `ground_truth` is a COCO dict (from `coco_ground_truth` or `yolo_ground_truth`) or the path of
    an instances JSON; `names` are the model's class names, in class-index order.
    """

    def __init__(self, ground_truth: Mapping[str, Any] | str | Path, names: Sequence[str],
                 max_dets: int = 100):
        from pycocotools.coco import COCO

        data = check_coco(ground_truth, "(dict)") if isinstance(ground_truth, Mapping) \
            else coco_ground_truth(ground_truth)
        self.source = "" if isinstance(ground_truth, Mapping) else str(ground_truth)
        data = dict(data)
        data.setdefault("info", {})
        data.setdefault("licenses", [])
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.names = [str(n) for n in names]
        self.category_ids = self._category_map(data["categories"])
        self.image_ids: dict[str, int] = {}
        for img in data["images"]:
            name = Path(img["file_name"]).name
            if name in self.image_ids:
                raise ValueError(f"ground truth {self.source or '(dict)'} names image {name!r} twice")
            self.image_ids[name] = int(img["id"])
        self.max_dets = max_dets
        self.results: list[dict[str, Any]] = []
        self.evaluated: list[int] = []

    def _category_map(self, categories: Sequence[Mapping[str, Any]]) -> list[int]:
        cats = sorted(categories, key=lambda c: int(c["id"]))
        by_name = {str(c.get("name", "")).strip().lower(): int(c["id"]) for c in cats}
        wanted = [n.strip().lower() for n in self.names]
        if all(n in by_name for n in wanted):
            return [by_name[n] for n in wanted]
        if len(cats) == len(self.names):
            return [int(c["id"]) for c in cats]
        raise ValueError(
            f"ground truth {self.source or '(dict)'} has {len(cats)} categories, the model {len(self.names)} "
            f"classes, and the names differ; class i must map to the i-th category by id, or names must match")

    def image_id(self, image: str | Path) -> int:
        name = Path(image).name
        if name not in self.image_ids:
            raise ValueError(f"image {name!r} is not in the ground truth {self.source or '(built from labels)'}; "
                             "the annotation file must describe the evaluated images")
        return self.image_ids[name]

    def add(self, image: str | Path, boxes_xyxy: Any, scores: Any, classes: Any) -> None:
        """Detections of one image in pixel coordinates of the original image."""
        image_id = self.image_id(image)
        self.evaluated.append(image_id)
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(classes).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes for one image")
        if len(classes) and (classes.min() < 0 or classes.max() >= len(self.category_ids)):
            raise ValueError(f"predicted class {int(classes.max())} is outside 0..{len(self.category_ids) - 1}")
        for (x0, y0, x1, y1), s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            self.results.append({"image_id": image_id, "category_id": self.category_ids[c],
                                 "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                                 "score": round(s, 5)})

    def write_results(self, path: str | Path) -> Path:
        """The detections as a COCO results JSON (the format of the COCO evaluation server)."""
        from ..atomic import write_text_atomic

        return write_text_atomic(json.dumps(self.results), path)

    def compute(self) -> dict[str, float]:
        """COCOeval over the images added so far: map50, map, map75, mar100, and map_small/medium/large
        for the object sizes present in the ground truth."""
        from pycocotools.cocoeval import COCOeval

        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
        if not self.evaluated:
            raise ValueError("no images were evaluated; add() detections of at least one image first")
        if not self.results or not self.coco.getAnnIds(imgIds=sorted(set(self.evaluated))):
            return {**dict.fromkeys(keys[:3], 0.0), "mar100": 0.0}
        with contextlib.redirect_stdout(io.StringIO()):
            dt = self.coco.loadRes(self.results)
            ev = COCOeval(self.coco, dt, "bbox")
            ev.params.imgIds = sorted(set(self.evaluated))
            ev.params.maxDets = [1, 10, self.max_dets]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(s) for s in ev.stats]  # -1: no ground truth in that area range, left out
        out = {k: max(0.0, v) for k, v in zip(keys[:3], stats[:3], strict=True)}
        out.update({k: v for k, v in zip(keys[3:], stats[3:6], strict=True) if v >= 0})
        out["mar100"] = max(0.0, stats[8])
        return out
