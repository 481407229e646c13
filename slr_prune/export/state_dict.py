"""The weights as an artifact (slr_prune/2): plain tensors under "state_dict", with the task and
the structure record, reloaded into a fresh model of the task to check it."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ..artifact import Artifact, load_artifact, save_artifact
from ..task import Task
from . import EXPORTERS, difference, outputs, plain_copy


@EXPORTERS.register("state_dict", help="plain tensors (torch.load(weights_only=True)[\"state_dict\"]), reloaded "
                                       "into a fresh model of the task", suffix=".pt")
def _state_dict(task: Task, model: nn.Module, path: Path, x: Tensor, reference: Tensor) -> tuple[Path, float]:
    save_artifact(Artifact.of(plain_copy(model), task), path)
    fresh = load_artifact(path).build(task.build_model().float().cpu(), f"{str(path)!r}")
    return path, difference(outputs(fresh, x), reference)
