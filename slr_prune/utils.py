"""Small helpers shared across packages (no slr_prune imports, so any layer may use them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["weights_set_to"]


@contextmanager
def weights_set_to(params: list[Tensor], values: list[Tensor]) -> Iterator[None]:
    """Temporarily load `values` into `params` (e.g. a previous iterate or a hard-pruned copy)."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        torch._foreach_copy_([p.data for p in params], values)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in params], saved)
