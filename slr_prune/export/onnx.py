"""ONNX export through torch.onnx, checked with onnxruntime."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..atomic import write_bytes_atomic
from ..task import Task
from . import EXPORTERS, plain_copy

__all__ = ["export_onnx", "onnx_max_difference", "export_mode"]


def export_mode(model: nn.Module) -> nn.Module:
    """Switch heads that have an export mode (ultralytics' Detect: one decoded output tensor) to
    it; a no-op for any other model."""
    for m in model.modules():
        if type(m).__module__.startswith("ultralytics.nn.modules") and hasattr(type(m), "export"):
            m.export = True
            m.format = "onnx"
            if hasattr(m, "dynamic"):
                m.dynamic = False
    return model


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
    clone = export_mode(plain_copy(model))
    x = example_input.detach().float().cpu()
    with torch.no_grad():
        clone(x)  # builds anchor grids etc. for this input shape
    kwargs: dict[str, Any] = {"input_names": ["images"], "output_names": ["output0"], "opset_version": opset}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "output0": {0: "batch"}}
    buffer = io.BytesIO()  # exported in memory, then written atomically (a full disk leaves no partial file)
    try:
        torch.onnx.export(clone, (x,), buffer, dynamo=False, **kwargs)
    except TypeError:  # an exporter without the `dynamo` switch
        torch.onnx.export(clone, (x,), buffer, **kwargs)
    return write_bytes_atomic(buffer.getvalue(), path)


def onnx_max_difference(path: str | Path, model: nn.Module, example_input: Tensor) -> float:
    """Largest absolute difference between onnxruntime's output and PyTorch's on `example_input`."""
    import numpy as np
    import onnxruntime as ort

    clone = export_mode(plain_copy(model))
    x = example_input.detach().float().cpu()
    with torch.no_grad():
        ref = clone(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(out - ref.numpy()).max())


@EXPORTERS.register("onnx", help="ONNX graph (torch.onnx), checked with onnxruntime", suffix=".onnx")
def _onnx(task: Task, model: nn.Module, path: Path, x: Tensor, reference: Tensor) -> tuple[Path, float]:
    export_onnx(model, path, x)
    return path, onnx_max_difference(path, model, x)
