"""The compressed export: a safetensors file holding each pruned tensor's non-zeros packed densely
plus a bit mask (slr_prune/compressed.py), so the file is really smaller; `load_compressed`
rebuilds the model from it alone."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..artifact import load_artifact
from ..compressed import DTYPES, write_compressed
from ..structure import structure_record
from ..task import Task, create_task, task_name
from . import EXPORTERS, difference, outputs, plain_copy

__all__ = ["load_compressed", "rounded_copy"]


def rounded_copy(model: nn.Module, dtype: str) -> nn.Module:
    """A plain copy of `model` whose floating tensors went through `dtype` and back: what a file
    with `dtype` values holds, computed in float32."""
    clone = plain_copy(model)
    with torch.no_grad():
        for t in clone.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.to(DTYPES[dtype]).to(t.dtype))
    return clone


@EXPORTERS.register("compressed", help="safetensors with the non-zeros packed plus a bit mask per pruned tensor "
                                       "(the file really shrinks); slr_prune.load_compressed(path) rebuilds the "
                                       "model", suffix=".safetensors",
                    option_help={"dtype": "value precision of the compressed file"})
def _compressed(task: Task, model: nn.Module, path: Path, x: Tensor, reference: Tensor, *,
                dtype: Literal["float32", "float16", "bfloat16"] = "float32") -> tuple[Path, float]:
    clone = plain_copy(model)
    structure = structure_record(clone)
    resized = structure != structure_record(task.build_model())  # the record only where it is needed
    write_compressed(path, clone.state_dict(), dtype, task_name=task_name(task), task=task.record(),
                     structure=structure if resized else None)
    fresh = load_artifact(path).build(task.build_model().float().cpu(), f"{str(path)!r}")
    expected = reference if dtype == "float32" else outputs(rounded_copy(model, dtype), x)
    return path, difference(outputs(fresh, x), expected)


def load_compressed(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The model a compressed file holds: `model` (a fresh instance of the architecture) resized
    and loaded, or, without one, a model built from the task recorded in the file."""
    from .. import adapters  # noqa: F401  (registers the built-in tasks)

    artifact = load_artifact(path)
    if model is None:
        if artifact.task_name is None:
            raise ValueError(f"{str(path)!r} records no task; pass the model it was exported from")
        model = create_task(artifact.task_name, **(artifact.task or {})).build_model()
    return artifact.build(model, f"{str(path)!r}")
