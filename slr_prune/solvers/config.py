"""The configs every solver builds on: the base, the update cadence and the penalty (ρ) options.

A solver's `Config` extends one of these; validation is the config's, so option values are
checked before any model exists (the command line checks them before a search or training).
`for_run` is the one rule by which a new run -- `prune()` from Python or `slr-prune prune` --
turns the options a user gave into a config: the options over `recommended()`, where a given
schedule replaces the recommended one as a whole.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..config import Config, is_int, option
from .schedules import Cadence, RhoSchedule

__all__ = ["SolverConfig", "CadenceConfig", "PenaltyConfig", "with_default"]

S = TypeVar("S", bound="SolverConfig")


def with_default(base: type, name: str, default: Any) -> Any:
    """Field `name` of `base` with another default (its help and flag kept): a subclass's own default
    without restating the option."""
    inherited = {f.name: f for f in dataclasses.fields(base)}[name]
    return dataclasses.field(default=default, metadata=inherited.metadata)


@dataclass(frozen=True)
class SolverConfig(Config):
    """Options every solver has: the projector's strategy (API-only)."""

    strategy: str = option("auto")

    needs_task: ClassVar[bool] = False
    """The workflow passes task, seed, checkpoint and resume to the solver (it calibrates on the task)."""
    SCHEDULE: ClassVar[frozenset[str]] = frozenset()
    """Fields that together choose a schedule; a run given any of them gets none of the recommended one."""

    @property
    def trains(self) -> bool:
        """Whether the solver needs training epochs (False: it only projects at the end)."""
        return True

    @property
    def cadence(self) -> Cadence:
        """When `step()` runs (once per epoch unless the config says otherwise)."""
        return Cadence()

    @classmethod
    def for_run(cls: type[S], given: Mapping[str, Any]) -> S:
        """The config of a new run from the options the user gave: `recommended()` with `given` on
        top; when `given` names a schedule field, the recommended schedule is dropped as a whole."""
        base = cls.recommended()
        if cls.SCHEDULE & set(given):
            plain = cls()
            base = dataclasses.replace(base, **{k: getattr(plain, k) for k in cls.SCHEDULE})
        return dataclasses.replace(base, **given)


@dataclass(frozen=True)
class CadenceConfig(SolverConfig):
    """A solver that steps during training: how often (see `Cadence`)."""

    update_every: int = option(0, "a multiplier update every N mini-batches (0: see --updates-per-epoch)")
    updates_per_epoch: int = option(1, "multiplier updates spread evenly over each epoch")

    def __post_init__(self) -> None:
        if not (is_int(self.update_every) and self.update_every >= 0):
            raise ValueError(f"update_every must be an integer ≥ 0 (0: once per epoch), got {self.update_every!r}")
        if not (is_int(self.updates_per_epoch) and self.updates_per_epoch >= 1):
            raise ValueError(f"updates_per_epoch must be a positive integer, got {self.updates_per_epoch!r}")

    @property
    def cadence(self) -> Cadence:
        return Cadence(self.update_every, self.updates_per_epoch)


@dataclass(frozen=True)
class PenaltyConfig(CadenceConfig):
    """The augmented-Lagrangian options SLR and ADMM share: ρ, its schedule and the Z-step ramp.

    The defaults keep ρ fixed (the authors' setting); `recommended()` grows it geometrically from
    `rho` to `RECOMMENDED_RHO_END` over the run.
    """

    rho: float = option(0.1, "quadratic penalty ρ")
    rho_growth: float = option(1.0, "ρ ← ρ·growth after every update")
    rho_max: float | None = option(None, "cap on ρ under --rho-growth")
    rho_end: float | None = option(None, "grow ρ geometrically from --rho to this value over the run")
    rho_balance: float = option(0.0, "residual balancing of ρ with this ratio μ > 1 (0: off, use --rho-growth)")
    ramp: int = option(0, "raise the Z-step's sparsity on a cubic ramp over this many Z-steps (0: full target)")

    SCHEDULE: ClassVar[frozenset[str]] = frozenset({"rho_end", "rho_growth", "rho_max"})
    RECOMMENDED_RHO_END: ClassVar[float] = 30.0
    """Where ρ's recommended schedule ends; SLR and ADMM set theirs from benchmarks/solver_study.py."""

    @classmethod
    def recommended(cls: type[S]) -> S:
        """ρ grows geometrically from `rho` to `RECOMMENDED_RHO_END` over the run."""
        return cls(rho_end=cls.RECOMMENDED_RHO_END)

    @property
    def rho_schedule(self) -> RhoSchedule:
        """How ρ moves after each update (the four ρ options as one schedule object)."""
        return RhoSchedule(float(self.rho_growth), self.rho_max, self.rho_end, float(self.rho_balance))

    def __post_init__(self) -> None:
        super().__post_init__()
        rho, rho_end, rho_growth, rho_max = self.rho, self.rho_end, self.rho_growth, self.rho_max
        if not (isinstance(rho, int | float) and math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho must be a positive number, got {rho!r}")
        if rho_end is not None and not (math.isfinite(rho_end) and rho_end >= rho):
            raise ValueError(f"rho_end must be a number ≥ rho ({rho}), got {rho_end!r}")
        if rho_end is not None and (rho_growth != 1.0 or rho_max is not None):
            raise ValueError("give either rho_end (a geometric schedule over the run) or rho_growth/rho_max")
        if not (is_int(self.ramp) and self.ramp >= 0):
            raise ValueError(f"ramp must be an integer ≥ 0 (0: the full target from the start), got {self.ramp!r}")
        if not rho_growth >= 1.0:
            raise ValueError(f"rho_growth must be ≥ 1 (1 keeps rho fixed), got {rho_growth!r}")
        if rho_max is not None and not rho_max >= rho:
            raise ValueError(f"rho_max must be ≥ rho ({rho}), got {rho_max!r}")
        if not (self.rho_balance == 0 or self.rho_balance > 1):
            raise ValueError(f"rho_balance must be 0 (off) or a ratio > 1 (e.g. 10), got {self.rho_balance!r}")
