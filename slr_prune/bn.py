"""BatchNorm recalibration: re-estimate running statistics after a projection.

Hard pruning changes every pruned layer's output distribution, but BatchNorm keeps the running
mean and variance of the dense network, so a pruned model evaluated as is pays for stale
statistics as well as for the lost weights.  Re-estimating them takes forward passes over a few
training batches (no labels used by the estimate, no weight changed).  The estimate is the plain
average over those batches (`momentum=None`), so it does not depend on the old statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .utils import model_mode

__all__ = ["batchnorm_layers", "recalibrate_bn"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]) -> int:
    """Reset and re-estimate every BatchNorm's running statistics from `batches`, in place.

    `forward(model, batch)` runs the model on one batch (its output is discarded).  Everything
    else in the model keeps its mode; under torch.distributed every rank ends with rank 0's
    statistics.  Returns the number of BatchNorm layers (0: nothing to do, nothing run).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [(m.momentum, m.training) for m in layers]
    seen = 0
    with model_mode(model, train=False):
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
            m.train()
        try:
            for batch in batches:
                forward(model, batch)
                seen += 1
        finally:
            for m, (momentum, training) in zip(layers, saved, strict=True):
                m.momentum = momentum
                m.train(training)
    if seen == 0:
        raise ValueError("BatchNorm recalibration got no batches; give at least one training batch")
    if dist.is_available() and dist.is_initialized():
        for m in layers:
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                dist.broadcast(buf, src=0)
    return len(layers)
