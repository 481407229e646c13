"""Small helpers shared across packages (no slr_prune imports, so any layer may use them)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["weights_set_to", "state_digest", "model_mode", "CONV_LINEAR"]

CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""The weight layers the library prunes, counts and rewires (convolutions and linear layers)."""


@contextmanager
def model_mode(model: nn.Module, train: bool = False) -> Iterator[nn.Module]:
    """Put `model` in train or eval mode for the block, restoring its previous mode on exit (even on error).

    Only the top-level flag is remembered, as `model.train(was)` restores it: submodules whose
    mode differed from the model's own end in the model's mode, as before this helper existed.
    """
    was = model.training
    model.train(train)
    try:
        yield model
    finally:
        model.train(was)


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


def state_digest(model: nn.Module) -> str:
    """A short SHA-256 of the model's state dict (names, shapes, dtypes, values): the weights a run started from."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
