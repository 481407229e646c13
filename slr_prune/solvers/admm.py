"""ADMM pruning baseline (Zhang et al. 2018): the same augmented Lagrangian as SLR, plain dual ascent.

Every `interval`-th call of `step()`: Z = Π_S(W + Λ/ρ), then Λ ← Λ + ρ(W − Z) (the scaled form
U ← U + W − Z with U = Λ/ρ).  No optimality conditions guard the update and the dual step is ρ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import is_int, option
from ..sets import ConstraintSet
from ..spec import PruneSpec
from .base import Closure, PenaltySolver, register_solver
from .config import PenaltyConfig

__all__ = ["ADMM", "ADMMConfig"]


@dataclass(frozen=True)
class ADMMConfig(PenaltyConfig):
    """ADMM's options: the penalty ones and the update interval."""

    interval: int = option(1, "epochs (step() calls) between Z/U updates")

    RECOMMENDED_RHO_END: ClassVar[float] = 10.0
    """Best on validation in the solver study (digits CNN and ResNet-20) of ρ_end 3…300."""

    def __post_init__(self) -> None:
        if not (is_int(self.interval) and self.interval >= 1):
            raise ValueError(f"interval must be a positive integer, got {self.interval!r}")
        super().__post_init__()


@register_solver("admm", help="ADMM (multiplier step ρ)")
class ADMM(PenaltySolver):
    """ADMM (alternating direction method of multipliers); `interval` step() calls make one Z/Λ update."""

    Config = ADMMConfig
    config: ADMMConfig

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: ADMMConfig | None = None, **options: Any):
        super().__init__(model, spec, config, **options)
        self.interval = self.config.interval
        self.calls = 0
        self.updates = 0

    def _scalar_state(self) -> dict[str, Any]:
        return {**super()._scalar_state(), "calls": self.calls, "updates": self.updates}

    def updates_in(self, calls: int) -> int:
        """Z/Λ updates made by `calls` calls of `step()` (every `interval`-th call updates)."""
        return max(1, calls // self.interval)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> dict[str, Any]:
        """Count a call; on every `interval`-th, update Z and Λ (the closure is not needed)."""
        self.calls += 1
        if self.calls % self.interval:
            return {"updated": False}
        W = [p.detach() for p in self.params]
        Z_old = self.Z
        self.Z = self.project(W, torch._foreach_div(self.Lam, self.rho))
        torch._foreach_add_(self.Lam, torch._foreach_sub(W, self.Z), alpha=self.rho)
        self.updates += 1
        primal = self.residual(W, self.Z)
        record = {"update": self.updates, "rho": self.rho, "residual": primal}
        self._grow_rho(primal, self.dual_residual(Z_old, self.Z))
        self.history.append(record)
        return {"updated": True, **record}
