"""Export a pruned model: an ultralytics-loadable .pt (YOLO(path).predict runs on it) and ONNX.

Both exporters work on a copy: masks attached for fine-tuning are squashed into the weights
(pruned entries are exact zeros, no `weight_orig`/`weight_mask` pairs), the copy is moved to the
CPU in float32 and put in eval mode; the model passed in is left untouched.

The .pt file is what ultralytics itself writes (a pickled model under "model" plus "train_args"),
so YOLO(path) loads it with ultralytics' own loader; slr_prune adds a "slr_prune" entry with the
sparsity of every pruned weight.  ONNX export uses torch.onnx; for ultralytics detection models
the head is switched to export mode, so the graph's single output is the (batch, 4 + classes,
anchors) tensor of decoded boxes and class scores, before NMS.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .masks import MaskedWeight, squash
from .models.yolo import check_detection_model, import_ultralytics, onnx_export_mode

__all__ = ["plain_copy", "export_ultralytics", "export_onnx", "onnx_max_difference"]


def plain_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 eval-mode copy of `model` with attached masks squashed into the weights."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name, chain in module.parametrizations.items():
                if not all(isinstance(p, MaskedWeight) for p in chain):
                    raise ValueError(f"{type(module).__name__}.{name} carries parametrizations other than slr_prune "
                                     "masks; remove them before export")
    return squash(copy.deepcopy(model)).float().cpu().eval()


def _sparsity(model: nn.Module) -> dict[str, Any]:
    rows = {}
    total = zeros = 0
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        nz = int(torch.count_nonzero(p.detach()))
        rows[name] = 1 - nz / p.numel()
        total += p.numel()
        zeros += p.numel() - nz
    return {"weights": total, "zeros": zeros, "sparsity": zeros / max(1, total), "layers": rows}


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
    from .engine.checkpoint import save_atomic

    save_atomic({
        "model": clone,
        "train_args": args,
        "date": datetime.datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "slr_prune": {**_sparsity(clone), **dict(metadata or {})},
    }, path)
    return path


def _args_dict(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    return dict(args) if isinstance(args, Mapping) else dict(vars(args))


def export_onnx(model: nn.Module, path: str | Path, example_input: Tensor, *, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Write `model` to ONNX (input "images", output "output0"); returns the path.

    Needs the `onnx` package (and torch's exporter); ultralytics detection heads export their
    decoded (batch, 4 + classes, anchors) predictions.
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; fail with our message, not deep inside torch)
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx package: pip install onnx (and onnxruntime to run it)") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clone = plain_copy(model)
    onnx_export_mode(clone)
    x = example_input.detach().float().cpu()
    with torch.no_grad():
        clone(x)  # builds anchor grids etc. for this input shape
    kwargs: dict[str, Any] = {"input_names": ["images"], "output_names": ["output0"], "opset_version": opset}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "output0": {0: "batch"}}
    try:
        torch.onnx.export(clone, (x,), str(path), dynamo=False, **kwargs)
    except TypeError:  # an exporter without the `dynamo` switch
        torch.onnx.export(clone, (x,), str(path), **kwargs)
    return path


def onnx_max_difference(path: str | Path, model: nn.Module, example_input: Tensor) -> float:
    """Largest absolute difference between onnxruntime's output and PyTorch's on `example_input`."""
    import numpy as np
    import onnxruntime as ort

    clone = plain_copy(model)
    onnx_export_mode(clone)
    x = example_input.detach().float().cpu()
    with torch.no_grad():
        ref = clone(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(out - ref.numpy()).max())
