"""ADMM pruning baseline (Zhang et al. 2018): the same augmented Lagrangian as SLR, plain dual ascent.

Every `interval`-th call of `step()`: Z = Π_S(W + Λ/ρ), then Λ ← Λ + ρ(W − Z) (the scaled form
U ← U + W − Z with U = Λ/ρ).  No optimality conditions guard the update and the dual step is ρ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..sets import ConstraintSet
from ..spec import PruneSpec
from .base import Closure, PenaltySolver, register_solver

__all__ = ["ADMM"]


@register_solver("admm", penalty=True, help="ADMM (multiplier step ρ)")
class ADMM(PenaltySolver):
    """ADMM (alternating direction method of multipliers); `interval` step() calls make one Z/Λ update."""

    option_help = {"interval": "epochs (step() calls) between Z/U updates"}
    run_rho_end = 10.0  # best on validation in the solver study (digits CNN and ResNet-20) of ρ_end 3…300

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet], *, rho: float = 0.1,
                 interval: int = 1, rho_growth: float = 1.0, rho_max: float | None = None, rho_end: float | None = None,
                 rho_balance: float = 0.0, ramp: int = 0, strategy: str = "auto", update_every: int = 0,
                 updates_per_epoch: int = 1):
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(f"interval must be a positive integer, got {interval!r}")
        super().__init__(model, spec, rho=rho, rho_growth=rho_growth, rho_max=rho_max, rho_end=rho_end,
                         rho_balance=rho_balance, ramp=ramp, strategy=strategy, update_every=update_every,
                         updates_per_epoch=updates_per_epoch)
        self.interval = interval
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
