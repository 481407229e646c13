"""Magnitude pruning baseline: one-shot, or gradual with the cubic schedule of Zhu & Gupta (2017).

One-shot: `hard_prune()` at the end is all there is.  Gradual: each `step()` prunes to
ratio · (1 − (1 − t/steps)³) of the target; until the next step the gradients of pruned weights
are zeroed and the weights themselves re-zeroed after every optimizer step (momentum would
otherwise regrow them), so pruned weights stay pruned as the ratio rises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from ..config import is_int, option
from ..errors import StateError
from ..sets import ConstraintSet
from ..spec import PruneSpec
from .base import Closure, Solver, cubic_fraction, register_solver
from .config import CadenceConfig

__all__ = ["Magnitude", "MagnitudeConfig"]

Schedule = Literal["oneshot", "cubic"]


@dataclass(frozen=True)
class MagnitudeConfig(CadenceConfig):
    """Magnitude pruning's options: one-shot, or gradual (cubic) over `steps` calls of `step()`.

    `steps=None` (cubic) ramps over the whole run, as planned by `begin()` (the Trainer calls it).
    """

    schedule: Schedule = option("oneshot", "one-shot from the checkpoint (no training), or gradual (cubic) "
                                "over --epochs", flag="schedule-magnitude")
    steps: int | None = option(None)

    def __post_init__(self) -> None:
        if self.schedule not in get_args(Schedule):
            raise ValueError(f"schedule must be 'oneshot' or 'cubic', got {self.schedule!r}")
        if not (self.steps is None or (is_int(self.steps) and self.steps >= 1)):
            raise ValueError(f"steps must be a positive integer or None (the whole run), got {self.steps!r}")
        super().__post_init__()

    @property
    def trains(self) -> bool:
        """Only the gradual schedule trains; one-shot prunes the checkpoint as it is."""
        return self.schedule != "oneshot"


@register_solver("magnitude", help="magnitude pruning, one-shot or gradual")
class Magnitude(Solver):
    """Magnitude pruning with `schedule` "oneshot" or "cubic" (see `MagnitudeConfig`)."""

    Config = MagnitudeConfig
    config: MagnitudeConfig

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: MagnitudeConfig | None = None, **options: Any):
        super().__init__(model, spec, config, **options)
        self.schedule = self.config.schedule
        self.steps = self.config.steps
        self.t = 0
        self.current = [torch.ones_like(p, dtype=torch.bool) for p in self.params]

    def begin(self, epochs: int, batches_per_epoch: int) -> int:
        """As Solver.begin; a cubic schedule without `steps` ramps over all the run's calls."""
        calls = super().begin(epochs, batches_per_epoch)
        if self.steps is None:
            self.steps = calls
        return calls

    def fraction(self, t: int) -> float:
        """Share of the target ratio reached after t steps (cubic ramp from 0 to 1)."""
        return cubic_fraction(t, self.steps)

    def _tensor_state(self) -> dict[str, list[torch.Tensor]]:
        return {"current": self.current}

    def _scalar_state(self) -> dict[str, Any]:
        return {"t": self.t}

    @torch.no_grad()
    def add_penalty_grad_(self) -> None:
        """Zero the gradients of weights pruned so far (gradual schedule only)."""
        if self.schedule == "cubic" and self.t > 0:
            pairs = [(p.grad, m) for p, m in zip(self.params, self.current, strict=True) if p.grad is not None]
            if pairs:
                grads, masks = (list(x) for x in zip(*pairs, strict=True))
                torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def after_optimizer_step_(self) -> None:
        """Re-zero the pruned weights: momentum and weight decay would otherwise regrow them."""
        if self.schedule == "cubic" and self.t > 0:
            torch._foreach_mul_([p.data for p in self.params], self.current)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> dict[str, Any]:
        """Gradual: prune to the next point of the cubic schedule. One-shot: nothing to do."""
        if self.schedule == "oneshot":
            return {"fraction": 0.0}
        if self.steps is None:
            raise StateError("Magnitude(schedule='cubic', steps=None) needs begin(epochs, batches_per_epoch) "
                             "before step(), or give steps")
        self.t += 1
        fraction = self.fraction(self.t)
        masks = self.projector.scaled(fraction).masks(self.weights())
        for cur, p, n in zip(self.current, self.params, self.names, strict=True):
            cur.copy_(masks[n])
            p.mul_(masks[n])
        record = {"t": self.t, "fraction": fraction}
        self.history.append(record)
        return record
