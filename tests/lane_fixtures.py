"""Small TuSimple-format label files and images for the lane tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

H = list(range(160, 720, 10))  # the 56 usual h_samples


def straight(x_bottom: float, x_top: float, start: int = 160) -> list[int]:
    """A straight lane from (x_top, 160) to (x_bottom, 710), −2 above `start` and outside the image."""
    xs = []
    for y in H:
        x = x_top + (x_bottom - x_top) * (y - 160) / 550
        xs.append(round(x) if y >= start and 0 <= x <= 1279 else -2)
    return xs


def write_label_file(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
