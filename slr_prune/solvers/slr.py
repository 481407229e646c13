"""Surrogate Lagrangian Relaxation (SLR) for constrained pruning.

One `step(closure)` is one SLR iteration after a W-subproblem (the user's SGD steps with
`add_penalty_grad_`), following the SLR pruning papers (arXiv 2012.10079, IJCAI 2021; arXiv
2304.04120) and the authors' public code (github.com/Zhoushanglin100/SLR-ADMM-cifar10):

1. Surrogate condition 1: L(W^k, Z^{k−1}, Λ) < L(W^{k−1}, Z^{k−1}, Λ), with the loss evaluated by
   the same probe closure at the current weights and at a *copy* of the previous iterate.
   If it holds (always at k = 1): s ← α_k s g_last / Σ‖W − Z‖, Λ ← Λ + s(W − Z), where g_last
   is the residual Σ‖·‖ of the previous multiplier update (initially Σ‖W_0 − Π(W_0)‖).
2. Z-step: Z_new = Π_S(W + Λ/ρ), exact.
3. Surrogate condition 2: L(W, Z_new, Λ) < L(W, Z, Λ) (the loss term cancels, so only the
   penalty terms are compared).  If it holds: s ← α_k s g_last / Σ‖W − Z_new‖,
   Λ ← Λ + s(W − Z_new), and the previous iterate becomes (W, Z_new).

α_k = 1 − 1/(M k^{1 − 1/k^r}).  Multipliers move only when a condition holds, so a bad iterate
cannot corrupt Λ.

One deliberate departure from the paper's Eq. 11 (and the authors' admm_v3.py): there both
updates of an iteration divide into ‖W_prev − Z_prev‖, so when the residual shrinks s grows like
1/residual² and, with M = 300, Λ and W diverge (measured: 58 of 60 sparse-regression instances,
tests/test_reference_cvxpy.py).  Here the numerator g_last is the residual of the last multiplier
update, as in Bragin et al. (2015), so each step s·g is exactly α_k times the previous one.

Options studied in benchmarks/solver_study.py (docs/slr.md has the table): `step_scale="rho"`
measures s in units of ρ, so the dual step follows a ρ schedule as ADMM's does while keeping the
contraction; `s_max` caps s (with "rho": the dual step never exceeds ADMM's ρ); `update_every`
runs an iteration every k mini-batches instead of once per epoch; `rho_balance` replaces the
fixed ρ growth by residual balancing; `warm_start` makes the first multiplier ρ(W − Z), the
multiplier ADMM's first step sets, scaled to the current residual, before the contraction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import nn

from ..config import option
from ..errors import StateError
from ..sets import ConstraintSet
from ..spec import PruneSpec
from .base import Closure, PenaltySolver, eval_closure, register_solver
from .config import PenaltyConfig, with_default

__all__ = ["SLR", "SLRConfig", "STEP_SCALES", "slr_alpha"]

StepScale = Literal["absolute", "rho"]


def slr_alpha(k: int, M: float, r: float) -> float:
    """SLR's step-size contraction α_k = 1 − 1 / (M · k^(1 − 1/k^r))."""
    return 1.0 - 1.0 / (M * k ** (1.0 - 1.0 / k**r))

STEP_SCALES = get_args(StepScale)


@dataclass(frozen=True)
class SLRConfig(PenaltyConfig):
    """SLR's options; the defaults are the authors' (ρ 0.1 fixed, M 300, r 0.1, s0 0.01)."""

    updates_per_epoch: int = with_default(PenaltyConfig, "updates_per_epoch", 4)
    M: float = option(300.0, "step-size parameter M > 1")
    r: float = option(0.1, "step-size parameter 0 < r < 1")
    s0: float = option(0.01, "initial multiplier step size")
    step_scale: StepScale = option("absolute", "s is an absolute dual step, or counts in units of ρ")
    s_max: float | None = option(None, "cap on the step size s")
    warm_start: bool = option(False, "the first multiplier is ρ(W − Z), ADMM's first step")
    backtrack: float = option(0.0, "on a failed surrogate condition, undo the last multiplier update and scale s "
                                   "by this factor in (0, 1) (0: off)")

    RECOMMENDED_RHO_END: ClassVar[float] = 100.0
    """Best on validation in the solver study (digits CNN and ResNet-20) of ρ_end 3…300."""

    def __post_init__(self) -> None:
        if not self.M > 1:
            raise ValueError(f"M must be > 1, got {self.M!r}")
        if not 0 < self.r < 1:
            raise ValueError(f"r must lie in (0, 1), got {self.r!r}")
        if not self.s0 > 0:
            raise ValueError(f"s0 must be positive, got {self.s0!r}")
        if not (self.backtrack == 0 or 0 < self.backtrack < 1):
            raise ValueError(f"backtrack must be 0 (off) or a factor in (0, 1), got {self.backtrack!r}")
        if self.step_scale not in STEP_SCALES:
            raise ValueError(f"step_scale must be one of {', '.join(STEP_SCALES)}, got {self.step_scale!r}")
        super().__post_init__()
        if self.s_max is not None and not self.s_max >= self.s0:
            raise ValueError(f"s_max must be ≥ s0 ({self.s0}), got {self.s_max!r}")


@register_solver("slr", help="surrogate Lagrangian relaxation (guarded multiplier steps)")
class SLR(PenaltySolver):
    """SLR (surrogate Lagrangian relaxation); options in `SLRConfig`."""

    Config = SLRConfig
    config: SLRConfig

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: SLRConfig | None = None, **options: Any):
        super().__init__(model, spec, config, **options)
        c = self.config
        self.step_scale = c.step_scale
        self.s_max = c.s_max
        self.warm_start = bool(c.warm_start)
        self.M, self.r = float(c.M), float(c.r)
        self.s = float(c.s0)
        self.k = 1
        self.W_prev = [p.detach().clone() for p in self.params]
        self.Z_prev = [z.clone() for z in self.Z]
        self.g_last = self.residual(self.W_prev, self.Z_prev)
        self.backtrack = float(c.backtrack)
        self.Lam_prev = [t.clone() for t in self.Lam] if self.backtrack else []
        self.s_prev, self.g_prev, self.backtracks = self.s, self.g_last, 0

    def _tensor_state(self) -> dict[str, list[torch.Tensor]]:
        extra = {"Lam_prev": self.Lam_prev} if self.backtrack else {}
        return {**super()._tensor_state(), "W_prev": self.W_prev, "Z_prev": self.Z_prev, **extra}

    def _scalar_state(self) -> dict[str, Any]:
        return {**super()._scalar_state(), "s": self.s, "k": self.k, "g_last": self.g_last, "s_prev": self.s_prev,
                "g_prev": self.g_prev, "backtracks": self.backtracks}

    def _check_scalar(self, name: str, value: Any, current: Any) -> None:
        super()._check_scalar(name, value, current)
        if (name == "s" and not value > 0) or (name == "k" and not value >= 1):
            raise StateError(f"SLR state: {name} = {value!r} is out of range (s > 0, k ≥ 1)")

    def alpha(self, k: int) -> float:
        """Step-size contraction α_k (see `slr_alpha`)."""
        return slr_alpha(k, self.M, self.r)

    def dual_step(self) -> float:
        """The multiplier step: s itself, or s·ρ with step_scale "rho" (s then counts in units of ρ)."""
        return self.s * self.rho if self.step_scale == "rho" else self.s

    def _update_step_size(self, residual: float) -> None:
        """s ← α_k · s · g_last / g, then g_last ← g (g: the residual this update uses).

        Dividing by the residual of the *last multiplier update* keeps every step s·g exactly
        α_k times the previous one, the contraction Bragin et al.'s convergence argument needs.
        """
        if self.g_last > 0 and residual > 0:
            self.s = self.alpha(self.k) * self.s * self.g_last / residual
            if self.s_max is not None:
                self.s = min(self.s, self.s_max)
            self.g_last = residual

    def _remember(self) -> None:
        """Before a multiplier update: what backtracking restores (Λ, s) if a later condition fails."""
        if self.backtrack:
            torch._foreach_copy_(self.Lam_prev, self.Lam)
            self.s_prev, self.g_prev = self.s, self.g_last

    def _undo(self) -> None:
        """A failed condition with `backtrack`: Λ, s and the residual back to before the last update
        (once per failure), s scaled down by the factor, k one back."""
        if not self.backtrack or self.k <= 1:
            return
        torch._foreach_copy_(self.Lam, self.Lam_prev)
        self.s, self.g_last = self.s_prev * self.backtrack, self.g_prev
        self.s_prev = self.s
        self.k -= 1
        self.backtracks += 1
        self._refresh()

    @torch.no_grad()
    def step(self, closure: Closure) -> dict[str, Any]:
        """One SLR iteration; `closure()` returns the loss on fixed probe batches (see probe.py)."""
        if closure is None:
            raise TypeError("SLR.step needs a closure returning the loss on fixed probe batches")
        W = [p.detach().clone() for p in self.params]
        f_new = eval_closure(closure, f"SLR iteration {self.k} (current weights)")
        with self._weights_set_to(self.W_prev):
            f_old = eval_closure(closure, f"SLR iteration {self.k} (previous iterate)")
        L_new = f_new + self.penalty(W, self.Z)
        L_old = f_old + self.penalty(self.W_prev, self.Z)
        cond1 = L_new < L_old or self.k == 1
        if cond1:
            self._remember()
            self._update_step_size(self.residual(W, self.Z))
            # warm start: the first multiplier is ρ(W − Z), ADMM's, scaled to the current residual
            step = self.rho if self.warm_start and self.k == 1 else self.dual_step()
            torch._foreach_add_(self.Lam, torch._foreach_sub(W, self.Z), alpha=step)
            self.k += 1
        else:
            self._undo()

        shift = torch._foreach_div(self.Lam, self.rho)
        Z_new = self.project(W, shift)
        cond2 = self.penalty(W, Z_new) < self.penalty(W, self.Z)
        if cond2:
            self._remember()
            self._update_step_size(self.residual(W, Z_new))
            torch._foreach_add_(self.Lam, torch._foreach_sub(W, Z_new), alpha=self.dual_step())
            self.k += 1
            torch._foreach_copy_(self.W_prev, W)
            torch._foreach_copy_(self.Z_prev, Z_new)
        else:
            self._undo()
        dual = self.dual_residual(self.Z, Z_new)
        torch._foreach_copy_(self.Z, Z_new)

        primal = self.residual(W, self.Z)
        record = {"k": self.k, "loss": f_new, "loss_prev": f_old, "cond1": bool(cond1),
                  "cond2": bool(cond2), "s": self.s, "dual_step": self.dual_step(), "rho": self.rho,
                  "residual": primal}
        self._grow_rho(primal, dual)
        self.history.append(record)
        return record
