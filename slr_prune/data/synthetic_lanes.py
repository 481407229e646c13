"""A synthetic TuSimple-format dataset: road-like images with 2 to 4 lanes, written to disk.

Stands in for TuSimple where it is not on disk, in the real format: clips/<name>/20.jpg images
and JSON-lines labels (`label_data_synthetic.json` for training, `test_label.json` for test)
with lanes in 1280×720 coordinates on the usual h_samples 160…710.  Images are stored smaller
(320×180 by default); the reader resizes images freely anyway, as UFLD does.

Each scene is a road in perspective: a vanishing point near the horizon, a shared curvature,
lane lines fanning out from it with per-lane colour (white or yellow) and dash pattern, asphalt
texture, shadows and noise.  Lanes are chosen from {outer-left, ego-left, ego-right,
outer-right}; the generator checks that UFLD's slot assignment puts every lane where it belongs,
so the labels are consistent with the targets the model learns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cached_folder
from .tusimple import H_SAMPLES, LABEL_HEIGHT, LABEL_WIDTH, NO_POINT, lane_slots

__all__ = ["synthetic_scene", "render_scene", "write_synthetic_tusimple", "synthetic_tusimple_cache",
           "TRAIN_FILE", "TEST_FILE"]

TRAIN_FILE, TEST_FILE = "label_data_synthetic.json", "test_label.json"
SLOT_OFFSETS = (-1.5, -0.5, 0.5, 1.5)  # lane positions in lane widths from the road's centre line
LANE_SETS = ((1, 2), (0, 1, 2), (1, 2, 3), (0, 1, 2, 3))  # slots present: 2, 3 or 4 lanes


def synthetic_scene(rng: np.random.Generator) -> dict[str, Any]:
    """Random road geometry (label coordinates) and appearance; `lanes` holds the TuSimple x lists."""
    for _ in range(100):
        scene = _draw_geometry(rng)
        placed = lane_slots(scene["lanes"], H_SAMPLES)
        ok = all(placed[s] is not None and list(placed[s]) == scene["lanes"][j]
                 for j, s in enumerate(scene["slots"]))
        if ok:
            return scene
    raise RuntimeError("could not draw a road whose lanes keep their slots; this is a bug")


def _draw_geometry(rng: np.random.Generator) -> dict[str, Any]:
    vy = float(rng.uniform(215, 275))  # horizon row
    vx = float(rng.uniform(560, 720))
    lane_width = float(rng.uniform(680, 900))  # at the bottom row
    offset = float(rng.uniform(-0.15, 0.15)) * lane_width  # the car is not always centred
    curve = float(rng.uniform(-90, 90))
    slots = LANE_SETS[int(rng.integers(len(LANE_SETS)))]
    lanes, specs = [], []
    for s in slots:
        bottom = vx + offset + SLOT_OFFSETS[s] * lane_width
        top = max(float(H_SAMPLES[0]), math.ceil((vy + rng.uniform(15, 55)) / 10) * 10)
        xs = []
        for y in H_SAMPLES:
            x = _lane_x(y, vx, vy, bottom, curve)
            xs.append(float(round(x)) if y >= top and 0 <= x <= LABEL_WIDTH - 1 else float(NO_POINT))
        lanes.append(xs)
        specs.append({"bottom": bottom, "top": top, "yellow": bool(s == 1 and rng.random() < 0.4),
                      "dashed": bool(rng.random() < (0.3 if s in (1, 2) and len(slots) == 2 else 0.6)),
                      "phase": float(rng.uniform(0, 1)), "period": float(rng.uniform(0.3, 0.5))})
    return {"vx": vx, "vy": vy, "curve": curve, "lane_width": lane_width, "offset": offset,
            "slots": list(slots), "lanes": lanes, "specs": specs,
            "sky": rng.uniform(150, 230, 3).tolist(), "ground": rng.uniform(50, 120, 3).tolist(),
            "asphalt": float(rng.uniform(60, 125)), "shadows": int(rng.integers(0, 4)),
            "seed": int(rng.integers(2**31))}


def _lane_x(y: float, vx: float, vy: float, bottom: float, curve: float) -> float:
    """x of a lane at row y: a line from the vanishing point to `bottom`, bent by `curve` far away."""
    t = (y - vy) / (LABEL_HEIGHT - vy)
    return vx + (bottom - vx) * t + curve * (1 - t) ** 2


def render_scene(scene: dict[str, Any], size: tuple[int, int] = (180, 320)) -> np.ndarray:
    """(h, w, 3) uint8 image of a scene from `synthetic_scene`."""
    from PIL import Image, ImageDraw, ImageFilter

    h, w = size
    sx, sy = w / LABEL_WIDTH, h / LABEL_HEIGHT
    rng = np.random.default_rng(scene["seed"])
    vx, vy, curve = scene["vx"], scene["vy"], scene["curve"]
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    # sky gradient above the horizon, ground below
    horizon = int(vy * sy)
    sky = np.array(scene["sky"])
    for r in range(horizon + 1):
        c = sky * (0.75 + 0.25 * r / max(1, horizon))
        draw.line([(0, r), (w, r)], fill=tuple(int(v) for v in c))
    draw.rectangle([0, horizon, w, h], fill=tuple(int(v) for v in scene["ground"]))
    # the road surface between its two edges, half a lane beyond the outer lanes
    lw, off = scene["lane_width"], scene["offset"]
    rows = np.linspace(vy + 2, LABEL_HEIGHT, 60)
    left = [(_lane_x(y, vx, vy, vx + off - 2.2 * lw, curve) * sx, y * sy) for y in rows]
    right = [(_lane_x(y, vx, vy, vx + off + 2.2 * lw, curve) * sx, y * sy) for y in rows]
    a = int(scene["asphalt"])
    draw.polygon(left + right[::-1], fill=(a, a, a + 4))
    # shadows across the road
    for _ in range(scene["shadows"]):
        cy = rng.uniform(vy + 60, LABEL_HEIGHT) * sy
        cx = rng.uniform(0, w)
        rx, ry = rng.uniform(0.05, 0.25) * w, rng.uniform(0.03, 0.1) * h
        d = int(a * rng.uniform(0.35, 0.6))
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(d, d, d + 2))
    # lane markings: quads along the curve, wider near the camera, optionally dashed
    for spec in scene["specs"]:
        colour = (225, 190, 60) if spec["yellow"] else (235, 235, 235)
        ys = np.arange(max(spec["top"], vy + 1), LABEL_HEIGHT + 4, 4.0)
        for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
            t0 = (y0 - vy) / (LABEL_HEIGHT - vy)
            if spec["dashed"] and ((1.0 / max(t0, 1e-3)) * spec["period"] + spec["phase"]) % 1.0 < 0.45:
                continue
            t1 = (y1 - vy) / (LABEL_HEIGHT - vy)
            x0 = _lane_x(y0, vx, vy, spec["bottom"], curve)
            x1 = _lane_x(y1, vx, vy, spec["bottom"], curve)
            h0, h1 = 2 + 12 * t0, 2 + 12 * t1  # half width in label pixels
            draw.polygon([((x0 - h0) * sx, y0 * sy), ((x0 + h0) * sx, y0 * sy),
                          ((x1 + h1) * sx, y1 * sy), ((x1 - h1) * sx, y1 * sy)], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.8, 1.15) + rng.normal(0, 6, arr.shape)  # exposure and sensor noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_synthetic_tusimple(root: str | Path, num_train: int = 96, num_test: int = 32,
                             image_size: tuple[int, int] = (180, 320), seed: int = 0) -> Path:
    """Write a synthetic TuSimple dataset under `root`; returns root.

    `image_size` is (h, w) of the stored JPEGs; labels are always in 1280×720 coordinates.
    """
    from PIL import Image

    if num_train < 1 or num_test < 1:
        raise ValueError(f"need at least one training and one test image, got {num_train} and {num_test}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count, label_file in (("train", num_train, TRAIN_FILE), ("test", num_test, TEST_FILE)):
        records = []
        for i in range(count):
            scene = synthetic_scene(rng)
            raw_file = f"clips/synthetic_{split}/{i:05d}/20.jpg"
            path = root / raw_file
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render_scene(scene, image_size)).save(path, quality=92)
            lanes = [[int(x) for x in lane] for lane in scene["lanes"]]
            records.append({"lanes": lanes, "h_samples": list(H_SAMPLES), "raw_file": raw_file})
        with open(root / label_file, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return root


def synthetic_tusimple_cache(num_train: int = 96, num_test: int = 32, image_size: tuple[int, int] = (180, 320),
                             seed: int = 0, cache_dir: str | Path | None = None, verbose: bool = True) -> Path:
    """A synthetic dataset in the cache folder (slr_prune.data.cache), generated once and reused after."""

    def announce(target: Path, writing: bool) -> None:
        if writing:
            print(f"lane: no dataset given; generating a synthetic TuSimple-format dataset ({num_train} train / "
                  f"{num_test} test images) in {target}", flush=True)
        else:
            print(f"lane: no dataset given; using the synthetic TuSimple-format data in {target}", flush=True)

    name = f"tusimple-synthetic-{num_train}-{num_test}-{image_size[0]}x{image_size[1]}-seed{seed}"
    return cached_folder(name, lambda folder: write_synthetic_tusimple(folder, num_train, num_test, image_size, seed),
                         (TEST_FILE, TRAIN_FILE), cache_dir, announce if verbose else None)
