"""`Reconstruction`: the settings of a layer-wise reconstruction, checked without a model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .solvers import LAYER_SOLVERS

__all__ = ["Reconstruction", "CALIBRATION_BATCHES", "DAMPING", "PRECISIONS", "TARGETS"]

CALIBRATION_BATCHES = 4
"""Default calibration batches (of the task's training batch size: 256 images at batch 64)."""
DAMPING = 0.01
"""Default relative damping: H + damping · mean(diag H) · I."""
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
"""The dtypes a layer problem can be solved in, by name."""
TARGETS = ("current", "dense")
"""What a re-solved layer reproduces: its own weights' output on the inputs of the network as pruned
so far (current), or the dense network's output on the same batch (dense, `dense_reference`)."""


@dataclass(frozen=True)
class Reconstruction:
    """Which layer solver, on how much calibration data, with which damping, re-fit or not.

    `options` go to the layer solver (its config, LAYER_SOLVERS[solver].options, e.g. SLRLayerConfig);
    `refit` re-solves the weights by least squares on the solver's final support.  `batch_stats` calibrates with every
    BatchNorm normalising by its batch's statistics (as after recalibration) instead of the dense
    network's running ones (the default: chosen on validation in benchmarks/oneshot.py).
    `precision` is the dtype the layer solvers work in (H is always accumulated in float64):
    float32 halves the solve time on a CPU and suits GPUs, whose float64 is slow.  `target` is what
    a re-solved layer reproduces (`TARGETS`).  Every value is
    checked here, so a bad one is refused before any compute.
    """

    solver: str = "slr"
    calibration_batches: int = CALIBRATION_BATCHES
    damping: float = DAMPING
    refit: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    batch_stats: bool = True
    precision: str = "float64"
    target: str = "dense"

    def __post_init__(self) -> None:
        LAYER_SOLVERS.get(self.solver)  # UnknownNameError lists the valid names
        if not (isinstance(self.calibration_batches, int) and not isinstance(self.calibration_batches, bool)
                and self.calibration_batches >= 1):
            raise ValueError(f"calibration_batches must be an integer ≥ 1 (training batches whose activations "
                             f"define each layer's problem), got {self.calibration_batches!r}")
        if not (isinstance(self.damping, int | float) and not isinstance(self.damping, bool)
                and math.isfinite(self.damping) and self.damping > 0):
            raise ValueError(f"damping must be a finite number > 0 (relative to mean(diag H); 0.01 is usual), "
                             f"got {self.damping!r}")
        for name in ("refit", "batch_stats"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)} (what a re-solved layer reproduces), got "
                             f"{self.target!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.options, Mapping):
            raise ValueError(f"options must be a mapping of layer-solver options, got {type(self.options).__name__}")
        object.__setattr__(self, "options", dict(self.options))
        self.build_solver()  # option names and values

    def build_solver(self) -> Any:
        entry = LAYER_SOLVERS.get(self.solver)
        try:
            return entry.build(**entry.check_options(self.options))
        except TypeError as e:
            raise ValueError(f"layer solver {self.solver!r}: {e}") from e

    def fingerprint(self) -> dict[str, Any]:
        """Plain data for records and resume checks (the target only when it is not "current", what
        every earlier version did, so their records still match)."""
        out = {"solver": self.solver, "calibration_batches": self.calibration_batches, "damping": self.damping,
               "refit": self.refit, "options": dict(self.options), "batch_stats": self.batch_stats,
               "precision": self.precision}
        return out if self.target == "current" else {**out, "target": self.target}
