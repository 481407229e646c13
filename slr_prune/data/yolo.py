"""YOLO-format detection data: data yamls, label checks, ultralytics datasets, COCO ground truth.

Data yamls are parsed here rather than by ultralytics' check_det_dataset, which downloads
missing datasets; labels that ultralytics would silently skip fail with their file and line.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..models.yolo import import_ultralytics

__all__ = ["DetectionData", "load_data_yaml", "synthetic_data", "build_dataset", "ground_truth"]


@dataclass
class DetectionData:
    """A parsed data yaml: absolute image sources, class names and the optional COCO val JSON."""

    yaml: Path | None
    root: Path
    train: list[str]
    val: list[str]
    names: list[str]
    val_json: Path | None = None
    synthetic: bool = False

    @property
    def nc(self) -> int:
        return len(self.names)

    def ultralytics_dict(self) -> dict[str, Any]:
        """The dict ultralytics' datasets and validators read (what check_det_dataset would return)."""
        return {"path": str(self.root), "train": _one_or_list(self.train), "val": _one_or_list(self.val),
                "names": dict(enumerate(self.names)), "nc": self.nc, "channels": 3,
                "yaml_file": str(self.yaml) if self.yaml else ""}


def _one_or_list(paths: list[str]) -> str | list[str]:
    return paths[0] if len(paths) == 1 else list(paths)


# ---- data yamls ---------------------------------------------------------------------------------------
def load_data_yaml(path: str | Path) -> DetectionData:
    """Parse an ultralytics-style data yaml (path, train, val, names[, nc, val_json]) and check it.

    Relative paths resolve against `path:` (itself relative to the yaml's folder, or to ultralytics'
    datasets_dir) or, without `path:`, against the yaml's folder.  Every problem raises an error
    naming the yaml, the key and what would be valid.
    """
    import yaml

    path = Path(path).expanduser()
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ValueError(f"data {str(path)!r} is not a data yaml; give a .yaml file with train, val and names")
    if not path.is_file():
        raise FileNotFoundError(f"data yaml {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"data yaml {str(path)!r} is not valid YAML: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"data yaml {str(path)!r} must be a mapping with train, val and names")
    missing = [k for k in ("train", "val", "names") if not spec.get(k)]
    if missing:
        raise ValueError(f"data yaml {str(path)!r} lacks {', '.join(repr(k) for k in missing)}; it needs train "
                         "and val (image folders, list files or lists of them) and names")
    root = _dataset_root(path, spec.get("path"))
    names = _names(path, spec["names"])
    if "nc" in spec and int(spec["nc"]) != len(names):
        raise ValueError(f"data yaml {str(path)!r}: nc is {spec['nc']} but names lists {len(names)} classes")
    splits = {}
    for key in ("train", "val"):
        entries = spec[key] if isinstance(spec[key], list) else [spec[key]]
        resolved = []
        for entry in entries:
            p = Path(str(entry)).expanduser()
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise FileNotFoundError(f"data yaml {str(path)!r}: {key} image folder {str(p)!r} does not exist")
            if p.is_dir() and not _has_image(p):
                raise FileNotFoundError(f"data yaml {str(path)!r}: {key} folder {str(p)!r} holds no images "
                                        f"(looked for {', '.join(_image_suffixes()[:6])}, ...)")
            resolved.append(str(p))
        splits[key] = resolved
    val_json = None
    if spec.get("val_json"):
        val_json = Path(str(spec["val_json"])).expanduser()
        val_json = val_json if val_json.is_absolute() else root / val_json
        if not val_json.is_file():
            raise FileNotFoundError(f"data yaml {str(path)!r}: val_json {str(val_json)!r} does not exist")
    return DetectionData(path.resolve(), root, splits["train"], splits["val"], names, val_json)


def _dataset_root(yaml_path: Path, value: Any) -> Path:
    here = yaml_path.resolve().parent
    if not value:
        return here
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [here / p]
        try:
            import_ultralytics()
            from ultralytics.utils import SETTINGS

            candidates.append(Path(SETTINGS["datasets_dir"]) / p)
        except Exception:  # pragma: no cover - settings unreadable: only the yaml-relative candidate
            pass
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise FileNotFoundError(f"data yaml {str(yaml_path)!r}: dataset path {str(value)!r} does not exist "
                            f"(looked in {', '.join(repr(str(c)) for c in candidates)})")


def _names(yaml_path: Path, names: Any) -> list[str]:
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError) as e:
            raise ValueError(f"data yaml {str(yaml_path)!r}: names keys must be class indices 0..nc-1") from e
        if keys != list(range(len(keys))):
            raise ValueError(f"data yaml {str(yaml_path)!r}: names must be numbered 0..{len(keys) - 1} without gaps, "
                             f"got {keys[:10]}")
        by_int = {int(k): v for k, v in names.items()}
        return [str(by_int[i]) for i in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise ValueError(f"data yaml {str(yaml_path)!r}: names must be a list or a {{index: name}} mapping")


def _image_suffixes() -> tuple[str, ...]:
    from ..metrics.coco import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _has_image(folder: Path) -> bool:
    """Whether any image lies under `folder` (stops at the first one: cheap on a 100k-image folder)."""
    suffixes = _image_suffixes()
    return any(os.path.splitext(f)[1].lower() in suffixes for _, _, files in os.walk(folder) for f in files)


def synthetic_data(cache_dir: str | Path | None = None, **options: Any) -> DetectionData:
    """The synthetic shapes set of `options` in the cache folder (written once), parsed like a data yaml."""
    from .synthetic_detection import synthetic_detection_cache

    data = load_data_yaml(synthetic_detection_cache(cache_dir, **options))
    data.synthetic = True
    return data


# ---- ultralytics datasets -----------------------------------------------------------------------------
def build_dataset(data: DetectionData, sources: list[str], mode: str, cfg: Any, batch: int, stride: int,
                  rect: bool = False, fraction: int | None = None) -> Any:
    """ultralytics' YOLODataset over `sources` ("train" augments); `cfg` is ultralytics' hyper-parameters.

    ultralytics silently skips images whose labels are broken; those fail here with file:line.
    """
    import_ultralytics()
    from ultralytics.data import build_yolo_dataset

    cfg = copy.deepcopy(cfg)  # datasets edit their hyper-parameters (mosaic off for rect, ...)
    try:
        dataset = build_yolo_dataset(cfg, _one_or_list(sources), batch, data.ultralytics_dict(),
                                     mode=mode, rect=rect, stride=stride,
                                     fraction=fraction if fraction is not None else 1.0)
    except RuntimeError as e:  # "No valid images found": say why, in our words
        _check_skipped(data, sources, set(), fraction)
        raise ValueError(f"{mode} images in {', '.join(sources)}: {e}") from e
    _check_skipped(data, sources, set(dataset.im_files), fraction)
    return dataset


def _check_skipped(data: DetectionData, sources: list[str], kept: set[str], fraction: int | None) -> None:
    """Fail with file:line on the labels of images ultralytics skipped; warn about other skipped images."""
    from ultralytics.data.utils import IMG_FORMATS

    from ..metrics.coco import label_path

    listed: list[str] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            listed += [str(f) for f in p.rglob("*.*") if f.suffix[1:].lower() in IMG_FORMATS]
        else:
            for line in p.read_text(encoding="utf-8-sig").splitlines():
                if line.strip():
                    line = line.strip()
                    listed.append(line.replace("./", str(p.parent) + os.sep, 1) if line.startswith("./") else line)
    listed = sorted(listed)[:fraction] if fraction else listed
    skipped = [f for f in listed if f not in kept]
    problems = [m for m in (_label_problem(label_path(f), data.nc) for f in skipped) if m]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"bad labels in data {str(data.yaml)!r}: " + "; ".join(problems[:5]) + more)
    if skipped and kept:
        warnings.warn(f"{len(skipped)} image(s) in {', '.join(sources)} were skipped by ultralytics as "
                      f"unreadable, e.g. {skipped[0]}", stacklevel=4)


def _label_problem(path: Path, nc: int) -> str | None:
    """What is wrong with one YOLO label file (class out of 0..nc-1, wrong columns, bad coordinates), or None."""
    if not path.is_file():
        return None
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            numbers = np.asarray(values, dtype=np.float64)
        except ValueError:
            return f"{path}:{line_no}: not numbers: {line.strip()!r}"
        if not np.isfinite(numbers).all():
            return f"{path}:{line_no}: values must be finite numbers, got {line.strip()!r}"
        cls = numbers[0]
        if cls != math.floor(cls) or not 0 <= cls < nc:
            return f"{path}:{line_no}: class {values[0]} is out of range; the data has {nc} classes (valid 0..{nc - 1})"
        if len(numbers) < 5 or (len(numbers) > 5 and len(numbers) % 2 == 0):
            return f"{path}:{line_no}: expected 'class xc yc w h' (5 columns) or a polygon, got {len(numbers)} columns"
        if numbers[1:].max() > 1.01 or numbers[1:].min() < -0.01:
            return f"{path}:{line_no}: coordinates must be normalised to [0, 1], got {line.strip()!r}"
    return None


def ground_truth(data: DetectionData, images: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth of the val split: the data's val_json, else the YOLO labels of `images` converted."""
    from ..metrics.coco import coco_ground_truth, yolo_ground_truth

    if data.val_json is not None:
        return coco_ground_truth(data.val_json)
    return yolo_ground_truth(images, data.names)
