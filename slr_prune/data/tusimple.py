"""TuSimple lane labels on disk, UFLD's row-anchor and segmentation targets, and decoding.

The label format (one JSON object per line): `{"raw_file": "clips/.../20.jpg", "lanes": [[x, ...],
...], "h_samples": [y, ...]}`, one x per h_sample, x = −2 where the lane has no marking, in
1280×720 image coordinates.  A dataset root holds the images under the `raw_file` paths and the
label files: `label_data_*.json` (training) and `test_label.json` (test ground truth).

Targets follow UFLD: at most two lanes per side of the ego car, ordered left to right into 4
slots by the slope of each lane; each lane's x at every row anchor becomes one of `griding_num`
column cells (or the extra "no lane" cell); lanes that stop above the last anchor are extended
to the image border by a line fitted to their lower half.  The head's output decodes back to
TuSimple prediction records by the expected column under the softmax ("rel" mode).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "LabelFormatError", "LaneLabel", "TuSimpleDataset", "LABEL_HEIGHT", "LABEL_WIDTH", "H_SAMPLES",
    "read_json_lines", "read_labels", "split_label_files", "default_row_anchors", "lane_slots",
    "points_at_rows", "extend_to_border", "row_anchor_targets", "segmentation_target", "decode_lanes",
    "resample_lane", "prediction_records", "write_json_lines",
]

LABEL_HEIGHT, LABEL_WIDTH = 720, 1280
H_SAMPLES: tuple[int, ...] = tuple(range(160, 711, 10))  # the usual TuSimple rows (56)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NO_POINT = -2  # TuSimple's "no marking on this row"
MIN_LANE_LENGTH = 90.0  # px between the first and last labelled point; shorter lanes are dropped
LANE_THICKNESS = 16.0  # px at 1280 wide, for the segmentation target


class LabelFormatError(ValueError):
    """A TuSimple label file that does not follow the format; the message names file and line."""


@dataclass(frozen=True)
class LaneLabel:
    """One labelled image: its path under the root, lanes (one x per h_sample) and h_samples."""

    raw_file: str
    lanes: list[list[float]]
    h_samples: list[float]
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"raw_file": self.raw_file, "lanes": self.lanes, "h_samples": self.h_samples}


# ---- reading ----------------------------------------------------------------------------------
def read_json_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TuSimple label file {str(path)!r} does not exist")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise LabelFormatError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); "
                                       "each line must hold one JSON object") from e
            if not isinstance(record, dict):
                raise LabelFormatError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            record["_line"] = lineno
            records.append(record)
    return records


def _numbers(value: Any, what: str, where: str) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                              for v in value):
        raise LabelFormatError(f"{where}: {what} must be a list of numbers")
    if not all(math.isfinite(v) for v in value):
        raise LabelFormatError(f"{where}: {what} holds NaN or Inf; use -2 for a lane absent at a row")
    return [float(v) for v in value]


def parse_label(record: dict[str, Any], where: str) -> LaneLabel:
    """Validate one record: raw_file a string, h_samples numbers, every lane one x per h_sample."""
    missing = [k for k in ("raw_file", "lanes", "h_samples") if k not in record]
    if missing:
        raise LabelFormatError(f"{where}: missing {', '.join(missing)}; a TuSimple label needs raw_file, "
                               "lanes and h_samples")
    if not isinstance(record["raw_file"], str) or not record["raw_file"]:
        raise LabelFormatError(f"{where}: raw_file must be a non-empty path string")
    h_samples = _numbers(record["h_samples"], "h_samples", where)
    if any(b <= a for a, b in zip(h_samples, h_samples[1:], strict=False)):
        raise LabelFormatError(f"{where}: h_samples must increase from top to bottom")
    if not isinstance(record["lanes"], list):
        raise LabelFormatError(f"{where}: lanes must be a list of lanes")
    lanes = []
    for i, lane in enumerate(record["lanes"]):
        xs = _numbers(lane, f"lane {i}", where)
        if len(xs) != len(h_samples):
            raise LabelFormatError(f"{where}: lane {i} has {len(xs)} x values but h_samples has "
                                   f"{len(h_samples)}; each lane needs one x per h_sample (-2 where absent)")
        lanes.append(xs)
    return LaneLabel(record["raw_file"], lanes, h_samples, source=where)


def read_labels(paths: str | Path | Iterable[str | Path]) -> list[LaneLabel]:
    """Every label of one or several TuSimple label files, validated."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    if not paths:
        raise FileNotFoundError("no TuSimple label files given")
    labels = []
    for path in paths:
        for record in read_json_lines(path):
            labels.append(parse_label(record, f"{path}:{record['_line']}"))
    return labels


def split_label_files(root: str | Path, split: str) -> list[Path]:
    """Label files of a split under a TuSimple root: train = label_data_*.json, test = test_label.json."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"TuSimple root {str(root)!r} does not exist; give the folder that holds "
                                "clips/, label_data_*.json and test_label.json")
    if split == "train":
        files = sorted(root.glob("label_data_*.json"))
        if not files:
            raise FileNotFoundError(f"TuSimple root {str(root)!r} has no training labels label_data_*.json "
                                    "(e.g. label_data_0313.json, label_data_0531.json, label_data_0601.json)")
        return files
    if split == "test":
        path = root / "test_label.json"
        if not path.is_file():
            raise FileNotFoundError(f"TuSimple label file {str(path)!r} does not exist; the test ground "
                                    "truth test_label.json belongs in the dataset root")
        return [path]
    raise ValueError(f"unknown TuSimple split {split!r}; choose 'train' or 'test'")


# ---- targets ----------------------------------------------------------------------------------
def default_row_anchors(num: int = 56, top: float = 160, bottom: float = 710) -> list[float]:
    """`num` rows evenly from `top` to `bottom` in label coordinates; 56 gives UFLD's 160…710 step 10."""
    if num < 2:
        raise ValueError(f"num_row_anchors must be at least 2, got {num}")
    return [float(round(v, 3)) for v in np.linspace(top, bottom, num)]


def lane_slots(lanes: Sequence[Sequence[float]], h_samples: Sequence[float], num_lanes: int = 4,
               min_length: float = MIN_LANE_LENGTH) -> list[np.ndarray | None]:
    """Lanes placed into `num_lanes` slots, left to right, as UFLD's TuSimple conversion does.

    A lane's side is the sign of the slope of its least-squares line y(x) (negative: left of the
    ego car); on each side the steepest lanes are the ones nearest the car.  Up to num_lanes/2
    per side are kept; lanes shorter than `min_length` pixels are dropped.
    """
    if num_lanes < 2 or num_lanes % 2:
        raise ValueError(f"num_lanes must be even and ≥ 2 (half on each side of the car), got {num_lanes}")
    ys = np.asarray(h_samples, dtype=np.float64)
    left, right = [], []
    for lane in lanes:
        xs = np.asarray(lane, dtype=np.float64)
        valid = xs >= 0
        if valid.sum() < 2:
            continue
        x, y = xs[valid], ys[valid]
        if math.hypot(x[0] - x[-1], y[0] - y[-1]) < min_length:
            continue
        dx = x - x.mean()
        var = float(dx @ dx)
        if var == 0.0:  # vertical: steepest possible, its side is where it stands
            angle = math.copysign(math.pi / 2, -1.0 if x[0] < LABEL_WIDTH / 2 else 1.0)
        else:
            angle = math.atan(float(dx @ (y - y.mean())) / var)
        if angle < 0:
            left.append((angle, xs))
        elif angle > 0:
            right.append((angle, xs))
    half = num_lanes // 2
    slots: list[np.ndarray | None] = [None] * num_lanes
    left.sort(key=lambda t: t[0])  # most negative (steepest) first: nearest the car
    right.sort(key=lambda t: -t[0])  # most positive first
    for j, (_, xs) in enumerate(left[:half]):
        slots[half - 1 - j] = xs
    for j, (_, xs) in enumerate(right[:half]):
        slots[half + j] = xs
    return slots


def points_at_rows(xs: Sequence[float], h_samples: Sequence[float], rows: Sequence[float]) -> np.ndarray:
    """x of a labelled lane at `rows`, linear between labelled points, −1 outside their span.

    Consecutive labelled points are joined even across unlabelled rows, as the drawn
    segmentation labels UFLD reads its targets from join them.
    """
    xs, ys, rows = (np.asarray(v, dtype=np.float64) for v in (xs, h_samples, rows))
    valid = xs >= 0
    out = np.full(len(rows), -1.0)
    if not valid.any():
        return out
    yv, xv = ys[valid], xs[valid]
    inside = (rows >= yv[0]) & (rows <= yv[-1])
    out[inside] = np.interp(rows[inside], yv, xv)
    return out


def extend_to_border(points: np.ndarray, rows: Sequence[float], width: float = LABEL_WIDTH,
                     min_points: int = 6) -> np.ndarray:
    """Extend a lane that stops above the last row downwards by a line fitted to its lower half.

    UFLD does this so that every lane reaches the image border in the targets; extended points
    that leave [0, width − 1] stay absent (−1).  Lanes with fewer than `min_points` are kept as is.
    """
    points = np.array(points, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    valid = np.flatnonzero(points >= 0)
    if len(valid) < min_points or valid[-1] == len(points) - 1:
        return points
    lower = valid[len(valid) // 2:]
    slope, intercept = np.polyfit(rows[lower], points[lower], 1)
    tail = slice(valid[-1] + 1, None)
    fitted = slope * rows[tail] + intercept
    points[tail] = np.where((fitted >= 0) & (fitted <= width - 1), fitted, -1.0)
    return points


def row_anchor_targets(label: LaneLabel, row_anchors: Sequence[float], griding_num: int = 100,
                       num_lanes: int = 4, width: float = LABEL_WIDTH, extend: bool = True) -> np.ndarray:
    """(num_anchors, num_lanes) int64 classes: the column cell of each slot's lane per anchor row.

    Cell = ⌊x / ((width − 1)/(griding_num − 1))⌋ over the original image width; `griding_num`
    means "no lane on this row".
    """
    step = (width - 1) / (griding_num - 1)
    target = np.full((len(row_anchors), num_lanes), griding_num, dtype=np.int64)
    for slot, xs in enumerate(lane_slots(label.lanes, label.h_samples, num_lanes)):
        if xs is None:
            continue
        pts = points_at_rows(xs, label.h_samples, row_anchors)
        if extend:
            pts = extend_to_border(pts, row_anchors, width)
        has = pts >= 0
        target[has, slot] = np.clip(np.floor(pts[has] / step), 0, griding_num - 1).astype(np.int64)
    return target


def segmentation_target(label: LaneLabel, size: tuple[int, int], num_lanes: int = 4,
                        label_size: tuple[int, int] = (LABEL_HEIGHT, LABEL_WIDTH),
                        thickness: float = LANE_THICKNESS) -> np.ndarray:
    """(h, w) uint8 mask for the auxiliary branch: slot k's lane drawn with value k + 1.

    Drawn directly at the branch's resolution, `thickness` scaled from 1280 wide (at least 1 px).
    """
    from PIL import Image, ImageDraw

    h, w = size
    sy, sx = h / label_size[0], w / label_size[1]
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    line_width = max(1, round(thickness * sx))
    ys = np.asarray(label.h_samples, dtype=np.float64)
    for slot, xs in enumerate(lane_slots(label.lanes, label.h_samples, num_lanes)):
        if xs is None:
            continue
        valid = xs >= 0
        pts = [(float(x) * sx, float(y) * sy) for x, y in zip(xs[valid], ys[valid], strict=True)]
        draw.line(pts, fill=slot + 1, width=line_width)
    return np.asarray(mask, dtype=np.uint8)


# ---- decoding ---------------------------------------------------------------------------------
def decode_lanes(logits: Tensor, width: float = LABEL_WIDTH) -> Tensor:
    """(N, griding_num + 1, A, L) head output → (N, A, L) x in label pixels, −2 where no lane.

    UFLD's "rel" decoding: the expected cell under the softmax over the real cells, unless the
    arg-max is the "no lane" cell; x = (cell + 0.5) · width / (griding_num − 1), rounded.
    """
    if logits.dim() != 4:
        raise ValueError(f"expected head output of shape (N, griding_num + 1, anchors, lanes), got "
                         f"{tuple(logits.shape)}")
    griding_num = logits.shape[1] - 1
    logits = logits.detach().float()
    none = logits.argmax(1) == griding_num
    prob = logits[:, :griding_num].softmax(1)
    cells = torch.arange(griding_num, dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
    loc = (prob * cells).sum(1)
    x = torch.round((loc + 0.5) * width / (griding_num - 1))
    return torch.where(none, torch.full_like(x, NO_POINT), x)


def resample_lane(xs: Sequence[float], rows: Sequence[float], h_samples: Sequence[float]) -> list[int]:
    """A lane known at `rows` (−2 = absent) as TuSimple integers at `h_samples`.

    Rows equal to an anchor take its value; rows between two anchors with points are linearly
    interpolated; anything else is −2.  With h_samples = rows this is the identity.
    """
    xs, rows = np.asarray(xs, dtype=np.float64), np.asarray(rows, dtype=np.float64)
    out = []
    for y in h_samples:
        i = int(np.searchsorted(rows, y, side="left"))
        if i < len(rows) and rows[i] == y:
            x = xs[i]
        elif 0 < i < len(rows) and xs[i - 1] >= 0 and xs[i] >= 0:
            t = (y - rows[i - 1]) / (rows[i] - rows[i - 1])
            x = xs[i - 1] + t * (xs[i] - xs[i - 1])
        else:
            x = NO_POINT
        out.append(int(round(x)) if x >= 0 else NO_POINT)
    return out


def prediction_records(logits: Tensor, row_anchors: Sequence[float], labels: Sequence[LaneLabel],
                       run_time: float = 10.0, drop_empty: bool = False,
                       width: float = LABEL_WIDTH) -> list[dict[str, Any]]:
    """TuSimple prediction records for a batch, on each label's own h_samples.

    Like UFLD every slot is reported (an empty slot is a lane of −2s that counts as a false
    positive); `drop_empty=True` leaves such slots out.  `run_time` is in ms (UFLD writes 10).
    """
    if len(labels) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} outputs for {len(labels)} labels")
    if logits.shape[2] != len(row_anchors):
        raise ValueError(f"head has {logits.shape[2]} row anchors, but {len(row_anchors)} anchor rows were given")
    xs = decode_lanes(logits, width).cpu().numpy()
    records = []
    for n, label in enumerate(labels):
        lanes = [resample_lane(xs[n, :, k], row_anchors, label.h_samples) for k in range(xs.shape[2])]
        if drop_empty:
            lanes = [lane for lane in lanes if any(x >= 0 for x in lane)]
        records.append({"raw_file": label.raw_file, "lanes": lanes,
                        "h_samples": [int(y) if float(y).is_integer() else y for y in label.h_samples],
                        "run_time": run_time})
    return records


def write_json_lines(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSON lines (the TuSimple label and submission format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")
    return path


# ---- dataset ----------------------------------------------------------------------------------
class TuSimpleDataset(Dataset):
    """Images resized to `input_size` (h, w), with row-anchor and segmentation targets.

    Items are (image, cls_target (A, L) int64, seg_target (h/8, w/8) int64, index); the index
    maps a batch back to `labels` for decoding and the metric.
    """

    def __init__(self, root: str | Path, label_files: str | Path | Iterable[str | Path],
                 input_size: tuple[int, int] = (288, 800), row_anchors: Sequence[float] | None = None,
                 griding_num: int = 100, num_lanes: int = 4, seg_stride: int = 8, limit: int | None = None):
        self.root = Path(root)
        self.labels = read_labels(label_files)
        if limit is not None:
            self.labels = self.labels[:limit]
        if not self.labels:
            raise ValueError(f"TuSimple label files {label_files!s} hold no labels")
        for label in self.labels:
            if not (self.root / label.raw_file).is_file():
                raise FileNotFoundError(f"image {label.raw_file!r} ({label.source}) is missing under the "
                                        f"TuSimple root {str(self.root)!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.row_anchors = list(row_anchors) if row_anchors is not None else default_row_anchors()
        self.griding_num, self.num_lanes = griding_num, num_lanes
        self.seg_size = (self.input_size[0] // seg_stride, self.input_size[1] // seg_stride)
        self._mean = torch.tensor(MEAN).view(3, 1, 1)
        self._std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Tensor:
        """The i-th image, resized to the input size (free scale, as UFLD) and normalised."""
        from PIL import Image

        h, w = self.input_size
        with Image.open(self.root / self.labels[i].raw_file) as im:
            im = im.convert("RGB").resize((w, h), Image.BILINEAR)
            x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        return (x - self._mean) / self._std

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor, int]:
        label = self.labels[i]
        cls = row_anchor_targets(label, self.row_anchors, self.griding_num, self.num_lanes)
        seg = segmentation_target(label, self.seg_size, self.num_lanes)
        return self.image(i), torch.from_numpy(cls), torch.from_numpy(seg.astype(np.int64)), i
