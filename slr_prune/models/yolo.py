"""ultralytics YOLOv3 detection models, built and loaded offline.

`import_ultralytics` sets YOLO_OFFLINE=1 (no hub, telemetry or asset downloads),
YOLO_AUTOINSTALL=0 (no pip) and YOLO_VERBOSE=False, unless the user set them, before ultralytics
is imported; model yamls are read from the installed package and .pt paths are checked before
ultralytics sees them (it would try to download a missing official name).  ultralytics is
imported only when a function here runs, never by importing this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import MODELS, resolve_model

__all__ = ["bundled_names", "HEAD_EXCLUSIONS", "import_ultralytics", "build_detection_model", "load_detection_model",
           "check_detection_model", "head_exclusions"]

HEAD_EXCLUSIONS = ("last", "head", "none")


def bundled_names() -> list[str]:
    """The yolo task's registered model names and aliases (slr_prune.models); each names a bundled yaml."""
    return [n for name in MODELS.list(task="yolo") for n in (name, *MODELS.get(name).traits["aliases"])]


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


def _bundled_yaml(stem: str) -> Path:
    ultralytics = import_ultralytics()
    folder = Path(ultralytics.__file__).parent / "cfg" / "models" / "v3"
    for name in (f"{stem}.yaml", f"{stem}u.yaml"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"ultralytics {ultralytics.__version__} ships no {stem}.yaml in {folder}")


def build_detection_model(config: str | Path, nc: int, names: Sequence[str] | None = None,
                          seed: int = 0) -> nn.Module:
    """An ultralytics DetectionModel from a bundled name (`bundled_names`) or a model yaml, freshly initialised.

    The initialisation is seeded (the global RNG is left as it was), so every call gives the same model.
    """
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG_DICT, YAML

    if str(config) in bundled_names():
        path = _bundled_yaml(resolve_model(str(config), "yolo"))
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
    check_detection_model(model, str(path))
    model.names = dict(enumerate(names)) if names is not None else {i: str(i) for i in range(nc)}
    model.args = dict(DEFAULT_CFG_DICT, task="detect")
    model.task = "detect"
    return model


def load_detection_model(path: str | Path, trust: bool = False) -> nn.Module:
    """The detection model in an ultralytics .pt (EMA weights when present), in float32 and train mode.

    The file is read with `torch.load(weights_only=True)` against ultralytics' allow-list of model
    classes, so a crafted file cannot run code; `trust=True` (`--trust-checkpoint`) allows a full
    unpickle, for files from a source the user trusts that hold other classes.

    Raises FileNotFoundError for a missing file (ultralytics would try to download it) and
    ValueError for a file that holds no ultralytics detection model (a classifier, a
    segmentation/pose/OBB model, a bare state_dict, a corrupt file).
    """
    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    path = Path(path).expanduser()
    if path.suffix != ".pt":
        raise ValueError(f"model {str(path)!r}: expected an ultralytics .pt file, a .yaml model config or one of "
                         f"{', '.join(bundled_names())}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    from ultralytics.nn.tasks import _SafeLoad

    if not trust and not _SafeLoad.SUPPORTED:
        raise ValueError(f"model file {str(path)!r}: this torch cannot load ultralytics files safely (needs torch "
                         "≥ 2.6); pass --trust-checkpoint (trust=True) only for a file you trust")
    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=not trust)
    except Exception as e:
        hint = "" if trust else ("; it was read without running code (weights_only), and a file that needs more "
                                 "can run code when loaded: pass --trust-checkpoint only if you trust its source")
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"model file {str(path)!r} could not be read as an ultralytics checkpoint: "
                         f"{type(e).__name__}: {first}{hint}") from e
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        keys = ", ".join(list(ckpt)[:6]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"model file {str(path)!r} holds no ultralytics model (found: {keys}); save one with "
                         "YOLO(...).save(path) or slr_prune.export.export_ultralytics")
    check_detection_model(model, str(path))
    model = model.float()
    args = ckpt.get("train_args") or getattr(model, "args", None) or {}
    model.args = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    model.task = "detect"
    for p in model.parameters():
        p.requires_grad_(True)
    _freeze_dfl(model)
    return model.train()


def check_detection_model(model: nn.Module, source: str) -> None:
    """ValueError naming `source` unless `model` is an ultralytics DetectionModel with a plain Detect head."""
    import_ultralytics()
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
