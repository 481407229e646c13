"""A synthetic object-detection set written in the real on-disk formats (YOLO labels and COCO JSON).

Shapes of several classes (circle, square, triangle, cross, diamond, ring) are drawn on textured
backgrounds (gradients, stripes, checkerboards, noise).  Every class has its own shape and its
own hue band (jittered per object), so a small detector learns it in minutes on a CPU; boxes are
the exact extents of the drawn shapes.  Images vary in width and height so that letterboxing and
the mapping of predictions back to image coordinates are exercised.

The output is what a user would have on disk for a real dataset:

    root/images/{train,val}/*.jpg        root/labels/{train,val}/*.txt   (class xc yc w h, normalised)
    root/annotations/instances_{train,val}.json                          (COCO instances, ids from 1)
    root/data.yaml                            (ultralytics data yaml, paths relative to it, + val_json)

`synthetic_detection_cache` writes one set per config into the cache folder (slr_prune.data.cache).
Nothing here imports ultralytics; PIL and numpy draw the images.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cached_folder

__all__ = ["SHAPES", "SyntheticDetectionConfig", "write_synthetic_detection", "synthetic_detection_cache"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")
HUES: tuple[float, ...] = (0.0, 0.33, 0.62, 0.12, 0.80, 0.48)  # one hue band per class, far apart
DONE = ".complete.json"  # written last: a folder without it is an interrupted write


@dataclass(frozen=True)
class SyntheticDetectionConfig:
    """What to generate; equal configs write identical datasets (the seed fixes everything)."""

    train_images: int = 96
    val_images: int = 32
    image_size: int = 128  # the longer side; the other side is drawn from [min_aspect · size, size]
    num_classes: int = 3
    max_objects: int = 4
    min_box: float = 0.18  # object size as a fraction of the shorter image side
    max_box: float = 0.45
    min_aspect: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 1..{len(SHAPES)} (one per shape: {', '.join(SHAPES)}), "
                             f"got {self.num_classes}")
        if self.train_images < 1 or self.val_images < 1:
            raise ValueError(f"train_images and val_images must be ≥ 1, got {self.train_images}, {self.val_images}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be ≥ 32 pixels, got {self.image_size}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be ≥ 1, got {self.max_objects}")
        if not 0 < self.min_box <= self.max_box < 1:
            raise ValueError(f"need 0 < min_box ≤ max_box < 1, got {self.min_box}, {self.max_box}")
        if not 0 < self.min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {self.min_aspect}")

    @property
    def names(self) -> list[str]:
        return list(SHAPES[: self.num_classes])


def write_synthetic_detection(root: str | Path, config: SyntheticDetectionConfig | None = None,
                              **options: Any) -> Path:
    """Write the dataset under `root` (see the module doc) and return the path of its data.yaml.

    `options` override fields of `config` (e.g. ``train_images=16, image_size=64``).  A folder that
    already holds a complete dataset of the same config is reused, not rewritten.
    """
    base = config or SyntheticDetectionConfig()
    config = SyntheticDetectionConfig(**{**asdict(base), **options})
    root = Path(root)
    marker = root / DONE
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == asdict(config):
                return root / "data.yaml"
        except ValueError:
            pass
        raise FileExistsError(f"{str(root)!r} already holds a different dataset; choose an empty folder")
    rng = np.random.default_rng(config.seed)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(config.names)]
    for split, count in (("train", config.train_images), ("val", config.val_images)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            name = f"{split}_{i:05d}"
            picture, objects = _draw_image(rng, config)
            height, width = picture.shape[:2]
            _save_jpeg(picture, root / "images" / split / f"{name}.jpg")
            lines = []
            for cls, (x0, y0, x1, y1) in objects:
                lines.append(f"{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                             f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                    "iscrowd": 0})
            (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            images.append({"id": i + 1, "file_name": f"{name}.jpg", "width": width, "height": height})
        (root / "annotations").mkdir(exist_ok=True)
        coco = {"info": {"description": "slr_prune synthetic shapes", **asdict(config)}, "images": images,
                "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    yaml_lines = [
        "# slr_prune synthetic shapes (slr_prune.data.synthetic_detection)",
        "# no 'path:' key: paths are relative to this file's folder, so the folder can be moved",
        "train: images/train",
        "val: images/val",
        "val_json: annotations/instances_val.json  # COCO ground truth of the val split (slr_prune key)",
        "names:",
        *(f"  {i}: {n}" for i, n in enumerate(config.names)),
    ]
    (root / "data.yaml").write_text("\n".join(yaml_lines) + "\n")
    marker.write_text(json.dumps(asdict(config)))
    return root / "data.yaml"


def synthetic_detection_cache(cache_dir: str | Path | None = None, **options: Any) -> Path:
    """The data.yaml of the set of `options` (SyntheticDetectionConfig fields) in the cache, written once."""
    config = SyntheticDetectionConfig(**options)
    key = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:10]

    def announce(root: Path, writing: bool) -> None:
        if writing:
            print(f"note: no data yaml given; writing a synthetic detection set ({config.train_images} train / "
                  f"{config.val_images} val images, {config.num_classes} classes) to {root}", file=sys.stderr)
        else:
            print(f"note: no data yaml given; using the synthetic detection set at {root}", file=sys.stderr)

    root = cached_folder(f"synthetic_detection/{key}", lambda folder: write_synthetic_detection(folder, config),
                         ("data.yaml", DONE), cache_dir, announce)
    return root / "data.yaml"


# ---- drawing ----------------------------------------------------------------------------------------
def _draw_image(rng: np.random.Generator, c: SyntheticDetectionConfig) -> tuple[np.ndarray, list]:
    from PIL import Image, ImageDraw

    long_side = c.image_size
    short = int(rng.integers(math.ceil(c.min_aspect * long_side), long_side + 1))
    width, height = (long_side, short) if rng.random() < 0.5 else (short, long_side)
    image = Image.fromarray(_background(rng, height, width))
    draw = ImageDraw.Draw(image)
    placed: list[tuple[int, tuple[float, float, float, float]]] = []
    side = min(width, height)
    for _ in range(int(rng.integers(1, c.max_objects + 1))):
        for _attempt in range(20):  # rejection sampling: objects overlap little
            cls = int(rng.integers(0, c.num_classes))
            size = float(rng.uniform(c.min_box, c.max_box)) * side
            cx = float(rng.uniform(size / 2, width - size / 2))
            cy = float(rng.uniform(size / 2, height - size / 2))
            box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
            if all(_iou(box, other) < 0.1 for _, other in placed):
                break
        else:
            continue
        color = _class_color(rng, cls)
        drawn = _draw_shape(draw, SHAPES[cls], cx, cy, size, float(rng.uniform(0, 2 * math.pi)), color)
        x0, y0, x1, y1 = (max(0.0, drawn[0]), max(0.0, drawn[1]), min(float(width), drawn[2]),
                          min(float(height), drawn[3]))
        placed.append((cls, (round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2))))
    return np.asarray(image), placed


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A low-contrast texture: a colour gradient plus stripes or a checkerboard, plus noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 180, 3).astype(np.float32)
    tilt = rng.uniform(-0.4, 0.4, (2, 3)).astype(np.float32)
    img = base + x[..., None] * tilt[0] + y[..., None] * tilt[1]
    kind = int(rng.integers(0, 3))
    period = float(rng.uniform(6, 20))
    if kind == 0:  # stripes at a random angle
        angle = float(rng.uniform(0, math.pi))
        wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
        img += wave[..., None] * rng.uniform(8, 20, 3).astype(np.float32)
    elif kind == 1:  # checkerboard
        board = ((x // period + y // period) % 2) * 2 - 1
        img += board[..., None] * rng.uniform(8, 18, 3).astype(np.float32)
    img += rng.normal(0, 8, (height, width, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _class_color(rng: np.random.Generator, cls: int) -> tuple[int, int, int]:
    import colorsys

    hue = (HUES[cls] + rng.uniform(-0.04, 0.04)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_shape(draw: Any, shape: str, cx: float, cy: float, size: float, angle: float,
                color: tuple[int, int, int]) -> tuple[float, float, float, float]:
    """Draw one object; returns its exact (x0, y0, x1, y1) extent."""
    r = size / 2
    if shape in ("circle", "ring"):
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=color)
        else:
            draw.ellipse(box, outline=color, width=max(2, int(size * 0.18)))
        return box
    if shape == "square":
        points = _polygon(cx, cy, r, 4, angle)
    elif shape == "triangle":
        points = _polygon(cx, cy, r, 3, angle)
    elif shape == "diamond":  # a rhombus: long and short diagonals
        points = [(cx + dx * math.cos(angle) - dy * math.sin(angle), cy + dx * math.sin(angle) + dy * math.cos(angle))
                  for dx, dy in ((r, 0), (0, r * 0.55), (-r, 0), (0, -r * 0.55))]
    elif shape == "cross":
        t = r * 0.33
        arms = [(-r, -t), (-t, -t), (-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t),
                (-r, t)]
        points = [(cx + dx * math.cos(angle) - dy * math.sin(angle), cy + dx * math.sin(angle) + dy * math.cos(angle))
                  for dx, dy in arms]
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(f"unknown shape {shape!r}")
    draw.polygon(points, fill=color)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
            for k in range(sides)]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _save_jpeg(picture: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(picture).save(path, quality=92)
