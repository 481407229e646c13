"""Masks: the result of a hard prune, enforced during fine-tuning, and squashed away for export.

The lifecycle follows torch.ao.pruning: `Masks.attach(model)` registers a parametrization on every
pruned weight so the forward pass sees `original * mask`.  Pruned weights are then exactly zero
whatever the optimizer does (momentum, weight decay, Adam), and their gradients are zero too.
`squash(model)` bakes the masks in and removes the parametrizations, leaving a plain model whose
state_dict loads into a fresh instance of the architecture.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .errors import StateError

__all__ = ["Masks", "MaskedWeight", "check_masks", "check_mask_sparsity", "squash", "sparsity_report"]


class MaskedWeight(nn.Module):
    """Parametrization weight ↦ weight · mask, with the mask kept as a buffer."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    try:
        return (model.get_submodule(module_name) if module_name else model), attr
    except AttributeError as e:
        raise StateError(f"mask {name!r} names no module of the model") from e


class Masks(Mapping[str, Tensor]):
    """Boolean masks by parameter name (True = kept)."""

    def __init__(self, masks: Mapping[str, Tensor]):
        for name, m in masks.items():
            if not isinstance(m, Tensor) or m.dtype != torch.bool:
                kind = m.dtype if isinstance(m, Tensor) else type(m).__name__
                raise StateError(f"mask {name!r} must be a boolean tensor (True = kept), got {kind}")
        self._masks = dict(masks)

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def _targets(self, model: nn.Module) -> dict[str, Tensor]:
        params = dict(model.named_parameters())
        out = {}
        for n, m in self._masks.items():
            if n not in params:
                raise StateError(f"mask {n!r} names no parameter of the model")
            if params[n].shape != m.shape:
                raise StateError(f"mask {n!r} has shape {tuple(m.shape)}, the parameter {tuple(params[n].shape)}")
            out[n] = params[n]
        return out

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights in place (one fused multiply over all tensors)."""
        targets = self._targets(model)
        weights = list(targets.values())
        masks = [self._masks[n].to(w.device, w.dtype) for n, w in targets.items()]
        torch._foreach_mul_(weights, masks)
        return model

    def attach(self, model: nn.Module) -> nn.Module:
        """Enforce the masks in every forward pass (masked fine-tuning); undo with `squash`."""
        targets = self._targets(model)
        self.apply_(model)
        for name, weight in targets.items():
            module, attr = _owner(model, name)
            mask = self._masks[name].to(weight.device, weight.dtype)
            parametrize.register_parametrization(module, attr, MaskedWeight(mask), unsafe=True)
        return model

    def density(self) -> float:
        kept = sum(int(m.sum()) for m in self._masks.values())
        return kept / max(1, sum(m.numel() for m in self._masks.values()))

    def state_dict(self) -> dict[str, Tensor]:
        return {n: m.cpu() for n, m in self._masks.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> Masks:
        return cls(state)

    @classmethod
    def from_model(cls, model: nn.Module, names: list[str]) -> Masks:
        """Masks of the non-zeros of the named parameters (e.g. of a hard-pruned model)."""
        params = dict(model.named_parameters())
        return cls({n: params[n].detach() != 0 for n in names})


def check_masks(masks: Any, model: nn.Module, where: str) -> None:
    """Masks read from a file checked against the model's weights before they are used; the first
    problem is one line naming the tensor.  Refused: a mask that is not a boolean tensor, names no
    parameter or has its shape wrong; one that keeps no weight of its layer; one that disagrees
    with the weights it was saved with: a non-zero weight outside the mask (a pruned weight that
    regrew, or masks of other weights), or more exact zeros than non-zeros among the kept weights
    (an inverted or stale mask: trained kept weights are almost never exactly zero)."""
    if not isinstance(masks, Mapping):
        raise StateError(f"{where}: its masks are a {type(masks).__name__}, expected a mapping of name: tensor")
    params = dict(model.named_parameters())
    for name, m in masks.items():
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            kind = m.dtype if isinstance(m, Tensor) else type(m).__name__
            raise StateError(f"{where}: mask {name!r} must be a boolean tensor (True = kept), got {kind}")
        if name not in params or params[name].shape != m.shape:
            shape = tuple(params[name].shape) if name in params else "no such parameter"
            raise StateError(f"{where}: mask {name!r} has shape {tuple(m.shape)}, the model's weight {shape}")
        weight = params[name].detach().cpu() != 0
        kept_zeros, kept = int((m & ~weight).sum()), int(m.sum())
        regrown = int((weight & ~m).sum())
        if kept == 0:
            raise StateError(f"{where}: mask {name!r} keeps no weight of its layer (all False)")
        if regrown:
            raise StateError(f"{where}: mask {name!r} disagrees with the weights: {regrown} non-zero weights lie "
                             "outside it (regrown after pruning, or the masks of other weights)")
        if kept_zeros > kept - kept_zeros:
            raise StateError(f"{where}: mask {name!r} disagrees with the weights: {kept_zeros} of its {kept} kept "
                             "weights are exactly zero (an inverted or stale mask)")


def check_mask_sparsity(masks: Mapping[str, Tensor], recorded: Any, where: str) -> None:
    """Masks whose fraction of pruned weights is not the sparsity recorded with them (the run's
    reached target, over the same tensors) belong to another run: refused, naming both figures."""
    if not isinstance(recorded, float | int) or recorded != recorded or not masks:
        return
    pruned = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    if abs(pruned - recorded) > 1e-3:
        raise StateError(f"{where}: its masks prune {pruned:.2%} of the weights, but the file records a sparsity "
                         f"of {recorded:.2%} (masks of another run)")


def squash(model: nn.Module) -> nn.Module:
    """Bake attached masks into the weights and remove the parametrizations, in place."""
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        # A deep copy shares its parametrized class with the original; removal deletes the
        # property from that class, so give this module a private copy of the class first.
        cls = module.__class__
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        for attr in list(module.parametrizations.keys()):
            if any(isinstance(p, MaskedWeight) for p in module.parametrizations[attr]):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return model


def sparsity_report(model: nn.Module, names: list[str] | None = None) -> list[dict]:
    """Per-parameter rows (name, numel, nonzero, sparsity) for the named or all ≥2-D weights."""
    rows = []
    for n, p in model.named_parameters():
        if (names is None and p.dim() < 2) or (names is not None and n not in names):
            continue
        nz = int(torch.count_nonzero(p.detach()))
        rows.append({"name": n, "numel": p.numel(), "nonzero": nz, "sparsity": 1 - nz / p.numel()})
    return rows
