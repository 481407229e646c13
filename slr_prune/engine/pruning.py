"""`prune()`: the whole workflow in one call, the verb the CLI wraps.

dense metric → solver training (SLR / ADMM / gradual magnitude) with the hard-prune metric after
every epoch → hard prune (exact target sparsity: the projection, or with `reconstruct` the
layer-wise reconstruction, reported beside the projection) → metric without retraining, with the dense
BatchNorm statistics and after recalibrating them (bn.py; the pruned model keeps the recalibrated
ones) → masked fine-tuning → squash.  With `out_dir` every phase checkpoints atomically and
`resume=True` continues a run where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..artifact import Artifact, load_artifact, save_artifact
from ..evaluate import BN_BATCHES, check_bn_batches
from ..layerwise import Reconstruction
from ..masks import Masks
from ..sets import ConstraintSet
from ..solvers import SOLVERS, SolverConfig, solver_config
from ..solvers.base import check_materialised
from ..spec import PruneSpec
from ..task import Task, task_name
from ..utils import state_digest
from . import distributed as dist_utils
from .allocation import AllocationContext, allocate, check_allocation
from .pipeline import (
    Run,
    build_solver,
    finetune_masked,
    hard_prune,
    measure,
    place,
    recalibrated_metrics,
    sparsity,
    train_solver,
)
from .trainer import Hooks, TrainConfig, check_same_settings

__all__ = ["prune", "PruneResult"]


@dataclass
class PruneResult:
    """What a pruning run measured; `to_dict()` is the JSON report."""

    method: str
    spec: dict[str, Any]
    metric: str
    dense: dict[str, float]
    hard_prune: dict[str, float]
    target_sparsity: float
    sparsity: float
    hard_prune_bn: dict[str, float] | None = None
    bn_batches: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    finetune: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    layerwise: list[dict[str, Any]] = field(default_factory=list)
    projection: dict[str, dict[str, float] | None] | None = None
    reconstruction: dict[str, Any] | None = None
    allocation: dict[str, Any] | None = None

    @property
    def best_hard_prune(self) -> dict[str, float]:
        """The hard-prune metrics the model ships with: recalibrated when BatchNorm was."""
        return self.hard_prune_bn or self.hard_prune

    @property
    def finetuned(self) -> dict[str, float] | None:
        return self.finetune[-1] if self.finetune else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune(model: nn.Module, task: Task, spec: PruneSpec | Mapping[str, ConstraintSet], method: str = "slr", *,
          train: TrainConfig | None = None, finetune: TrainConfig | None = None,
          solver_options: Mapping[str, Any] | Any = None, out_dir: str | Path | None = None,
          resume: bool = False, dense_metrics: dict[str, float] | None = None,
          bn_batches: int = BN_BATCHES, keep_checkpoints: bool = True,
          reconstruct: Reconstruction | None = None, hooks: Sequence[Hooks] = (), allocation: str = "uniform",
          allocation_options: Mapping[str, Any] | Any = None) -> PruneResult:
    """Prune `model` in place with the registered solver `method` under `spec`; see module doc.

    `spec` is a PruneSpec or resolved sets {parameter name: ConstraintSet} (e.g. an allocation);
    `solver_options` a mapping of the solver's options, or its config (`SOLVERS.get(method).options`,
    e.g. `SLRConfig`) used as it is; a mapping goes through `solver_config`, the rule the command line
    shares: without a ρ schedule in it, the config's recommended one.
    `bn_batches` training batches re-estimate the BatchNorm statistics after every hard prune
    (0: never); a model without BatchNorm reports only `hard_prune`.  With `keep_checkpoints`
    False the per-phase training checkpoints in `out_dir` are removed once pruned.pt is written.
    `reconstruct` makes the final hard prune a layer-wise reconstruction (engine/reconstruct.py)
    instead of the projection; the projection's metrics are kept beside it (`projection`).  The
    one-shot method `layerwise` reconstructs from the dense weights with zero epochs.  `hooks` join
    every training phase's Trainer (solver training and fine-tuning).  `allocation` (a rule of
    engine/allocation.py's ALLOCATIONS, with `allocation_options`) re-divides the unstructured
    budget among the layers before the solver is built; the per-layer ratios are in `allocation`.
    """
    entry = SOLVERS.get(method)
    config = solver_config(method, solver_options)
    _check_inputs(model, bn_batches, reconstruct)
    sets = dict(spec.resolve(model)) if isinstance(spec, PruneSpec) else dict(spec)
    layer_config = _layer_config(config, reconstruct)
    rule, allocation_options = check_allocation(allocation, allocation_options, sets, model, layer_config, task)
    start = time.perf_counter()
    train = train or TrainConfig()
    out = Path(out_dir) if out_dir is not None else None
    settings = _settings(model, task, spec, method, config, bn_batches, reconstruct)
    if rule.traits["reallocates"]:  # (a uniform run's settings stay as they were, so its old folders resume)
        settings["allocation"] = {"rule": allocation, "options": asdict(allocation_options)}
    with_phases = {**settings, "train": train.fingerprint(), "finetune": finetune.fingerprint() if finetune else None}
    if resume and out is not None and (out / "pruned.pt").is_file():
        return _finished(model, out / "pruned.pt", with_phases)
    run = Run(model, task, place(model, train.device, train.channels_last), train.seed, out, resume, hooks)
    example = task.example_input()
    costs_before = measure(model, example)
    dense = dense_metrics or task.evaluate(model, run.device)
    with run.stage(f"allocation {allocation}"):
        context = AllocationContext(task, run.device, train.seed, layer_config, out, resume)
        sets, allocated = allocate(model, sets, rule.name, allocation_options, context)
    solver = build_solver(run, entry, sets if rule.traits["reallocates"] else spec, config, reconstruct)
    with run.stage(f"train {method}"):
        epochs = train_solver(run, solver, train, method, settings, bn_batches)
    with run.stage("hard prune, layer-wise" if reconstruct or config.needs_task else "hard prune"):
        pruned = hard_prune(run, solver, reconstruct, bn_batches)
    with run.stage("BN recalibration"):
        hard, hard_bn = recalibrated_metrics(run, bn_batches)
    with run.stage("masked fine-tuning"):
        tuned = finetune_masked(run, pruned.masks, finetune, {**settings, "train": train.fingerprint()})
    target, reached = sparsity(pruned.masks, solver)
    result = PruneResult(
        method=method, spec=_spec_record(spec), metric=task.metric, dense=dense, hard_prune=hard,
        hard_prune_bn=hard_bn, bn_batches=bn_batches if hard_bn is not None else 0, target_sparsity=target,
        sparsity=reached, epochs=epochs, finetune=tuned,
        costs={"before": _totals(costs_before), "after": _totals(measure(model, example))},
        seconds=time.perf_counter() - start, layerwise=pruned.layers, projection=pruned.projection,
        reconstruction=reconstruct.fingerprint() if reconstruct else None, allocation=allocated.to_dict(),
    )
    if out is not None and dist_utils.is_main():
        _save(run, out, pruned.masks, result, with_phases)
        if not keep_checkpoints:
            for phase in (out / f"{method}.pt", out / "finetune.pt", out / "layerwise.pt", out / "reconstruct.pt"):
                phase.unlink(missing_ok=True)
    return result


def _save(run: Run, out: Path, masks: Masks, result: PruneResult, settings: dict[str, Any]) -> None:
    """pruned.pt: the pruned weights, their masks, the task, the result and the run's settings."""
    save_artifact(Artifact.of(run.model, run.need_task("saving"), masks=masks.state_dict(), result=result.to_dict(),
                              provenance={"settings": settings, "stages": run.stages}), out / "pruned.pt")


def _finished(model: nn.Module, path: Path, settings: dict[str, Any]) -> PruneResult:
    """A run already completed in `path` with the same settings: load its model and result."""
    saved = load_artifact(path)
    check_same_settings(saved.settings, settings, path)
    saved.build(model, f"{str(path)!r}")
    print(f"note: {str(path)!r} is a finished run with these settings; nothing to do (its result is reported)")
    return PruneResult(**saved.result)


def _layer_config(config: SolverConfig, reconstruct: Reconstruction | None) -> Reconstruction:
    """The layer-wise settings an allocation's error curves use: the method's own reconstruction
    (`layerwise`), else the final hard prune's, else the defaults."""
    own = getattr(config, "reconstruction", None)
    return own() if callable(own) else reconstruct or Reconstruction()


def _check_inputs(model: nn.Module, bn_batches: int, reconstruct: Reconstruction | None) -> None:
    """What prune() refuses before any compute (a meta-device model: one line, not torch's error)."""
    check_bn_batches(bn_batches)
    check_materialised(model)
    if reconstruct is not None and not isinstance(reconstruct, Reconstruction):
        raise TypeError(f"reconstruct must be a Reconstruction or None, got {type(reconstruct).__name__}")


def _settings(model: nn.Module, task: Task, spec: PruneSpec | Mapping[str, ConstraintSet], method: str,
              config: SolverConfig, bn_batches: int, reconstruct: Reconstruction | None) -> dict[str, Any]:
    """What shapes the run's result besides the phases' TrainConfigs; a --resume must match it."""
    return {"method": method, "spec": _spec_record(spec), "solver_options": asdict(config), "task": task.record(),
            "task_name": task_name(task), "source_weights": state_digest(model), "bn_batches": bn_batches,
            "reconstruct": reconstruct.fingerprint() if reconstruct else None}


def _spec_record(spec: PruneSpec | Mapping[str, ConstraintSet]) -> dict[str, Any]:
    if isinstance(spec, PruneSpec):
        return spec.to_dict()
    return {"sets": {name: repr(s) for name, s in spec.items()}}


def _totals(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "layers"}
