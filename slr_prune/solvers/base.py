"""What every pruning solver shares: the resolved sets, hard pruning, and state.

`PenaltySolver` adds the relaxed-Lagrangian state of SLR and ADMM: the sparse copies Z, the
multipliers Λ and the penalty ρ.  The W-step gradient of ρ/2‖W − Z + Λ/ρ‖² is ρ(W − Z) + Λ; it is
added to `.grad` after `backward()` by two fused multi-tensor ops, outside autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import StateError
from ..masks import Masks
from ..registry import Registry
from ..sets import ConstraintSet, Projector
from ..spec import PruneSpec
from ..utils import weights_set_to

__all__ = ["Solver", "PenaltySolver", "Closure", "cubic_fraction", "SOLVERS", "register_solver"]

Closure = Callable[[], float | Tensor]

SOLVERS: Registry[Solver] = Registry("solver", defaults={"trains": True, "penalty": False, "needs_task": False})
"""Pruning solvers by name (`slr`, `admm`, `magnitude`, ...); traits: `trains` (needs training
epochs with its default options), `penalty` (adds ρ-terms: the ρ options apply), `needs_task`
(the workflow passes task, seed, checkpoint and resume: `layerwise` calibrates on the task)."""
register_solver = SOLVERS.register


class Solver:
    """Base of SLR, ADMM and Magnitude: holds the model's prunable tensors and their sets.

    When the training loop calls `step()`: after every `update_every` = k > 0 optimizer steps;
    else exactly `updates_per_epoch` = n > 1 times per epoch, spread evenly once the loop knows
    the epoch's length (`begin`); else once at the end of each epoch.  `due(i)` tells the loop.
    """

    trains = True
    """Whether the solver needs training epochs (False: it only projects at the end)."""

    option_help = {
        "update_every": "a multiplier update every N mini-batches (0: see --updates-per-epoch)",
        "updates_per_epoch": "multiplier updates spread evenly over each epoch",
    }

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet], *, strategy: str = "auto",
                 update_every: int = 0, updates_per_epoch: int = 1):
        if isinstance(spec, Mapping):
            spec = _checked_sets(model, spec)
        elif not isinstance(spec, PruneSpec):
            raise TypeError(f"spec must be a PruneSpec or a mapping of parameter name to ConstraintSet, "
                            f"got {type(spec).__name__}")
        if not (isinstance(update_every, int) and update_every >= 0):
            raise ValueError(f"update_every must be an integer ≥ 0 (0: once per epoch), got {update_every!r}")
        if not (isinstance(updates_per_epoch, int) and updates_per_epoch >= 1):
            raise ValueError(f"updates_per_epoch must be a positive integer, got {updates_per_epoch!r}")
        self.update_every = update_every
        self.updates_per_epoch = updates_per_epoch
        self.batches_per_epoch = 0
        self.model = model
        self.spec = spec
        self.projector = Projector(spec if isinstance(spec, dict) else spec.resolve(model), strategy=strategy)
        self.names = self.projector.names()
        params = dict(model.named_parameters())
        self.params: list[nn.Parameter] = [params[n] for n in self.names]
        self.history: list[dict[str, Any]] = []

    def weights(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}

    def begin(self, epochs: int, batches_per_epoch: int) -> int:
        """Plan a run of `epochs` × `batches_per_epoch` steps (the Trainer calls this before its
        first epoch, also on resume); returns the number of `step()` calls the run will make."""
        self.batches_per_epoch = batches_per_epoch
        if self.update_every:
            per_epoch = batches_per_epoch // self.update_every
        else:
            per_epoch = min(self.updates_per_epoch, batches_per_epoch)
        return epochs * max(1, per_epoch)

    @property
    def steps_within_epoch(self) -> bool:
        """True when `step()` runs between optimizer steps (see `due`), False: once per epoch."""
        return bool(self.update_every) or (self.updates_per_epoch > 1 and self.batches_per_epoch > 0)

    def due(self, i: int) -> bool:
        """Whether `step()` is due after the i-th optimizer step of an epoch (i from 1)."""
        if self.update_every:
            return i % self.update_every == 0
        if not self.steps_within_epoch:
            return False
        n, b = min(self.updates_per_epoch, self.batches_per_epoch), self.batches_per_epoch
        return (i * n) // b > ((i - 1) * n) // b

    def add_penalty_grad_(self) -> None:
        """Add the solver's term to the gradients (call after backward, before optimizer.step)."""

    def after_optimizer_step_(self) -> None:
        """Called after every optimizer step (gradual magnitude re-applies its masks here)."""

    def step(self, closure: Closure | None = None) -> dict[str, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def hard_prune(self) -> Masks:
        """W ← Π_S(W) in place; returns the masks (exactly the target number of entries kept)."""
        masks = Masks(self.projector.masks(self.weights()))
        masks.apply_(self.model)
        return masks

    def distance(self) -> float:
        """Relative distance of W to the sparse set, Σ‖W − Π_S(W)‖ / Σ‖W‖ (0 means already sparse)."""
        w = self.weights()
        z = self.projector.project(w)
        num = sum(torch.linalg.vector_norm(w[n] - z[n]) for n in self.names)
        den = sum(torch.linalg.vector_norm(w[n]) for n in self.names)
        return float(num / den) if den > 0 else 0.0

    # ---- state --------------------------------------------------------------------------
    def _tensor_state(self) -> dict[str, list[Tensor]]:
        return {}

    def _scalar_state(self) -> dict[str, Any]:
        return {}

    def to(self, device: torch.device | str) -> Solver:
        """Move the solver's state to `device` (after the model was moved there)."""
        for tensors in self._tensor_state().values():
            tensors[:] = [t.to(device) for t in tensors]
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors by parameter name, scalars and history."""
        return {
            "solver": type(self).__name__,
            "names": list(self.names),
            "tensors": {k: {n: t.detach().clone() for n, t in zip(self.names, ts, strict=True)}
                        for k, ts in self._tensor_state().items()},
            "scalars": self._scalar_state(),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("solver") != type(self).__name__:
            raise StateError(f"state was saved by {state.get('solver')!r}, not {type(self).__name__}")
        if list(state["names"]) != self.names:
            missing = sorted(set(self.names) ^ set(state["names"]))
            raise StateError(f"state covers other parameters than this solver; differing: {missing[:5]}")
        for key, target in self._tensor_state().items():
            saved = state["tensors"][key]
            for n, t in zip(self.names, target, strict=True):
                if saved[n].shape != t.shape:
                    raise StateError(f"{key}[{n!r}] has shape {tuple(saved[n].shape)}, expected {tuple(t.shape)}")
                t.copy_(saved[n])
        expected = self._scalar_state()
        scalars = dict(state["scalars"])
        if set(scalars) != set(expected):
            raise StateError(f"{type(self).__name__} state has scalars {sorted(scalars)}, expected {sorted(expected)}")
        for k, v in scalars.items():
            self._check_scalar(k, v, expected[k])
        for k, v in scalars.items():
            setattr(self, k, v)
        self.history = [dict(h) for h in state["history"]]

    def _check_scalar(self, name: str, value: Any, current: Any) -> None:
        """A saved scalar must have the current one's type and be finite and ≥ 0 (subclasses add bounds)."""
        kind = int if isinstance(current, int) and not isinstance(current, bool) else float
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        ok = numeric and (kind is float or isinstance(value, int))
        if not ok or not math.isfinite(value) or value < 0:
            raise StateError(f"{type(self).__name__} state: {name} = {value!r} is not a finite {kind.__name__} ≥ 0")


class PenaltySolver(Solver):
    """Solver with the augmented-Lagrangian state Z, Λ and ρ (shared by SLR and ADMM).

    `ramp` > 0 raises the Z-step's sparsity along the cubic schedule over that many Z-steps
    (progressive ADMM); the hard prune and the evaluator always use the full target.
    """

    option_help = {
        "rho": "quadratic penalty ρ",
        "rho_growth": "ρ ← ρ·growth after every update",
        "rho_max": "cap on ρ under --rho-growth",
        "rho_end": "grow ρ geometrically from --rho to this value over the run",
        "rho_balance": "residual balancing of ρ with this ratio μ > 1 (0: off, use --rho-growth)",
        "ramp": "raise the Z-step's sparsity on a cubic ramp over this many Z-steps (0: full target)",
    }

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet], *, rho: float = 0.1,
                 rho_growth: float = 1.0, rho_max: float | None = None, rho_end: float | None = None,
                 rho_balance: float = 0.0, ramp: int = 0, strategy: str = "auto", update_every: int = 0,
                 updates_per_epoch: int = 1):
        super().__init__(model, spec, strategy=strategy, update_every=update_every,
                         updates_per_epoch=updates_per_epoch)
        if not (isinstance(rho, int | float) and math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho must be a positive number, got {rho!r}")
        if rho_end is not None and not (math.isfinite(rho_end) and rho_end >= rho):
            raise ValueError(f"rho_end must be a number ≥ rho ({rho}), got {rho_end!r}")
        if rho_end is not None and (rho_growth != 1.0 or rho_max is not None):
            raise ValueError("give either rho_end (a geometric schedule over the run) or rho_growth/rho_max")
        if not (isinstance(ramp, int) and ramp >= 0):
            raise ValueError(f"ramp must be an integer ≥ 0 (0: the full target from the start), got {ramp!r}")
        if not rho_growth >= 1.0:
            raise ValueError(f"rho_growth must be ≥ 1 (1 keeps rho fixed), got {rho_growth!r}")
        if rho_max is not None and not rho_max >= rho:
            raise ValueError(f"rho_max must be ≥ rho ({rho}), got {rho_max!r}")
        if not (rho_balance == 0 or rho_balance > 1):
            raise ValueError(f"rho_balance must be 0 (off) or a ratio > 1 (e.g. 10), got {rho_balance!r}")
        self.rho = self.rho0 = float(rho)
        self.rho_end = rho_end
        self.rho_growth = float(rho_growth)
        self.rho_max = rho_max
        self.rho_balance = float(rho_balance)
        self.ramp = ramp
        self.z_steps = 0
        w = self.weights()
        with torch.no_grad():
            self.Z: list[Tensor] = list(self._ramped().project(w).values())
        self.Lam: list[Tensor] = [torch.zeros_like(t) for t in self.Z]
        self._refresh()

    run_rho_end: float = 30.0
    """Where ρ's shipped run schedule ends (see `run_defaults`); SLR and ADMM set theirs from
    benchmarks/solver_study.py."""

    @classmethod
    def run_defaults(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """`given` options plus the shipped schedule for a new run: ρ grows from `rho` to
        `run_rho_end` over the run unless the user chose a schedule (the command line and the demo
        use this; the constructor's own default keeps ρ fixed, the authors' setting)."""
        out = dict(given)
        if not {"rho_end", "rho_growth", "rho_max"} & set(out):
            out["rho_end"] = cls.run_rho_end
        return out

    def _check_scalar(self, name: str, value: Any, current: Any) -> None:
        super()._check_scalar(name, value, current)
        if name == "rho" and not value > 0:
            raise StateError(f"{type(self).__name__} state: rho = {value!r} must be positive")

    def _refresh(self) -> None:
        """Cache Λ − ρZ so the per-step penalty gradient ρW + (Λ − ρZ) is two fused passes."""
        self._offset = torch._foreach_add(self.Lam, self.Z, alpha=-self.rho)

    def to(self, device: torch.device | str) -> PenaltySolver:
        super().to(device)
        self._refresh()
        return self

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._refresh()

    def _tensor_state(self) -> dict[str, list[Tensor]]:
        return {"Z": self.Z, "Lam": self.Lam}

    def _scalar_state(self) -> dict[str, Any]:
        return {"rho": self.rho, "z_steps": self.z_steps}

    def begin(self, epochs: int, batches_per_epoch: int) -> int:
        """As Solver.begin; with `rho_end`, ρ grows geometrically from ρ0 to rho_end over the run."""
        calls = super().begin(epochs, batches_per_epoch)
        if self.rho_end is not None:
            updates = self.updates_in(calls)
            self.rho_growth = (self.rho_end / self.rho0) ** (1.0 / max(1, updates - 1))
            self.rho_max = self.rho_end
        return calls

    def updates_in(self, calls: int) -> int:
        """Multiplier updates (ρ growth steps) made by `calls` calls of `step()`."""
        return calls

    def _ramped(self) -> Projector:
        """The projector of the current Z-step: the target, or its share on the cubic ramp."""
        if not self.ramp or self.z_steps >= self.ramp:
            return self.projector
        return self.projector.scaled(cubic_fraction(self.z_steps, self.ramp))

    @torch.no_grad()
    def add_penalty_grad_(self) -> None:
        """grad += ρ(W − Z) + Λ = ρW + (Λ − ρZ) for every pruned weight (fused; no autograd graph).

        With AMP's GradScaler call it after `scaler.unscale_(optimizer)`.
        """
        pairs = [(p, p.grad, c) for p, c in zip(self.params, self._offset, strict=True) if p.grad is not None]
        if not pairs:
            return
        ws, grads, offsets = (list(x) for x in zip(*pairs, strict=True))
        torch._foreach_add_(grads, ws, alpha=self.rho)
        torch._foreach_add_(grads, offsets)

    @torch.no_grad()
    def penalty(self, w: list[Tensor] | None = None, z: list[Tensor] | None = None) -> float:
        """Σ tr Λᵀ(W − Z) + ρ/2‖W − Z‖², the relaxed-Lagrangian terms beyond the loss."""
        w = [p.detach() for p in self.params] if w is None else w
        z = self.Z if z is None else z
        diff = torch._foreach_sub(w, z)
        sq = torch.stack(torch._foreach_norm(diff)).pow(2).sum()
        dot = torch.stack([(lam * d).sum() for lam, d in zip(self.Lam, diff, strict=True)]).sum()
        return float(dot + 0.5 * self.rho * sq)

    def residual(self, w: list[Tensor] | None = None, z: list[Tensor] | None = None) -> float:
        """Σ_i ‖W_i − Z_i‖_F, the sum of per-layer norms the SLR step size uses."""
        w = [p.detach() for p in self.params] if w is None else w
        z = self.Z if z is None else z
        return float(torch.stack(torch._foreach_norm(torch._foreach_sub(w, z))).sum())

    def project(self, w: list[Tensor], shift: list[Tensor] | None = None) -> list[Tensor]:
        """Z-step: Π_S(W + shift) for lists in solver order; with `ramp`, onto the ramped set."""
        self.z_steps += 1
        x = w if shift is None else torch._foreach_add(w, shift)
        return list(self._ramped().project(dict(zip(self.names, x, strict=True))).values())

    def _grow_rho(self, primal: float | None = None, dual: float | None = None) -> None:
        """Apply the ρ schedule after an update (and refresh the cached gradient offset).

        With `rho_balance` μ > 1 and the update's residuals given, ρ follows residual balancing
        (Boyd et al. 2011, §3.4.1) instead of the fixed growth: the primal residual Σ‖W − Z‖ more
        than μ times the dual residual ρΣ‖Z − Z_prev‖ multiplies ρ by `rho_growth` (or 2 when
        that is 1), the reverse divides it; otherwise ρ stays.
        """
        if self.rho_balance and primal is not None and dual is not None:
            tau = self.rho_growth if self.rho_growth > 1 else 2.0
            if primal > self.rho_balance * dual:
                self.rho *= tau
            elif dual > self.rho_balance * primal:
                self.rho /= tau
        else:
            self.rho *= self.rho_growth
        if self.rho_max is not None:
            self.rho = min(self.rho, self.rho_max)
        self._refresh()

    def dual_residual(self, z_old: list[Tensor], z_new: list[Tensor]) -> float | None:
        """ρ Σ_i ‖Z_i − Z_i,prev‖_F, how far the last Z-step moved (the ADMM dual residual);
        None when `rho_balance` is off, the only reader."""
        if not self.rho_balance:
            return None
        return self.rho * float(torch.stack(torch._foreach_norm(torch._foreach_sub(z_new, z_old))).sum())

    def _weights_set_to(self, values: list[Tensor]):
        return weights_set_to(self.params, values)


def _checked_sets(model: nn.Module, sets: Mapping[str, ConstraintSet]) -> dict[str, ConstraintSet]:
    """Resolved sets given directly (e.g. by the allocator or a structured criterion), checked."""
    params = dict(model.named_parameters())
    for name, s in sets.items():
        if name not in params:
            raise ValueError(f"sets: {name!r} is not a parameter of the model")
        if not isinstance(s, ConstraintSet):
            raise TypeError(f"sets[{name!r}] must be a ConstraintSet, got {type(s).__name__}")
        s.validate(name, params[name].shape)
    if not sets:
        raise ValueError("sets: give at least one parameter to prune")
    return dict(sets)


def cubic_fraction(t: int, steps: int) -> float:
    """Share of the target ratio after t of `steps` steps on the cubic ramp of Zhu & Gupta (2017)."""
    return 1.0 - (1.0 - min(t, steps) / steps) ** 3


def eval_closure(closure: Closure, where: str) -> float:
    """Call a probe closure and insist on a finite loss."""
    value = closure()
    value = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(value):
        raise FloatingPointError(
            f"the probe loss is {value} at {where}; training diverged: lower the learning rate or "
            "rho, or check the data"
        )
    return value
