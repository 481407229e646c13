"""The structure record: what a resized model differs in from a fresh instance of its architecture.

A pruned model differs from a fresh instance only in tensor shapes and in the integer attributes
that describe them (`out_channels`, `num_features`, `in_features`, ...).  The record lists, for
every module, its class, those integer attributes and the shapes of its own parameters and
buffers: plain JSON-able data, stored in every artifact, so a structurally pruned model is
rebuilt without Torch-Pruning, tracing or pickled classes, and a file from another architecture
fails with the first module that does not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import StateError

__all__ = ["FORMAT", "structure_record", "apply_record"]

FORMAT = "slr_prune.structured/1"


def _int_attrs(module: nn.Module) -> dict[str, Any]:
    """Public int (not bool) and tuple-of-int attributes: the shape-describing ones."""
    out: dict[str, Any] = {}
    for k, v in vars(module).items():
        if k.startswith("_"):
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            out[k] = v
        elif isinstance(v, tuple) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            out[k] = list(v)
    return out


def structure_record(model: nn.Module) -> dict[str, Any]:
    """{"format", "modules": {name: {"type", "attrs", "tensors": {name: shape or None}}}}."""
    modules = {}
    for name, module in model.named_modules():
        tensors = {k: (list(v.shape) if v is not None else None) for k, v in module._parameters.items()}
        tensors.update({k: (list(v.shape) if v is not None else None) for k, v in module._buffers.items()})
        modules[name] = {"type": type(module).__name__, "attrs": _int_attrs(module), "tensors": tensors}
    return {"format": FORMAT, "modules": modules}


@torch.no_grad()
def apply_record(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Resize a fresh instance of the architecture to a structure record, in place."""
    if not isinstance(record, Mapping) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, Mapping) else type(record).__name__
        raise StateError(f"not a structured-pruning record: format {found!r}, expected {FORMAT!r}")
    present = dict(model.named_modules())
    saved = record["modules"]
    extra = [n for n in saved if n not in present]
    lacking = [n for n in present if n not in saved]
    if extra or lacking:
        raise StateError(f"the record does not describe this architecture: modules only in the record "
                         f"{extra[:3]}, only in the model {lacking[:3]}; build the model the file was saved from")
    for name, entry in saved.items():
        module = present[name]
        if type(module).__name__ != entry["type"]:
            raise StateError(f"module {name!r} is a {type(module).__name__} here but a {entry['type']} in the record")
        for k, v in entry["attrs"].items():
            if k in vars(module):
                setattr(module, k, tuple(v) if isinstance(v, list) else v)
        for k, shape in entry["tensors"].items():
            if k in module._parameters:
                old = module._parameters[k]
                if (old is None) != (shape is None):
                    raise StateError(f"{name}.{k}: present in only one of the record and the model")
                if old is not None and list(old.shape) != shape:
                    module._parameters[k] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
            elif k in module._buffers:
                old = module._buffers[k]
                if old is not None and shape is not None and list(old.shape) != shape:
                    module._buffers[k] = old.new_empty(shape)
            else:
                raise StateError(f"{name}.{k}: the record has a tensor the model's {entry['type']} lacks")
    return model
