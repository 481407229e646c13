"""Probe closures: the loss f(W) on a fixed set of batches, for SLR's optimality conditions.

SLR compares the relaxed Lagrangian at the current and the previous iterate; both sides must
see the same data, so the batches are drawn once and kept.  The model is evaluated in eval
mode (batch-norm running statistics are read, never updated) without gradients.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .utils import model_mode

__all__ = ["probe_closure"]


def probe_closure(model: nn.Module, batches: Iterable[Any],
                  criterion: Callable[[Tensor, Tensor], Tensor] | None = None, *,
                  batch_loss: Callable[[Any], Tensor] | None = None,
                  max_batches: int | None = None) -> Callable[[], float]:
    """A closure returning the mean loss over the first `max_batches` of `batches`.

    Give `criterion(model(x), y)` for (x, y) batches, or `batch_loss(batch)` for anything else.
    """
    if (criterion is None) == (batch_loss is None):
        raise TypeError("give exactly one of criterion= or batch_loss=")
    kept = list(itertools.islice(batches, max_batches))
    if not kept:
        raise ValueError("probe_closure needs at least one batch")
    if batch_loss is None:
        def batch_loss(batch: Any) -> Tensor:
            x, y = batch
            return criterion(model(x), y)

    @torch.no_grad()
    def closure() -> float:
        with model_mode(model, train=False):
            return sum(float(batch_loss(b)) for b in kept) / len(kept)

    return closure
