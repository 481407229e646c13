"""An ultralytics-loadable .pt (YOLO(path).predict runs on it) for detection models.

The file is what ultralytics itself writes (a pickled model under "model" plus "train_args"), so
YOLO(path) loads it with ultralytics' own loader; slr_prune adds a "slr_prune" entry with the
sparsity of every pruned weight.  This is the one file slr_prune writes that is not an artifact:
its format is ultralytics'.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..artifact import save_atomic
from ..models.yolo import check_detection_model, import_ultralytics, load_detection_model
from ..task import Task
from . import EXPORTERS, difference, outputs, plain_copy, sparsity

__all__ = ["export_ultralytics"]


def export_ultralytics(model: nn.Module, path: str | Path, *, names: Sequence[str] | Mapping[int, str] | None = None,
                       train_args: Mapping[str, Any] | None = None, half: bool = False,
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `model` (an ultralytics DetectionModel) as a .pt that `ultralytics.YOLO(path)` loads.

    `names` overrides the class names stored with the model; `train_args` are stored as the
    checkpoint's training arguments (ultralytics reads imgsz, task, ... from them); `half` stores
    float16 weights as ultralytics' own checkpoints do (zeros stay zeros), the default keeps float32.
    """
    ultralytics = import_ultralytics()
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"ultralytics model files end in .pt, got {str(path)!r}")
    check_detection_model(model, type(model).__name__)
    clone = plain_copy(model)
    if hasattr(clone, "criterion"):
        clone.criterion = None  # training-only state that would pickle the loss into the file
    if names is not None:
        clone.names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    args = dict(train_args if train_args is not None else _args_dict(getattr(model, "args", None)))
    args.setdefault("task", "detect")
    clone.args = args
    clone.task = "detect"
    for p in clone.parameters():
        p.requires_grad_(False)
    if half:
        clone = clone.half()
    save_atomic({
        "model": clone,
        "train_args": args,
        "date": datetime.datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "slr_prune": {**sparsity(clone), **dict(metadata or {})},
    }, path)
    return path


def _args_dict(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    return dict(args) if isinstance(args, Mapping) else dict(vars(args))


def _args_dict(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    return dict(args) if isinstance(args, Mapping) else dict(vars(args))


@EXPORTERS.register("ultralytics", help="a .pt that ultralytics.YOLO(path) loads (detection models only)",
                    suffix=".pt")
def _ultralytics(task: Task, model: nn.Module, path: Path, x: Tensor, reference: Tensor) -> tuple[Path, float]:
    export_ultralytics(model, path)
    loaded = load_detection_model(path).eval()  # through the safe loader, as a user would load it
    return path, difference(outputs(loaded, x), reference)
