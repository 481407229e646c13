"""Exporters: a pruned model written in another format, keyed by format name (`EXPORTERS`).

Every exporter works on a copy (`plain_copy`: masks squashed into the weights, CPU, float32, eval
mode), writes its file and returns the largest output difference between the model it reloads
from that file and the model it was given, so an export is checked, not trusted.  Formats are one
module each: compressed.py, onnx.py, state_dict.py, ultralytics.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..masks import MaskedWeight, squash
from ..registry import Registry
from ..task import Task

__all__ = ["EXPORTERS", "Exporter", "plain_copy", "outputs", "difference", "export_onnx",
           "onnx_max_difference",
           "export_ultralytics", "load_compressed"]

Exporter = Callable[[Task, nn.Module, Path, Tensor, Tensor], tuple[Path, float]]
EXPORTERS: Registry[Exporter] = Registry("export format")
"""Formats by name; exporter(task, model, path, x, reference) writes the file and returns (path,
largest |difference| between the exported model's output on x and `reference`, the model's)."""


def plain_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 eval-mode copy of `model` with attached masks squashed into the weights."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name, chain in module.parametrizations.items():
                if not all(isinstance(p, MaskedWeight) for p in chain):
                    raise ValueError(f"{type(module).__name__}.{name} carries parametrizations other than slr_prune "
                                     "masks; remove them before export")
    return squash(copy.deepcopy(model)).float().cpu().eval()


def outputs(model: nn.Module, x: Tensor) -> Tensor:
    """The first output of a plain copy of `model` on `x` (detection models return a tuple)."""
    with torch.no_grad():
        out = plain_copy(model)(x)
    return out[0] if isinstance(out, tuple | list) else out


def difference(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def sparsity(model: nn.Module) -> dict[str, Any]:
    """Zeros among the weights of rank ≥ 2, in total and per layer."""
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


from . import state_dict  # noqa: E402,F401  (registers the formats)
from .compressed import load_compressed  # noqa: E402
from .onnx import export_onnx, onnx_max_difference  # noqa: E402
from .ultralytics import export_ultralytics  # noqa: E402
