"""The stages the pruning workflows are made of, and the `Run` they share.

`prune()` (engine/pruning.py), `structured_prune()` (structured/workflow.py) and `search_prune()`
(search/workflow.py) are short sequences of these stages: device placement, solver training,
the hard prune (projection or layer-wise reconstruction), BatchNorm recalibration, masked or plain
fine-tuning, structured removal and the measurements (costs, sparsity, latency).  Each stage is a
function of the `Run` (model, task, device, seed, output folder, resume flag, hooks) and of what
the earlier stages returned, so a new workflow is a new sequence, not a copy of an old one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from ..compressed import file_bytes
from ..config import option
from ..evaluate import hard_prune_metrics, recalibrate_task_bn
from ..layerwise import Reconstruction
from ..masks import Masks, squash
from ..metrics import cost_summary
from ..registry import Entry
from ..sets import ConstraintSet
from ..solvers import Solver, SolverConfig
from ..spec import PruneSpec
from ..task import Task
from .reconstruct import check_reconstruction
from .reconstruct import reconstruct as reconstruct_layers
from .trainer import Hooks, TrainConfig, Trainer, resolve_device

if TYPE_CHECKING:
    from ..structured.surgery import ChannelGraph

__all__ = ["Run", "HardPrune", "HardPruneMetrics", "LatencyOptions", "place", "build_solver", "train_solver",
           "hard_prune", "recalibrated_metrics", "finetune_masked", "finetune", "remove_channels",
           "sparsity", "measure", "measure_latency"]


@dataclass
class Run:
    """What every stage of one workflow run shares."""

    model: nn.Module
    task: Task | None
    device: torch.device
    seed: int = 0
    out: Path | None = None
    resume: bool = False
    hooks: Sequence[Hooks] = ()
    stages: list[dict[str, Any]] = field(default_factory=list)

    def path(self, name: str) -> Path | None:
        """`name` in the run's output folder (None without one)."""
        return self.out / name if self.out is not None else None

    def checkpoint(self, name: str) -> str | None:
        """A phase checkpoint's path as TrainConfig takes it."""
        path = self.path(name)
        return str(path) if path is not None else None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name`; the stages run are recorded in the run's artifact."""
        start = time.perf_counter()
        yield
        self.stages.append({"stage": name, "seconds": time.perf_counter() - start})

    def need_task(self, what: str) -> Task:
        if self.task is None:
            raise ValueError(f"{what} needs a task")
        return self.task


def place(model: nn.Module, device: str | torch.device = "auto", channels_last: bool = False) -> torch.device:
    """Move `model` to `device` (resolved), channels_last on CUDA when asked; returns the device."""
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    model.to(dev)
    if dev.type == "cuda" and channels_last:
        model.to(memory_format=torch.channels_last)
    return dev


# ---- unstructured pruning ------------------------------------------------------------------
class HardPruneMetrics(Hooks):
    """Each epoch's hard-prune metric (with and without BatchNorm recalibration) and distance to the sets."""

    def __init__(self, solver: Solver, bn_batches: int):
        self.solver, self.bn_batches = solver, bn_batches

    def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, Any]:
        task, metric = trainer.task, trainer.task.metric
        m = hard_prune_metrics(task, trainer.model, self.solver.projector, trainer.device, self.bn_batches,
                               trainer.config.seed)
        out = {f"hard_prune_{metric}": m["hard_prune"][metric], "distance": self.solver.distance()}
        if m["hard_prune_bn"] is not None:
            out[f"hard_prune_bn_{metric}"] = m["hard_prune_bn"][metric]
        return out


def build_solver(run: Run, entry: Entry[Solver], spec: PruneSpec | Mapping[str, ConstraintSet],
                 config: SolverConfig, reconstruct: Reconstruction | None) -> Solver:
    """The registered solver on `run.model` (one-shot layer-wise solvers get the task and a checkpoint)."""
    context = {"task": run.task, "seed": run.seed, "checkpoint": run.path("layerwise.pt"),
               "resume": run.resume} if config.needs_task else {}
    solver = entry.build(run.model, spec, config, **context)
    if reconstruct is not None:
        check_reconstruction(run.model, solver.projector.sets, reconstruct)
    return solver


def train_solver(run: Run, solver: Solver, train: TrainConfig, method: str, settings: dict[str, Any],
                 bn_batches: int) -> list[dict[str, Any]]:
    """The solver's training epochs with the hard-prune metric after each (none for one-shot solvers)."""
    if not (solver.trains and train.epochs > 0):
        return []
    config = replace(train, checkpoint=run.checkpoint(f"{method}.pt"), resume=run.resume, settings=settings)
    hooks = [HardPruneMetrics(solver, bn_batches), *run.hooks]
    return Trainer(run.need_task("training"), run.model, config, solver=solver, hooks=hooks, desc=method).fit()


@dataclass
class HardPrune:
    """The final hard prune: its masks, per-layer records, and the projection's metrics beside a reconstruction."""

    masks: Masks
    layers: list[dict[str, Any]]
    projection: dict[str, dict[str, float] | None] | None = None


def hard_prune(run: Run, solver: Solver, reconstruct: Reconstruction | None, bn_batches: int) -> HardPrune:
    """W ← Π_S(W), or with `reconstruct` the layer-wise reconstruction (the projection measured first)."""
    if reconstruct is None:
        return HardPrune(solver.hard_prune(), getattr(solver, "records", []))
    task = run.need_task("the reconstruction")
    projection = hard_prune_metrics(task, run.model, solver.projector, run.device, bn_batches, run.seed)
    masks, layers = reconstruct_layers(run.model, task, solver.projector.sets, reconstruct, device=run.device,
                                       seed=run.seed, checkpoint=run.path("reconstruct.pt"), resume=run.resume)
    return HardPrune(masks, layers, projection)


def recalibrated_metrics(run: Run, bn_batches: int) -> tuple[dict[str, float], dict[str, float] | None]:
    """The metrics as the weights stand, then after re-estimating BatchNorm statistics (None without any)."""
    task = run.need_task("measuring")
    metrics = task.evaluate(run.model, run.device)
    recalibrated = recalibrate_task_bn(task, run.model, run.device, bn_batches, run.seed)
    return metrics, task.evaluate(run.model, run.device) if recalibrated else None


def finetune_masked(run: Run, masks: Masks, config: TrainConfig | None,
                    settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Fine-tune with the pruned weights held at zero, then fold the masks into the weights."""
    if config is None or config.epochs <= 0:
        return []
    masks.attach(run.model)
    config = replace(config, checkpoint=run.checkpoint("finetune.pt"), resume=run.resume, settings=settings)
    history = Trainer(run.need_task("fine-tuning"), run.model, config, hooks=run.hooks, desc="finetune").fit()
    squash(run.model)
    return history


def sparsity(masks: Masks, solver: Solver) -> tuple[float, float]:
    """(target, reached) fraction of zeros over the pruned tensors; the target is NaN under a global budget."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    targets = solver.projector.kept({n: m.shape for n, m in masks.items()}).values()
    target = float("nan") if any(k is None for k in targets) else 1 - sum(targets) / total
    return target, 1 - kept / total


# ---- structured pruning --------------------------------------------------------------------
def finetune(run: Run, config: TrainConfig | None) -> list[dict[str, Any]]:
    """Plain fine-tuning (the structurally pruned model has no masks to hold)."""
    if config is None or config.epochs <= 0:
        return []
    return Trainer(run.need_task("fine-tuning"), run.model, config, hooks=run.hooks, desc="finetune").fit()


def measure(model: nn.Module, example: Tensor) -> dict[str, Any]:
    """Params and MACs (`cost_summary`) and the measured bytes of the model's dense checkpoint and of
    its compressed file (`compressed.file_bytes`): what the reports print side by side."""
    return {**cost_summary(model, example), "bytes": file_bytes(model)}


def remove_channels(run: Run, graph: ChannelGraph, plan: Mapping[str, Tensor],
                    example: Tensor) -> tuple[dict[str, int], dict[str, Any], dict[str, float]]:
    """Remove the channels `plan` drops; returns (predicted costs, measured costs, metrics without retraining)."""
    predicted = {"macs": graph.costs.cost(plan, "macs"), "params": graph.costs.cost(plan, "params")}
    graph.prune(plan)
    after = measure(run.model, example)
    return predicted, after, run.task.evaluate(run.model, run.device) if run.task is not None else {}


@dataclass
class LatencyOptions:
    """How to time the dense and the pruned model (interleaved) at the end of a run (the fields
    with help are `slr-prune structured`'s latency flags, generated by cli/options.py)."""

    batch_size: int = option(1, "batch size of the timed input", flag="latency-batch")
    device: str = option("cpu", "cpu or cuda (default: --device)", flag="latency-device")
    dtype: Literal["bfloat16", "float16"] | None = option(None, "default float32", flag="latency-dtype")
    repeats: int = option(10, "timed repeats per model", flag="latency-repeats")
    warmup: int = 3
    channels_last: bool = True


def measure_latency(dense: nn.Module, pruned: nn.Module, example: Tensor, options: LatencyOptions) -> dict[str, Any]:
    """Interleaved timings of the dense and the pruned model on `example` repeated to the batch size."""
    from ..metrics.latency import compare_latency

    dtype = getattr(torch, options.dtype) if options.dtype else None
    x = example[:1].repeat(options.batch_size, *([1] * (example.dim() - 1)))
    stats = compare_latency({"dense": dense, "pruned": pruned}, x, device=options.device, dtype=dtype,
                            channels_last=options.channels_last, warmup=options.warmup, repeats=options.repeats)
    out: dict[str, Any] = {k: v.to_dict() for k, v in stats.items()}
    out["speedup"] = stats["dense"].median_ms / stats["pruned"].median_ms
    return out
