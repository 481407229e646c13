"""Schedules a solver follows during training: when `step()` runs (`Cadence`) and how ρ moves
after each multiplier update (`RhoSchedule`).  Small frozen objects built from a solver's config;
`begin()` plans them once the run's length is known."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Cadence", "RhoSchedule"]


@dataclass(frozen=True)
class Cadence:
    """When the training loop calls `step()`: after every `update_every` = k > 0 optimizer steps;
    else exactly `updates_per_epoch` = n > 1 times per epoch, spread evenly once the epoch's length
    is known; else once at the end of each epoch."""

    update_every: int = 0
    updates_per_epoch: int = 1

    def check(self, batches_per_epoch: int) -> None:
        """Refuse an `update_every` longer than an epoch of `batches_per_epoch` optimizer steps: `due`
        would never fire and the solver would silently become plain training.  (More
        `updates_per_epoch` than batches is documented as one update per batch.)"""
        b = batches_per_epoch
        if b > 0 and self.update_every > b:
            raise ValueError(f"--update-every {self.update_every} is longer than an epoch of {b} batches, so no "
                             f"multiplier update would run; give 1..{b}, or 0 (--updates-per-epoch)")

    def calls_per_epoch(self, batches_per_epoch: int) -> int:
        """`step()` calls in an epoch of `batches_per_epoch` optimizer steps (at least 1)."""
        if self.update_every:
            return max(1, batches_per_epoch // self.update_every)
        return max(1, min(self.updates_per_epoch, batches_per_epoch))

    def within_epoch(self, batches_per_epoch: int) -> bool:
        """True when `step()` runs between optimizer steps (see `due`), False: once per epoch."""
        return bool(self.update_every) or (self.updates_per_epoch > 1 and batches_per_epoch > 0)

    def due(self, i: int, batches_per_epoch: int) -> bool:
        """Whether `step()` is due after the i-th optimizer step of an epoch (i from 1)."""
        if self.update_every:
            return i % self.update_every == 0
        if not self.within_epoch(batches_per_epoch):
            return False
        n, b = min(self.updates_per_epoch, batches_per_epoch), batches_per_epoch
        return (i * n) // b > ((i - 1) * n) // b


@dataclass(frozen=True)
class RhoSchedule:
    """ρ after each update: × `growth` (1: fixed), capped at `cap`; with `end`, geometric growth to
    `end` over the run (see `planned`); with `balance` μ > 1, residual balancing instead of the
    fixed growth (Boyd et al. 2011, §3.4.1)."""

    growth: float = 1.0
    cap: float | None = None
    end: float | None = None
    balance: float = 0.0

    def planned(self, rho0: float, updates: int) -> RhoSchedule:
        """With `end`: the growth that takes ρ from `rho0` to `end` over `updates` updates, capped there."""
        if self.end is None:
            return self
        return dataclasses.replace(self, growth=(self.end / rho0) ** (1.0 / max(1, updates - 1)), cap=self.end)

    def next(self, rho: float, primal: float | None = None, dual: float | None = None) -> float:
        """ρ after an update with these residuals.

        With `balance` μ > 1 and both residuals given: the primal residual Σ‖W − Z‖ more than μ
        times the dual residual ρΣ‖Z − Z_prev‖ multiplies ρ by `growth` (or 2 when that is 1), the
        reverse divides it; otherwise ρ stays.  Else ρ × `growth`.  Then the cap.
        """
        if self.balance and primal is not None and dual is not None:
            tau = self.growth if self.growth > 1 else 2.0
            if primal > self.balance * dual:
                rho *= tau
            elif dual > self.balance * primal:
                rho /= tau
        else:
            rho *= self.growth
        if self.cap is not None:
            rho = min(rho, self.cap)
        return rho
