"""The hard-prune-without-retraining evaluator.

What a user wants to know before paying for fine-tuning: the metric of the dense model, the
metric the moment the weights are projected onto the sparse set, and (elsewhere) after masked
fine-tuning.  Projections are evaluated on a temporary copy of the weights, so the model itself
is never changed by an evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .adapters.base import Task
from .sets import Projector
from .solvers.base import weights_set_to
from .spec import PruneSpec

__all__ = ["hard_prune_metrics", "sparsity_sweep"]


@torch.no_grad()
def hard_prune_metrics(task: Task, model: nn.Module, projector: Projector,
                       device: torch.device) -> dict[str, float]:
    """The task's metrics with every pruned weight replaced by Π_S(W); the model is restored."""
    params = dict(model.named_parameters())
    names = projector.names()
    targets = [params[n] for n in names]
    projected = list(projector.project({n: params[n].detach() for n in names}).values())
    with weights_set_to(targets, projected):
        return task.evaluate(model, device)


def sparsity_sweep(task: Task, model: nn.Module, ratios: Iterable[float], form: str = "unstructured",
                   device: torch.device | None = None, **spec_options: Any) -> list[dict[str, float]]:
    """Hard-prune (magnitude projection, no retraining) at each ratio and record the metric."""
    device = device or next(model.parameters()).device
    rows = []
    for ratio in ratios:
        projector = Projector(PruneSpec.uniform(ratio, form=form, **spec_options).resolve(model))
        metrics = hard_prune_metrics(task, model, projector, device)
        rows.append({"ratio": ratio, **metrics})
    return rows
