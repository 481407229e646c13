"""Probe closures: the loss f(W) on a fixed set of batches, for SLR's optimality conditions.

SLR compares the relaxed Lagrangian at the current and the previous iterate; both sides must
see the same data, so the batches are drawn once and kept.  The model is evaluated in eval
mode (batch-norm running statistics are read, never updated) without gradients.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["probe_closure"]


def probe_closure(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                  loss_fn: Callable[[Tensor, Tensor], Tensor], max_batches: int | None = None,
                  device: torch.device | str | None = None) -> Callable[[], float]:
    """A closure returning the mean loss of `model` over the first `max_batches` of `batches`."""
    kept = list(itertools.islice(batches, max_batches))
    if not kept:
        raise ValueError("probe_closure needs at least one batch")
    if device is not None:
        kept = [(x.to(device), y.to(device)) for x, y in kept]

    @torch.no_grad()
    def closure() -> float:
        was_training = model.training
        model.eval()
        try:
            total = sum(float(loss_fn(model(x), y)) * len(x) for x, y in kept)
        finally:
            model.train(was_training)
        return total / sum(len(x) for x, _ in kept)

    return closure
