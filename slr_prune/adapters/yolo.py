"""YOLOv3 and YOLOv3-tiny detection on ultralytics, scored by pycocotools.

The model is ultralytics' own DetectionModel, built from its bundled yaml (`yolov3`, `yolov3-tiny`;
the anchor-free "u" head of current ultralytics) or loaded from a user's .pt; the loss is the
model's own criterion (v8DetectionLoss: box IoU, class BCE, distribution focal loss); the data is
ultralytics' YOLODataset (YOLO-format labels, a data yaml with train/val/names) with its
augmentations for training and letterboxing for evaluation.  The metric is COCO mAP computed by
pycocotools on the predictions after ultralytics' NMS, mapped back to original image pixels,
against a COCO instances JSON (data yaml key `val_json`) or the val labels converted to COCO.

Without a data yaml the task writes a small synthetic set (slr_prune.data.synthetic_detection)
into a cache folder, says where, and uses it.

Offline by construction: before ultralytics is imported, YOLO_OFFLINE=1 (no hub, no telemetry, no
asset downloads), YOLO_AUTOINSTALL=0 (no pip) and YOLO_VERBOSE=False are set unless the user set
them; model yamls are read from the installed package, .pt paths are checked before ultralytics
sees them (it would otherwise try to download a missing official name), data yamls are parsed
here instead of by check_det_dataset (which downloads), and nothing plots (plots need fonts).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..task import Task, register_task

__all__ = ["YoloTask", "DetectionData", "load_data_yaml", "load_detection_model", "build_detection_model",
           "import_ultralytics", "MODEL_CONFIGS"]

# model name → bundled ultralytics yaml stem (yolov3u / yolov3-tinyu are the same anchor-free models)
MODEL_CONFIGS: dict[str, str] = {
    "yolov3": "yolov3", "yolov3u": "yolov3",
    "yolov3-tiny": "yolov3-tiny", "yolov3-tinyu": "yolov3-tiny",
    "yolov3-spp": "yolov3-spp", "yolov3-sppu": "yolov3-spp",
}
HEAD_EXCLUSIONS = ("last", "head", "none")
DEFAULT_SYNTHETIC = {"train_images": 96, "val_images": 32, "image_size": 128, "num_classes": 3, "seed": 0}


def import_ultralytics() -> Any:
    """Import ultralytics with everything that reaches the network switched off (see the module doc)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        import ultralytics
    except ImportError as e:  # pragma: no cover - ultralytics is a dependency
        raise ImportError("the yolo task needs ultralytics: pip install ultralytics") from e
    return ultralytics


# ---- data -------------------------------------------------------------------------------------------
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
    """The synthetic shapes set in a cache folder (written once, atomically), parsed like a data yaml."""
    from ..data.synthetic_detection import SyntheticDetectionConfig, write_synthetic_detection

    config = SyntheticDetectionConfig(**{**DEFAULT_SYNTHETIC, **options})
    key = hashlib.sha1(json.dumps(config.__dict__, sort_keys=True).encode()).hexdigest()[:10]
    base = Path(cache_dir) if cache_dir else _cache_root()
    root = base / "synthetic_detection" / key
    if (root / "data.yaml").is_file() and (root / ".complete.json").is_file():
        print(f"note: no data yaml given; using the synthetic detection set at {root}", file=sys.stderr)
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root.parent))
        print(f"note: no data yaml given; writing a synthetic detection set ({config.train_images} train / "
              f"{config.val_images} val images, {config.num_classes} classes) to {root}", file=sys.stderr)
        write_synthetic_detection(tmp, config)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: use its copy
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    data = load_data_yaml(root / "data.yaml")
    data.synthetic = True
    return data


def _cache_root() -> Path:
    env = os.environ.get("SLR_PRUNE_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slr_prune"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"slr_prune-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


# ---- models -----------------------------------------------------------------------------------------
def _bundled_yaml(stem: str) -> Path:
    ultralytics = import_ultralytics()
    folder = Path(ultralytics.__file__).parent / "cfg" / "models" / "v3"
    for name in (f"{stem}.yaml", f"{stem}u.yaml"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"ultralytics {ultralytics.__version__} ships no {stem}.yaml in {folder}")


def build_detection_model(config: str | Path, nc: int, names: Sequence[str] | None = None,
                          seed: int = 0) -> nn.Module:
    """An ultralytics DetectionModel from a bundled name (MODEL_CONFIGS) or a model yaml, freshly initialised.

    The initialisation is seeded (the global RNG is left as it was), so every call gives the same model.
    """
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG_DICT, YAML

    if str(config) in MODEL_CONFIGS:
        path = _bundled_yaml(MODEL_CONFIGS[str(config)])
    else:
        path = Path(config).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model yaml {str(path)!r} does not exist")
    cfg = YAML.load(path)
    if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
        raise ValueError(f"{str(path)!r} is not an ultralytics model yaml (it needs backbone and head)")
    cfg["yaml_file"] = str(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DetectionModel(cfg, ch=3, nc=nc, verbose=False)
    _check_detection(model, str(path))
    model.names = dict(enumerate(names)) if names is not None else {i: str(i) for i in range(nc)}
    model.args = dict(DEFAULT_CFG_DICT, task="detect")
    model.task = "detect"
    return model


def load_detection_model(path: str | Path) -> nn.Module:
    """The detection model in an ultralytics .pt (EMA weights when present), in float32 and train mode.

    Raises FileNotFoundError for a missing file (ultralytics would try to download it) and
    ValueError for a file that holds no ultralytics detection model (a classifier, a
    segmentation/pose/OBB model, a bare state_dict, a corrupt file).
    """
    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    path = Path(path).expanduser()
    if path.suffix != ".pt":
        raise ValueError(f"model {str(path)!r}: expected an ultralytics .pt file, a .yaml model config or one of "
                         f"{', '.join(MODEL_CONFIGS)}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        ckpt, _ = torch_safe_load(str(path))
    except Exception as e:
        raise ValueError(f"model file {str(path)!r} could not be read as an ultralytics checkpoint: "
                         f"{type(e).__name__}: {e}") from e
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        keys = ", ".join(list(ckpt)[:6]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"model file {str(path)!r} holds no ultralytics model (found: {keys}); save one with "
                         "YOLO(...).save(path) or slr_prune.export.export_ultralytics")
    _check_detection(model, str(path))
    model = model.float()
    args = ckpt.get("train_args") or getattr(model, "args", None) or {}
    model.args = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    model.task = "detect"
    for p in model.parameters():
        p.requires_grad_(True)
    _freeze_dfl(model)
    return model.train()


def _check_detection(model: nn.Module, source: str) -> None:
    from ultralytics.nn.modules.head import Detect
    from ultralytics.nn.tasks import DetectionModel

    layers = getattr(model, "model", None)
    last = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if not isinstance(model, DetectionModel) or type(last) is not Detect:
        kind = type(last).__name__ if last is not None else type(model).__name__
        raise ValueError(f"{source!r} is not a detection model: its head is {kind}, expected ultralytics Detect "
                         "(YOLOv3 / YOLOv3-tiny detection; segmentation, pose, OBB and classification models "
                         "are not supported)")


def _freeze_dfl(model: nn.Module) -> None:
    dfl = getattr(model.model[-1], "dfl", None)
    if isinstance(dfl, nn.Module):
        for p in dfl.parameters():
            p.requires_grad_(False)


def _detect_name(model: nn.Module) -> str:
    from ultralytics.nn.modules.head import Detect

    for name, module in model.named_modules():
        if isinstance(module, Detect):
            return name
    raise ValueError("the model has no ultralytics Detect head")


def head_exclusions(model: nn.Module, mode: str = "last") -> tuple[str, ...]:
    """Parameter names kept dense by `mode`: 'last' = the head's final 1×1 box/class convs (+ DFL),
    'head' = every convolution of the Detect head, 'none' = only the DFL (fixed, not a trained layer)."""
    if mode not in HEAD_EXCLUSIONS:
        raise ValueError(f"exclude_head must be one of {', '.join(HEAD_EXCLUSIONS)}, got {mode!r}")
    detect = _detect_name(model)
    head = model.get_submodule(detect)
    names: list[str] = []
    if mode == "head":
        names = [f"{detect}.{n}" for n, m in head.named_modules() if isinstance(m, nn.Conv2d)
                 and not n.startswith("dfl")]
    elif mode == "last":
        for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
            seqs = getattr(head, branch, None)
            if seqs is None:
                continue
            for i, seq in enumerate(seqs):
                last = seq[-1]
                if isinstance(last, nn.Conv2d):
                    names.append(f"{detect}.{branch}.{i}.{len(seq) - 1}")
    names = [f"{n}.weight" for n in names]
    if isinstance(getattr(head, "dfl", None), nn.Module) and hasattr(head.dfl, "conv"):
        names.append(f"{detect}.dfl.conv.weight")
    return tuple(names)


# ---- the task ---------------------------------------------------------------------------------------
@register_task("yolo")
class YoloTask(Task):
    """YOLOv3 / YOLOv3-tiny detection: ultralytics model, loss and data; pycocotools mAP.

    model: "yolov3" | "yolov3-tiny" (bundled yaml, fresh weights), a model .yaml, or an ultralytics
    .pt (its weights: prune a trained model this way).  data: a data yaml; None writes a synthetic
    set (see `synthetic`).  metric "map50" (COCO mAP@0.5); evaluate() also returns "map"
    (mAP@0.5:0.95).  exclude_head picks `default_exclude`: "last" (default), "head" or "none".
    hyp overrides ultralytics hyper-parameters: augmentations (mosaic, fliplr, hsv_*, scale, ...) and
    the loss gains (box, cls, dfl).  val_images evaluates only the first N val images.
    """

    metric = "map50"

    def __init__(self, model: str = "yolov3-tiny", dataset: str | None = None, data: str | Path | None = None,
                 batch_size: int = 16, eval_batch_size: int | None = None, image_size: int | None = None,
                 workers: int = 0, seed: int = 0, exclude_head: str = "last",
                 hyp: Mapping[str, Any] | None = None, conf: float = 0.001, iou: float = 0.7,
                 max_det: int = 300, val_images: int | None = None,
                 synthetic: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None):
        import_ultralytics()
        if dataset not in (None, "synthetic", "yolo", "coco"):
            raise ValueError(f"dataset {dataset!r}: the yolo task reads a data yaml (--data); dataset may be "
                             "'yolo' or 'coco' (the same), or 'synthetic' for the generated shapes")
        if dataset == "synthetic" and data is not None:
            raise ValueError("dataset 'synthetic' is generated; do not also give a data yaml")
        if dataset in ("yolo", "coco") and data is None:
            raise ValueError(f"dataset {dataset!r} is read from disk: give its data yaml (--data PATH)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not (0 <= conf < 1 and 0 < iou <= 1):
            raise ValueError(f"need 0 ≤ conf < 1 and 0 < iou ≤ 1, got conf={conf}, iou={iou}")
        self.model_name = str(model)
        self.data_arg = None if data is None else str(data)
        self.synthetic_options = dict(synthetic or {})
        if data is None:
            self.data = synthetic_data(cache_dir, **self.synthetic_options)
        else:
            self.data = load_data_yaml(data)
        default_size = int(self.synthetic_options.get("image_size", DEFAULT_SYNTHETIC["image_size"])) \
            if self.data.synthetic else 640
        self.image_size = int(image_size or default_size)
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32 (the model's largest stride), "
                             f"got {self.image_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.workers, self.seed = workers, seed
        self.exclude_head = exclude_head
        # Mosaic shrinks objects to a few pixels at the synthetic set's 64-128 px: off there unless asked for.
        self.hyp = {**({"mosaic": 0.0} if self.data.synthetic else {}), **dict(hyp or {})}
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.val_images = val_images
        data_name = "synthetic" if self.data.synthetic else Path(str(self.data.yaml)).stem
        self.name = f"{Path(self.model_name).stem}-{data_name}"
        self._criteria: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

        self._template: nn.Module | None = None
        template = self.build_model()  # fail now on a bad model, and learn the head's layer names
        self.default_exclude = head_exclusions(template, exclude_head)
        self.stride = int(max(32, int(template.stride.max())))
        self._cfg = self._hyp()
        self.train_set = self._dataset(self.data.train, "train")
        self.val_set = self._dataset(self.data.val, "val", rect=True, fraction=val_images)
        self.ground_truth = self._ground_truth()

    # ---- set-up -------------------------------------------------------------------------------
    def _hyp(self) -> Any:
        from ultralytics.cfg import get_cfg

        unknown = [k for k in self.hyp if k not in get_cfg().__dict__]
        if unknown:
            raise ValueError(f"hyp: unknown ultralytics hyper-parameters {unknown}; valid ones include the "
                             "augmentations mosaic, mixup, fliplr, flipud, hsv_h, hsv_s, hsv_v, degrees, translate, "
                             "scale, shear and the loss gains box, cls, dfl")
        return get_cfg(overrides={**self.hyp, "imgsz": self.image_size, "task": "detect", "plots": False,
                                  "workers": self.workers, "batch": self.batch_size})

    def _dataset(self, sources: list[str], mode: str, rect: bool = False, fraction: int | None = None) -> Any:
        from ultralytics.data import build_yolo_dataset

        cfg = copy.deepcopy(self._cfg)  # datasets edit their hyper-parameters (mosaic off for rect, ...)
        batch = self.batch_size if mode == "train" else self.eval_batch_size
        try:
            dataset = build_yolo_dataset(cfg, _one_or_list(sources), batch, self.data.ultralytics_dict(),
                                         mode=mode, rect=rect, stride=self.stride,
                                         fraction=fraction if fraction is not None else 1.0)
        except RuntimeError as e:  # "No valid images found": say why, in our words
            self._check_skipped(sources, set(), fraction)
            raise ValueError(f"{mode} images in {', '.join(sources)}: {e}") from e
        self._check_skipped(sources, set(dataset.im_files), fraction)
        return dataset

    def _check_skipped(self, sources: list[str], kept: set[str], fraction: int | None) -> None:
        """ultralytics silently skips images with broken labels; find them and fail with file:line."""
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
        problems = [m for m in (_label_problem(label_path(f), self.data.nc) for f in skipped) if m]
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"bad labels in data {str(self.data.yaml)!r}: " + "; ".join(problems[:5]) + more)
        if skipped and kept:
            warnings.warn(f"{len(skipped)} image(s) in {', '.join(sources)} were skipped by ultralytics as "
                          f"unreadable, e.g. {skipped[0]}", stacklevel=3)

    def _ground_truth(self) -> dict[str, Any]:
        from ..metrics.coco import coco_ground_truth, yolo_ground_truth

        if self.data.val_json is not None:
            return coco_ground_truth(self.data.val_json)
        return yolo_ground_truth(self.val_set.im_files, self.data.names)

    def record(self) -> dict[str, Any]:
        return {"model": self.model_name, "data": self.data_arg, "image_size": self.image_size}

    # ---- Task interface -----------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """A fresh copy of the task's model: the same initial (or loaded) weights on every call.

        The model is built once (ultralytics probes its strides with a forward pass at 256 px)
        and copied afterwards, so the task holds one CPU copy of the weights.
        """
        if self._template is None:
            self._template = self._load_model()
        return copy.deepcopy(self._template)

    def _load_model(self) -> nn.Module:
        name = self.model_name
        if name in MODEL_CONFIGS or name.endswith((".yaml", ".yml")):
            return build_detection_model(name, self.data.nc, self.data.names, seed=self.seed)
        if not name.endswith(".pt"):
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CONFIGS)}, a model .yaml or "
                             "an ultralytics .pt file")
        model = load_detection_model(name)
        nc = int(model.model[-1].nc)
        if nc != self.data.nc:
            raise ValueError(f"model file {name!r} predicts {nc} classes but the data has {self.data.nc} "
                             f"({', '.join(self.data.names[:5])}{', ...' if self.data.nc > 5 else ''}); "
                             "train or pick a model for this data")
        return model

    def train_dataset(self) -> Any:
        return self.train_set

    def train_loader(self, sampler: Any = None) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=self.workers, collate_fn=self.train_set.collate_fn,
                          drop_last=len(self.train_set) > self.batch_size)

    def val_loader(self) -> DataLoader:
        return DataLoader(self.val_set, self.eval_batch_size, shuffle=False, num_workers=self.workers,
                          collate_fn=self.val_set.collate_fn)

    def probe_loader(self) -> DataLoader:
        # Training images without augmentation, in a fixed order: a fixed sample of the objective.
        if not hasattr(self, "_probe_set"):
            self._probe_set = self._dataset(self.data.train, "probe")
        return DataLoader(self._probe_set, self.batch_size, shuffle=False, num_workers=self.workers,
                          collate_fn=self._probe_set.collate_fn)

    def _criterion(self, model: nn.Module, device: torch.device) -> Any:
        """The model's own loss (v8DetectionLoss), built once per model and device."""
        from ultralytics.cfg import get_cfg

        per_model = self._criteria.setdefault(model, {})
        if device not in per_model:
            saved = getattr(model, "args", None)
            base = saved if isinstance(saved, dict) else dict(vars(saved)) if saved is not None else {}
            gains = {k: base[k] for k in ("box", "cls", "dfl") if k in base}
            gains.update({k: v for k, v in self.hyp.items() if k in ("box", "cls", "dfl")})
            model.args = get_cfg(overrides=gains)  # the criterion reads its gains from model.args
            try:
                per_model[device] = model.init_criterion()
            finally:
                model.args = saved
        return per_model[device]

    def _to_device(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        out = dict(batch)
        out["img"] = batch["img"].to(device, non_blocking=True).float().div_(255)
        for k in ("cls", "bboxes", "batch_idx"):
            out[k] = batch[k].to(device, non_blocking=True)
        return out

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        """Box + class + DFL loss of ultralytics' criterion, per image (not scaled by the batch size)."""
        core = getattr(model, "module", model)  # DDP forwards through the wrapper, the loss reads the core
        b = self._to_device(batch, device)
        preds = model(b["img"])
        total, _ = self._criterion(core, device)(preds, b)
        return total.sum() / b["img"].shape[0]

    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Any:
        return model(batch["img"].to(device, non_blocking=True).float().div_(255))

    @torch.no_grad()
    def val_predictions(self, model: nn.Module, device: torch.device) -> Iterator[tuple[dict[str, Any], list[dict]]]:
        """Val batches with their NMS-ed predictions, boxes in the letterboxed image (as ultralytics' validator)."""
        from ultralytics.utils import nms

        was_training = model.training
        model.eval()
        try:
            for batch in self.val_loader():
                img = batch["img"].to(device, non_blocking=True).float().div_(255)
                out = model(img)
                raw = out[0] if isinstance(out, (tuple, list)) else out
                dets = nms.non_max_suppression(raw.float(), self.conf, self.iou, multi_label=True,
                                               max_det=self.max_det)
                yield batch, [{"bboxes": d[:, :4], "conf": d[:, 4], "cls": d[:, 5]} for d in dets]
        finally:
            model.train(was_training)

    def evaluator(self) -> Any:
        from ..metrics.coco import CocoEvaluator

        return CocoEvaluator(self.ground_truth, self.data.names, max_dets=min(100, self.max_det))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """COCO mAP@0.5 ("map50") and mAP@0.5:0.95 ("map") by pycocotools, plus map75 and size breakdowns."""
        from ultralytics.utils import ops

        ev = self.evaluator()
        for batch, preds in self.val_predictions(model, device):
            shape = batch["img"].shape[2:]
            for i, p in enumerate(preds):
                boxes = ops.scale_boxes(shape, p["bboxes"].clone().cpu(), batch["ori_shape"][i],
                                        ratio_pad=batch["ratio_pad"][i])
                ev.add(batch["im_file"][i], boxes.numpy(), p["conf"].cpu().numpy(), p["cls"].cpu().numpy())
        return ev.compute()

    def example_input(self, batch_size: int = 1) -> Tensor:
        return torch.zeros(batch_size, 3, self.image_size, self.image_size)


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
        cls = numbers[0]
        if cls != math.floor(cls) or not 0 <= cls < nc:
            return f"{path}:{line_no}: class {values[0]} is out of range; the data has {nc} classes (valid 0..{nc - 1})"
        if len(numbers) < 5 or (len(numbers) > 5 and len(numbers) % 2 == 0):
            return f"{path}:{line_no}: expected 'class xc yc w h' (5 columns) or a polygon, got {len(numbers)} columns"
        if numbers[1:].max() > 1.01 or numbers[1:].min() < -0.01:
            return f"{path}:{line_no}: coordinates must be normalised to [0, 1], got {line.strip()!r}"
    return None
