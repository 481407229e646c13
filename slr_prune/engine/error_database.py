"""The error database of the `curves` allocation: each layer's relative output error at a grid of ratios.

For every pruned layer, its Gram matrix H is taken from the *dense* network (several layers from
one set of calibration passes, `layer_grams`, chunked so the Grams held at once stay under
`GRAM_BYTES`), and the layer problem is solved at every ratio of the grid with the layer solver
(`solve_on_gram`, as the layer-wise reconstruction solves it); the relative output error
f(W′)/f(0) and the solved weights are kept per (layer, ratio).  With a path, the database is one
artifact rewritten atomically after each layer, carrying a fingerprint of its settings (layers,
shapes, grid, reconstruction, seed, source weights); a rerun continues after the last layer saved,
and a database written with other settings is refused in one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..artifact import Artifact, load_artifact, save_artifact
from ..layerwise import LayerSolver, Reconstruction, full_passes, layer_grams
from ..layerwise.calibration import groups_of
from ..sets import Unstructured
from ..task import Task
from ..utils import state_digest
from .distributed import is_main
from .reconstruct import _module_of, solve_on_gram
from .trainer import check_same_settings

__all__ = ["ErrorDatabase", "LayerCurve", "build_database", "GRAM_BYTES"]

GRAM_BYTES = 1 << 30
"""The most bytes of Gram matrices computed from one set of calibration passes (a larger layer goes alone)."""


@dataclass
class LayerCurve:
    """One layer's measured points: kept weights, relative output error and solved weight per grid ratio."""

    size: int
    ratios: list[float]
    kept: list[int]
    errors: list[float]
    weights: dict[float, Tensor] = field(repr=False)
    seconds: float = 0.0

    def points(self) -> list[tuple[int, float]]:
        """(kept, error) with the dense point (size, 0) first."""
        return [(self.size, 0.0), *zip(self.kept, self.errors, strict=True)]


@dataclass
class ErrorDatabase:
    """The curves by parameter name, how many layers this call solved, and the seconds it took."""

    curves: dict[str, LayerCurve]
    solved: int
    seconds: float


def _chunks(model: nn.Module, names: Sequence[str], limit: int) -> list[list[str]]:
    """Consecutive layers whose Grams (groups × d × d float64 each) fit in `limit` bytes together."""
    out: list[list[str]] = []
    used = 0
    for name in names:
        module = _module_of(model, name)
        size = groups_of(module) * module.weight[0].numel() ** 2 * 8
        if out and used + size <= limit:
            out[-1].append(name)
            used += size
        else:
            out.append([name])
            used = size
    return out


def _to_state(curves: Mapping[str, LayerCurve]) -> dict[str, Any]:
    return {name: {"size": c.size, "ratios": c.ratios, "kept": c.kept, "errors": c.errors, "seconds": c.seconds,
                   "weights": {str(r): w for r, w in c.weights.items()}} for name, c in curves.items()}


def _from_state(state: Mapping[str, Any]) -> dict[str, LayerCurve]:
    return {name: LayerCurve(c["size"], list(c["ratios"]), list(c["kept"]), list(c["errors"]),
                             {float(r): w for r, w in c["weights"].items()}, c["seconds"])
            for name, c in state.items()}


@torch.no_grad()
def build_database(model: nn.Module, task: Task, names: Sequence[str], grid: Sequence[float],
                   config: Reconstruction, *, device: torch.device, seed: int = 0,
                   path: str | Path | None = None, resume: bool = False,
                   log: Callable[[str], None] | None = print, gram_bytes: int = GRAM_BYTES) -> ErrorDatabase:
    """The error curves of the layers `names` of the dense `model` (left unchanged); see the module doc.

    `config` is the layer-wise reconstruction whose calibration (batches, damping, BatchNorm mode),
    layer solver, precision and re-fit the database uses."""
    start = time.perf_counter()
    path = Path(path) if path is not None else None
    params = dict(model.named_parameters())
    settings = {"layers": list(names), "shapes": [list(params[n].shape) for n in names], "grid": list(grid),
                "reconstruction": config.fingerprint(), "seed": seed, "source_weights": state_digest(model)}
    solver = config.build_solver()
    curves: dict[str, LayerCurve] = {}
    if resume and path is not None and path.is_file():
        saved = load_artifact(path)
        check_same_settings(saved.settings, settings, path)
        curves = _from_state((saved.phase or {}).get("curves", {}))
        if log:
            log(f"allocation: error database {str(path)!r} has {len(curves)} of {len(names)} layers; continuing")
    todo = [n for n in names if n not in curves]
    solved = 0
    for chunk in _chunks(model, todo, gram_bytes):
        modules = [_module_of(model, n) for n in chunk]
        calibrated = time.perf_counter()
        batches = task.calibration_batches(config.calibration_batches, seed)
        grams = layer_grams(model, modules, full_passes(model, batches, lambda m, b: task.forward(m, b, device)),
                            batch_stats=config.batch_stats)
        share = (time.perf_counter() - calibrated) / len(chunk)
        for name, module, (H, _) in zip(chunk, modules, grams, strict=True):
            curves[name] = _curve(module, H, grid, config, solver, share)
            solved += 1
            if path is not None and is_main():
                save_artifact(Artifact(state_dict={}, phase={"curves": _to_state(curves)},
                                       provenance={"settings": settings}), path)
            if log:
                c = curves[name]
                errors = ", ".join(f"{100 * r:g}%: {e:.4f}" for r, e in zip(c.ratios, c.errors, strict=True))
                log(f"allocation: database {len(curves)}/{len(names)} {name}: relative output error {errors} "
                    f"({c.seconds:.1f} s)")
    return ErrorDatabase({n: curves[n] for n in names}, solved, time.perf_counter() - start)


def _curve(module: nn.Module, H: Tensor, grid: Sequence[float], config: Reconstruction, solver: LayerSolver,
           calibration_seconds: float) -> LayerCurve:
    """One layer solved at every grid ratio on its Gram matrix H."""
    start = time.perf_counter()
    size = module.weight.numel()
    kept, errors, weights = [], [], {}
    for ratio in grid:
        new, mask, record = solve_on_gram(module, H, Unstructured(ratio=ratio), solver, config)
        kept.append(int(mask.sum()))
        errors.append(float(record["error"]))
        weights[float(ratio)] = new.to(module.weight.dtype).cpu()
    return LayerCurve(size, [float(r) for r in grid], kept, errors, weights,
                      time.perf_counter() - start + calibration_seconds)
