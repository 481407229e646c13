"""What every pruning solver shares: the resolved sets, hard pruning, and state.

`PenaltySolver` adds the relaxed-Lagrangian state of SLR and ADMM: the sparse copies Z, the
multipliers Λ and the penalty ρ.  The W-step gradient of ρ/2‖W − Z + Λ/ρ‖² is ρ(W − Z) + Λ; it is
added to `.grad` after `backward()` by two fused multi-tensor ops, outside autograd.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..errors import SpecError, StateError
from ..masks import Masks
from ..registry import Registry
from ..sets import ConstraintSet, Projector
from ..spec import PruneSpec
from ..utils import weights_set_to
from .config import PenaltyConfig, SolverConfig

__all__ = ["Solver", "PenaltySolver", "Closure", "cubic_fraction", "SOLVERS", "register_solver", "solver_config",
           "check_materialised"]

Closure = Callable[[], float | Tensor]

SOLVERS: Registry[Solver] = Registry("solver")
"""Pruning solvers by name (`slr`, `admm`, `magnitude`, ...); an entry's options are the solver's
`Config`, and its traits are read from that config: `trains` (needs training epochs with its
default options), `penalty` (a `PenaltyConfig`: the ρ options apply), `needs_task` (the workflow
passes task, seed, checkpoint and resume: `layerwise` calibrates on the task)."""

SolverT = TypeVar("SolverT", bound="type[Solver]")


def register_solver(name: str, *, help: str | None = None) -> Callable[[SolverT], SolverT]:
    """Class decorator: register a `Solver` subclass as `name`, its options being its `Config`."""

    def add(cls: SolverT) -> SolverT:
        config = cls.Config
        SOLVERS.register(name, cls, help=help, config=config, trains=config().trains,
                         penalty=issubclass(config, PenaltyConfig), needs_task=config.needs_task)
        return cls

    return add


def solver_config(method: str, options: Mapping[str, Any] | SolverConfig | None = None) -> SolverConfig:
    """The config a run of the registered solver `method` uses (`prune()` and the command line both
    ask here): a config instance as given; a mapping of options by `SolverConfig.for_run` (the
    recommended schedule unless the options choose one).  Unknown option names raise TypeError."""
    entry = SOLVERS.get(method)
    if isinstance(options, SolverConfig):
        if not isinstance(options, entry.options):
            raise TypeError(f"{method}: solver_options is a {type(options).__name__}, not a {entry.options.__name__}")
        return options
    return entry.options.for_run(entry.check_options(options or {}))


class Solver:
    """Base of SLR, ADMM and Magnitude: holds the model's prunable tensors and their sets.

    Options are the class's `Config` (a frozen `SolverConfig`, validated without a model): give
    one as `config`, or its fields as keyword arguments.  When the training loop calls `step()` is
    the config's `Cadence`; `due(i)` tells the loop once `begin` has planned the run.
    """

    Config: ClassVar[type[SolverConfig]] = SolverConfig

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: SolverConfig | None = None, **options: Any):
        self.config = self.Config.given(config, options, type(self).__name__)
        if isinstance(spec, Mapping):
            spec = _checked_sets(model, spec)
        elif not isinstance(spec, PruneSpec):
            raise TypeError(f"spec must be a PruneSpec or a mapping of parameter name to ConstraintSet, "
                            f"got {type(spec).__name__}")
        check_materialised(model)
        self.cadence = self.config.cadence
        self.batches_per_epoch = 0
        self.model = model
        self.spec = spec
        self.projector = Projector(_unshared(model, spec if isinstance(spec, dict) else spec.resolve(model)),
                                   strategy=self.config.strategy)
        self.names = self.projector.names()
        params = dict(model.named_parameters())
        self.params: list[nn.Parameter] = [params[n] for n in self.names]
        self.history: list[dict[str, Any]] = []

    @property
    def trains(self) -> bool:
        """Whether the solver needs training epochs (the config's `trains`)."""
        return self.config.trains

    def weights(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}

    def begin(self, epochs: int, batches_per_epoch: int) -> int:
        """Plan a run of `epochs` × `batches_per_epoch` steps (the Trainer calls this before its
        first epoch, also on resume); returns the number of `step()` calls the run will make."""
        self.cadence.check(batches_per_epoch)
        self.batches_per_epoch = batches_per_epoch
        return epochs * self.cadence.calls_per_epoch(batches_per_epoch)

    @property
    def steps_within_epoch(self) -> bool:
        """True when `step()` runs between optimizer steps (see `due`), False: once per epoch."""
        return self.cadence.within_epoch(self.batches_per_epoch)

    def due(self, i: int) -> bool:
        """Whether `step()` is due after the i-th optimizer step of an epoch (i from 1)."""
        return self.cadence.due(i, self.batches_per_epoch)

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
            "sets": self._sets_record(),
            "tensors": {k: {n: t.detach().clone() for n, t in zip(self.names, ts, strict=True)}
                        for k, ts in self._tensor_state().items()},
            "scalars": self._scalar_state(),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` saved; a state of another solver, other parameters or other
        sets (a ratio, a form) is refused with StateError before anything is changed."""
        missing = [k for k in ("solver", "names", "tensors", "scalars", "history")
                   if not isinstance(state, Mapping) or k not in state]
        if missing:
            raise StateError(f"not a solver state: {type(state).__name__} without {', '.join(missing)} (give what "
                             f"{type(self).__name__}.state_dict() returned)")
        if state.get("solver") != type(self).__name__:
            raise StateError(f"state was saved by {state.get('solver')!r}, not {type(self).__name__}")
        if list(state["names"]) != self.names:
            missing = sorted(set(self.names) ^ set(state["names"]))
            raise StateError(f"state covers other parameters than this solver; differing: {missing[:5]}")
        self._check_sets(state.get("sets"))
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

    def _sets_record(self) -> dict[str, str]:
        """Each pruned tensor's set (form, ratio, ...) as text: what a loaded state must match."""
        return {n: repr(self.projector.sets[n]) for n in self.names}

    def _check_sets(self, saved: Mapping[str, str] | None) -> None:
        """Refuse a state whose sets (a ratio, a form) differ from this solver's; a state saved before
        sets were recorded (no "sets") cannot be checked and loads as before."""
        if saved is None:
            return
        mine = self._sets_record()
        for n in self.names:
            if saved.get(n) != mine[n]:
                raise StateError(f"state was saved for {n!r} as {saved.get(n)}, but this {type(self).__name__} "
                                 f"prunes it as {mine[n]}; load it into a solver with the same spec")

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

    Config: ClassVar[type[SolverConfig]] = PenaltyConfig
    config: PenaltyConfig

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: PenaltyConfig | None = None, **options: Any):
        super().__init__(model, spec, config, **options)
        c = self.config
        self.rho = self.rho0 = float(c.rho)
        self.rho_schedule = c.rho_schedule
        self.ramp = c.ramp
        self.z_steps = 0
        w = self.weights()
        with torch.no_grad():
            self.Z: list[Tensor] = list(self._ramped().project(w).values())
        self.Lam: list[Tensor] = [torch.zeros_like(t) for t in self.Z]
        self._refresh()

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
        self.rho_schedule = self.rho_schedule.planned(self.rho0, self.updates_in(calls))
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
        """Apply the ρ schedule after an update (see `RhoSchedule.next`) and refresh the cached
        gradient offset."""
        self.rho = self.rho_schedule.next(self.rho, primal, dual)
        self._refresh()

    def dual_residual(self, z_old: list[Tensor], z_new: list[Tensor]) -> float | None:
        """ρ Σ_i ‖Z_i − Z_i,prev‖_F, how far the last Z-step moved (the ADMM dual residual);
        None when residual balancing is off, the only reader."""
        if not self.rho_schedule.balance:
            return None
        return self.rho * float(torch.stack(torch._foreach_norm(torch._foreach_sub(z_new, z_old))).sum())

    def _weights_set_to(self, values: list[Tensor]):
        return weights_set_to(self.params, values)


def check_materialised(model: nn.Module) -> None:
    """A model built on the meta device has shapes but no values: nothing to prune yet."""
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(f"the model's parameters are on the meta device ({meta[0]!r} and {len(meta) - 1} more); "
                         "materialise them (to_empty + load weights) first")


def _unshared(model: nn.Module, sets: Mapping[str, ConstraintSet]) -> dict[str, ConstraintSet]:
    """`sets` with each tensor once: a tied weight (one parameter under two names) is pruned once,
    under the name `named_parameters()` gives it; its names must not ask for different sets."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    every = dict(model.named_parameters(remove_duplicate=False))
    out: dict[str, ConstraintSet] = {}
    asked_by: dict[str, str] = {}  # the name whose set `out[first]` is
    for name, s in sets.items():
        first = canonical[id(every[name])]
        if first in out and out[first] != s:
            raise SpecError(f"{name!r} and {asked_by[first]!r} are one tied tensor, but the spec gives them different "
                            f"sets ({s} and {out[first]}); give both names the same rule")
        if first != name:
            print(f"note: {name!r} is the same tensor as {first!r} (tied weights); it is pruned once, as {first!r}",
                  file=sys.stderr)
        out.setdefault(first, s)
        asked_by.setdefault(first, name)
    return out


def _checked_sets(model: nn.Module, sets: Mapping[str, ConstraintSet]) -> dict[str, ConstraintSet]:
    """Resolved sets given directly (e.g. by the allocator or a structured criterion), checked."""
    params = dict(model.named_parameters(remove_duplicate=False))
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
