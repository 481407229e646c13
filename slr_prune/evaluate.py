"""The hard-prune-without-retraining evaluator.

What a user wants to know before paying for fine-tuning: the metric of the dense model, the
metric the moment the weights are projected onto the sparse set, the same after BatchNorm
recalibration (bn.py: stale running statistics are most of what a hard prune seems to lose), and
(elsewhere) after masked fine-tuning.  Projections are evaluated on a temporary copy of the weights
and BatchNorm buffers, so the model itself is never changed by an evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .bn import batchnorm_layers, recalibrate_bn
from .errors import SpecError
from .sets import FORMS, Projector
from .spec import PruneSpec, form_has_ratio
from .task import Task
from .utils import weights_set_to

__all__ = ["hard_prune_metrics", "sparsity_sweep", "recalibrate_task_bn", "check_bn_batches", "BN_BATCHES"]

BN_BATCHES = 32
"""Default number of training batches for BatchNorm recalibration (0 disables it)."""


def check_bn_batches(batches: Any) -> int:
    """`batches` if it is a valid BatchNorm-recalibration count (an integer ≥ 0), else ValueError."""
    if not (isinstance(batches, int) and batches >= 0):
        raise ValueError(f"bn_batches must be an integer ≥ 0 (0 disables BatchNorm recalibration), got {batches!r}")
    return batches


def recalibrate_task_bn(task: Task, model: nn.Module, device: torch.device, batches: int = BN_BATCHES,
                        seed: int = 0) -> int:
    """Re-estimate `model`'s BatchNorm statistics on `batches` seeded training batches of `task`."""
    if check_bn_batches(batches) == 0 or not batchnorm_layers(model):
        return 0
    return recalibrate_bn(model, task.calibration_batches(batches, seed),
                          lambda m, b: task.forward(m, b, device))


@contextmanager
def bn_state_kept(model: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm buffer on exit (so a recalibration can be tried on the side)."""
    layers = batchnorm_layers(model)
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in zip(layers, saved, strict=True):
                for target, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), bufs, strict=True):
                    target.copy_(value)


@torch.no_grad()
def hard_prune_metrics(task: Task, model: nn.Module, projector: Projector, device: torch.device,
                       bn_batches: int = BN_BATCHES, seed: int = 0) -> dict[str, dict[str, float] | None]:
    """The task's metrics with every pruned weight replaced by Π_S(W); the model is restored.

    Returns {"hard_prune": metrics with the dense BatchNorm statistics, "hard_prune_bn": metrics
    after recalibrating them on `bn_batches` training batches, or None when the model has no
    BatchNorm or bn_batches is 0}.
    """
    params = dict(model.named_parameters())
    names = projector.names()
    targets = [params[n] for n in names]
    projected = list(projector.project({n: params[n].detach() for n in names}).values())
    with weights_set_to(targets, projected), bn_state_kept(model):
        stale = task.evaluate(model, device)
        recalibrated = None
        if recalibrate_task_bn(task, model, device, bn_batches, seed):
            recalibrated = task.evaluate(model, device)
    return {"hard_prune": stale, "hard_prune_bn": recalibrated}


def sparsity_sweep(task: Task, model: nn.Module, ratios: Iterable[float], form: str = "unstructured",
                   device: torch.device | None = None, bn_batches: int = BN_BATCHES,
                   **spec_options: Any) -> list[dict[str, Any]]:
    """Hard-prune (magnitude projection, no retraining) at each ratio; the metrics without and with
    BatchNorm recalibration (`bn_<metric>` keys, absent for a model without BatchNorm)."""
    if not form_has_ratio(form):  # every ratio would give the same model, labelled with different ratios
        valid = ", ".join(f for f in FORMS.list() if form_has_ratio(f))
        raise SpecError(f"sparsity_sweep: form {form!r} fixes its own density and takes no ratio; sweep a form "
                        f"with a ratio ({valid})")
    device = device or next(model.parameters()).device
    rows = []
    for ratio in ratios:
        projector = Projector(PruneSpec.uniform(ratio, form=form, **spec_options).resolve(model))
        m = hard_prune_metrics(task, model, projector, device, bn_batches)
        bn = {f"bn_{k}": v for k, v in (m["hard_prune_bn"] or {}).items()}
        rows.append({"ratio": ratio, **m["hard_prune"], **bn})
    return rows
