"""Layer-wise reconstruction over a whole model, and the `layerwise` one-shot method.

Layers are solved in model order.  Each layer's H comes from calibration batches run through the
network *as already pruned* (earlier layers hold their new weights), so errors do not compound.
A global budget is first split into per-layer counts by its magnitude threshold, then every layer
is solved on its own count.  One line per layer says what it cost and what it bought (relative
output error of the plain projection → of the solver); with a checkpoint path, progress is saved
atomically after every layer and a resumed run continues at the next one, or refuses when the
settings differ.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..artifact import Artifact, load_artifact, save_artifact
from ..config import option
from ..errors import SpecError, StateError
from ..layerwise import (
    LAYER_SOLVERS,
    LAYER_TYPES,
    LayerProblem,
    LayerSolver,
    Reconstruction,
    StageInputs,
    check_form,
    damped,
    flat_weight,
    full_passes,
    layer_gram,
    refit,
)
from ..layerwise.calibration import cross_grams
from ..layerwise.config import CALIBRATION_BATCHES, DAMPING, PRECISIONS
from ..layerwise.problem import dense_reference
from ..masks import Masks
from ..sets import ConstraintSet, Projector, TopKSet
from ..solvers import Solver, SolverConfig, register_solver
from ..spec import PruneSpec
from ..task import Task
from ..utils import state_digest
from .distributed import is_main
from .trainer import check_same_settings

__all__ = ["reconstruct", "check_reconstruction", "per_layer_sets", "solve_on_gram", "Layerwise", "LayerwiseConfig"]


def _module_of(model: nn.Module, name: str) -> nn.Module:
    module_name, _, attr = name.rpartition(".")
    return model.get_submodule(module_name) if module_name else model


def check_reconstruction(model: nn.Module, sets: Mapping[str, ConstraintSet], config: Reconstruction) -> None:
    """SpecError, before any compute, when a pruned tensor is not a layer weight the layer-wise
    problem covers or its form is one the layer solver cannot do."""
    for name in sets:
        module = _module_of(model, name)
        if not name.endswith("weight") or not isinstance(module, LAYER_TYPES):
            raise SpecError(f"{name}: layer-wise reconstruction covers the weights of Linear, Conv1d and Conv2d "
                            f"layers, not a {type(module).__name__}; exclude it or use a training solver")
        check_form(config.solver, name, sets[name])


def per_layer_sets(sets: Mapping[str, ConstraintSet], weights: Mapping[str, torch.Tensor]) -> dict[str, ConstraintSet]:
    """The same sets with every global budget replaced by per-layer sets of the counts its
    magnitude threshold gives each layer (so each layer is solved on its own)."""
    shared = [n for n, s in sets.items() if isinstance(s, TopKSet) and s.scope == "global"]
    if not shared:
        return dict(sets)
    masks = Projector({n: sets[n] for n in shared}).masks({n: weights[n] for n in shared})
    out = dict(sets)
    for n in shared:
        s = sets[n]
        groups = s.n_groups(weights[n].shape)
        kept = int(masks[n].sum()) // s.group_size(weights[n].shape)
        out[n] = replace(s, scope="layer", ratio=(groups - kept) / groups)
    return out


@torch.no_grad()
def reconstruct(model: nn.Module, task: Task, sets: Mapping[str, ConstraintSet], config: Reconstruction, *,
                device: torch.device | None = None, seed: int = 0, checkpoint: str | Path | None = None,
                resume: bool = False, log: Callable[[str], None] | None = print) -> tuple[Masks, list[dict[str, Any]]]:
    """Prune `model` in place layer by layer (see the module doc); returns (masks, per-layer records)."""
    check_reconstruction(model, sets, config)
    device = device or next(model.parameters()).device
    params = dict(model.named_parameters())
    sets = per_layer_sets(sets, {n: params[n].detach() for n in sets})
    solver = config.build_solver()
    names = list(sets)
    path = Path(checkpoint) if checkpoint is not None else None
    settings = {"reconstruction": config.fingerprint(), "seed": seed, "layers": names,
                "source_weights": state_digest(model) if path is not None else None}
    masks: dict[str, torch.Tensor] = {}
    records: list[dict[str, Any]] = []
    dense = copy.deepcopy(model) if config.target == "dense" else None  # the source weights, before a resume
    if resume and path is not None and path.is_file():
        saved = load_artifact(path, map_location=device)
        check_same_settings(saved.settings, settings, path)
        model.load_state_dict(saved.state_dict)
        masks = {n: m.to(device) for n, m in (saved.masks or {}).items()}
        records = list((saved.phase or {}).get("records", []))
        if log:
            log(f"layer-wise: resuming {str(path)!r} after {len(records)} of {len(names)} layers")
    def forward(m: nn.Module, b: Any) -> Any:
        return task.forward(m, b, device)

    stages = _Stages(model, lambda: full_passes(model, task.calibration_batches(config.calibration_batches, seed),
                                                forward), config.batch_stats)
    for i, name in enumerate(names):
        if name in masks:
            continue
        module = _module_of(model, name)
        started = time.perf_counter()
        if dense is None:
            H, n = layer_gram(model, module, stages.passes_for(name.rpartition(".")[0], module), config.batch_stats)
            reference = None
        else:
            dense_module = _module_of(dense, name)
            H, B, n = cross_grams(model, dense, [module], [dense_module],
                                  task.calibration_batches(config.calibration_batches, seed), forward,
                                  config.batch_stats)[0]
            reference = dense_reference(flat_weight(dense_module).to(torch.float64), H, B, config.damping)
        mask, record = _solve_layer(name, module, H, n, reference, solver, config, sets[name], started)
        masks[name] = mask
        records.append(record)
        if path is not None and is_main():  # every rank holds the same weights; one writes them
            save_artifact(Artifact.of(model, task, masks={k: v.cpu() for k, v in masks.items()},
                                      phase={"records": records}, provenance={"settings": settings}), path)
        if log:
            _log_layer(log, record, f"{i + 1}/{len(names)}", config)
    return Masks(masks), records


def _solve_layer(name: str, module: nn.Module, H: torch.Tensor, n: int, reference: torch.Tensor | None,
                 solver: LayerSolver, config: Reconstruction, target: ConstraintSet,
                 started: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """Solve one layer calibrated since `started` and write its new weights; returns (mask, record)."""
    calibrated = time.perf_counter()
    new, mask, record = solve_on_gram(module, H, target, solver, config, reference)
    module.weight.copy_(new.to(module.weight.dtype))
    return mask, {"layer": name, "shape": list(module.weight.shape), "inputs": n, **record,
                  "seconds": time.perf_counter() - started, "calibration_seconds": calibrated - started}


def solve_on_gram(module: nn.Module, H: torch.Tensor, target: ConstraintSet, solver: LayerSolver,
                  config: Reconstruction, reference: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The layer problem of `module`'s weight (or of `reference`, (groups, rows, d) float64: the
    weights that reproduce the dense output, `dense_reference`) on the Gram matrix H, solved
    (re-fitted when the config says so) without touching the module: (new weight in the layer's
    shape, float64; its mask; relative output errors f(W′)/f(0) of the plain projection and of the
    solver, kept count and the solver's info).  The layer-wise reconstruction and the allocation's
    error curves share it."""
    W = flat_weight(module).to(torch.float64) if reference is None else reference
    dtype = PRECISIONS[config.precision]
    problem = LayerProblem(W.to(dtype), damped(H, config.damping).to(dtype), target, module.weight.shape)
    new, mask, info = solver.solve(problem)
    if config.refit:
        new = refit(problem, mask, new)
    raw = LayerProblem(W, H, target, module.weight.shape)
    base = float(raw.objective(torch.zeros_like(W))) or 1.0
    before = float(raw.objective(W * problem.project_mask(W))) / base
    new = new.to(torch.float64)
    after = float(raw.objective(new)) / base
    return new.reshape(module.weight.shape), mask.reshape(module.weight.shape), {
        "error_projection": before, "error": after, "kept": int(mask.sum()), **info}


def _log_layer(log: Callable[[str], None], record: dict[str, Any], position: str, config: Reconstruction) -> None:
    """The layer's line (and a note when its problem is underdetermined on the calibration data)."""
    name, shape = record["layer"], record["shape"]
    row = math.prod(shape[1:])  # the weights one input vector multiplies (a GEMM row)
    if record["inputs"] < row:
        log(f"note: {name} saw {record['inputs']} input vectors for {row} weights per row: its "
            "problem is underdetermined on the calibration data (the error shown is optimistic); give more "
            "--calibration-batches")
    log(f"layer {position} {name} {'×'.join(map(str, shape))}: output error {record['error_projection']:.4f} "
        f"(projection) → {record['error']:.4f} ({config.solver}{' + lstsq' if config.refit else ''}), "
        f"{record['seconds']:.1f} s")


class _Stages:
    """The nested stages whose inputs are kept for the layer being calibrated (outermost first).

    Moving to a layer drops the stages that do not contain it and captures the inputs of its
    ancestors below the innermost kept one, each through the stage above it; an ancestor that the
    forward pass does not call before the layer (a parent calling its children one by one) is
    remembered and skipped.  Layers go in model order, so everything that runs before a kept
    stage is final and its inputs stay valid."""

    def __init__(self, model: nn.Module, full: Callable[[], Any], batch_stats: bool):
        self.model, self.full, self.batch_stats = model, full, batch_stats
        self.kept: list[tuple[str, StageInputs]] = []
        self.uncalled: set[str] = set()

    def _passes(self) -> Any:
        return self.kept[-1][1].passes() if self.kept else self.full()

    def passes_for(self, module_name: str, layer: nn.Module) -> Any:
        while self.kept and not module_name.startswith(self.kept[-1][0] + "."):
            self.kept.pop()
        parts = module_name.split(".")
        depth = len(self.kept[-1][0].split(".")) if self.kept else 0
        for k in range(depth + 1, len(parts)):
            ancestor = ".".join(parts[:k])
            if ancestor in self.uncalled:
                continue
            inputs = StageInputs(self.model, self.model.get_submodule(ancestor), layer, self._passes(),
                                 self.batch_stats)
            if inputs.runs is None:
                self.uncalled.add(ancestor)
            else:
                self.kept.append((ancestor, inputs))
        return self._passes()


@dataclass(frozen=True)
class LayerwiseConfig(SolverConfig):
    """The `layerwise` method's options: the layer-wise reconstruction it runs (see `Reconstruction`)."""

    layer_solver: str = option("slr", "layer-wise: the solver of each layer's problem", choices=LAYER_SOLVERS.list)
    calibration_batches: int = option(CALIBRATION_BATCHES, "layer-wise: training batches whose activations "
                                      "define each layer's problem")
    damping: float = option(DAMPING, "layer-wise: relative damping of H = XᵀX")
    refit: Literal["lstsq", "none"] = option("lstsq", "layer-wise: least squares on the solver's final support, "
                                             "or none")
    calibration_bn: Literal["batch", "running"] = option(
        "batch", "layer-wise: BatchNorm during calibration normalises by each batch's statistics (as after "
        "recalibration) or by the dense network's running ones")
    precision: Literal["float64", "float32"] = option("float64", "layer-wise: the dtype the layer solvers work "
                                                      "in (H is accumulated in float64)")
    target: Literal["current", "dense"] = option(
        "dense", "layer-wise: each layer reproduces its own weights' output on the inputs of the network as "
        "pruned so far (current) or the dense network's output (dense: corrects the earlier layers' errors)",
        flag="layer-target")
    layer_options: Mapping[str, Any] | None = option(None)

    needs_task: ClassVar[bool] = True

    @property
    def trains(self) -> bool:
        """Zero epochs: the hard prune is the reconstruction."""
        return False

    def __post_init__(self) -> None:
        self.reconstruction()  # every value checked, without a model

    def reconstruction(self) -> Reconstruction:
        """The `Reconstruction` these options describe, checked (also what --reconstruct uses)."""
        if self.refit not in ("lstsq", "none"):
            raise ValueError(f"refit must be 'lstsq' or 'none', got {self.refit!r}")
        if self.calibration_bn not in ("batch", "running"):
            raise ValueError(f"calibration_bn must be 'batch' or 'running', got {self.calibration_bn!r}")
        return Reconstruction(self.layer_solver, self.calibration_batches, self.damping, self.refit == "lstsq",
                              dict(self.layer_options or {}), self.calibration_bn == "batch", self.precision,
                              self.target)


@register_solver("layerwise",
                 help="zero epochs: each layer re-solved on calibration activations (layer-wise reconstruction)")
class Layerwise(Solver):
    """One-shot layer-wise reconstruction as a method: `hard_prune()` runs `reconstruct`.

    The workflow supplies the task, the seed of the calibration batches and, for resumable runs,
    a checkpoint path; `records` holds the per-layer errors after the hard prune.
    """

    Config = LayerwiseConfig
    config: LayerwiseConfig

    def __init__(self, model: nn.Module, spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: LayerwiseConfig | None = None, *, task: Task | None = None, seed: int = 0,
                 checkpoint: str | Path | None = None, resume: bool = False, **options: Any):
        super().__init__(model, spec, config, **options)
        self.reconstruction = self.config.reconstruction()
        check_reconstruction(model, self.projector.sets, self.reconstruction)
        self.task, self.seed, self.checkpoint, self.resume = task, seed, checkpoint, resume
        self.records: list[dict[str, Any]] = []

    def step(self, closure: Any = None) -> dict[str, Any]:
        return {}

    def hard_prune(self) -> Masks:
        if self.task is None:
            raise StateError("the layerwise method needs the task (its calibration batches): build it with task=...")
        masks, self.records = reconstruct(self.model, self.task, self.projector.sets, self.reconstruction,
                                          seed=self.seed, checkpoint=self.checkpoint, resume=self.resume)
        return masks

