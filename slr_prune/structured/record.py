"""Save and load a structurally pruned model: the artifact with its structure record.

`save_pruned` writes an artifact (slr_prune/artifact.py) whose structure record (slr_prune/structure.py)
describes the resized model; `load_pruned` resizes a fresh instance of the architecture to it and
loads the weights strictly.  No Torch-Pruning, no tracing and no pickled classes at load time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ..artifact import Artifact, load_artifact, save_artifact
from ..structure import FORMAT, apply_record, structure_record

__all__ = ["FORMAT", "structure_record", "apply_record", "save_pruned", "load_pruned"]


def save_pruned(path: str | Path, model: nn.Module, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the weights and the structure record atomically; `extra` is kept as the result
    (its "task" and "task_name" entries as the artifact's task)."""
    extra = dict(extra or {})
    named = {"task_name": extra.pop("task_name", None), "task": extra.pop("task", None)}
    return save_artifact(replace(Artifact.of(model), **named, result=extra or None), path)


def load_pruned(path: str | Path, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Resize `model` (a fresh instance of the architecture) to the file's record and load its
    weights; returns (model, extra)."""
    artifact = load_artifact(path)
    artifact.build(model, f"{str(path)!r}")
    named = {k: v for k, v in (("task", artifact.task), ("task_name", artifact.task_name)) if v is not None}
    return model, {**(artifact.result or {}), **named}
