"""`structured_prune()`: criterion → budget → plan → physical removal → fine-tuning, in one call.

    dense metric, params, MACs
      → ChannelGraph (Torch-Pruning dependency graph, coupled groups)
      → per-group channel counts: explicit ratios, or a FLOPs/params target allocated uniformly or
        by the convex program of `slr_prune.allocate` on sensitivities: the loss rise measured with
        masks ("convex") or the layer solver's relative consumer error ("curves")
      → criterion scores (l1, l2, nuclear, chip, lfe, slr, admm, layerwise) → keep the top channels
        per group
      → repair (on by default at zero fine-tuning epochs): the consumers of every pruned group
        re-fitted by least squares on calibration activations (`reconstruction.py`; the layerwise
        criterion re-fits as it chooses)
      → removal → metric without retraining → BatchNorm re-estimated (repair) → metric
      → fine-tuning → metric, params, MACs, latency
      → optional file: state dict + structure record (`record.py`), report.json

`torch_pruning_baseline()` is the external baseline: Torch-Pruning's own `MetaPruner` with its
group-magnitude importance and no channel rounding (its defaults), at the uniform ratio that meets
the same target.  The CLI (`slr-prune structured`) and benchmarks/structured.py call these two.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..allocate import Allocation, Monomials, allocate_convex, allocate_uniform, counts_from_ratios, polynomial_value
from ..atomic import write_text_atomic
from ..bn import recalibrate_bn
from ..engine.pipeline import LatencyOptions, Run, measure, measure_latency, place, remove_channels
from ..engine.pipeline import finetune as pipeline_finetune
from ..engine.trainer import Hooks, TrainConfig
from ..evaluate import BN_BATCHES, check_bn_batches, recalibrate_task_bn
from ..layerwise import Reconstruction
from ..metrics.flops import cost_summary
from ..task import Task, task_name
from ..utils import model_mode
from .criteria import CRITERIA, Calibration, Criterion, WeightNorm, make_criterion
from .reconstruction import REPAIR, channel_error_curves, reconstruct_channels
from .record import save_pruned
from .surgery import ChannelGraph, SiteMasker, plan_from_scores

__all__ = ["StructuredResult", "structured_prune", "ALLOCATIONS", "torch_pruning_baseline", "measure_sensitivity",
           "LatencyOptions"]


@dataclass
class StructuredResult:
    """What a structured pruning run measured; `to_dict()` is the JSON report."""

    criterion: dict[str, Any]
    allocation: dict[str, Any]
    round_to: int
    counts: dict[str, int]
    sizes: dict[str, int]
    metric: str | None
    dense: dict[str, float] = field(default_factory=dict)
    pruned: dict[str, float] = field(default_factory=dict)
    pruned_bn: dict[str, float] = field(default_factory=dict)
    repair: bool = False
    layers: list[dict[str, Any]] = field(default_factory=list)
    finetune: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    pruning_history: list[Any] = field(default_factory=list)

    @property
    def finetuned(self) -> dict[str, Any] | None:
        return self.finetune[-1] if self.finetune else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("pruning_history")
        return d


def measure_sensitivity(graph: ChannelGraph, scores: Mapping[str, Tensor], calibration: Calibration,
                        levels: Sequence[float] = (0.25, 0.5, 0.75)) -> dict[str, list[tuple[float, float]]]:
    """Loss rise when one group alone keeps only its top `level` of channels (by `scores`), masked.

    One (keep fraction, loss − dense loss) point per group and level, measured on the calibration
    batches with `SiteMasker`, which equals removing those channels.
    """
    if not levels or any(not 0 < x < 1 for x in levels):
        raise ValueError(f"sensitivity levels must be keep fractions in (0, 1), got {list(levels)}")
    base = calibration.mean_loss(graph.model)
    out: dict[str, list[tuple[float, float]]] = {}
    plans = {}
    for name, group in graph.groups.items():
        ks = sorted({max(1, round(x * group.size)) for x in levels} - {group.size})
        plans[name] = [(k, plan_from_scores({name: scores[name]}, {name: k})[name]) for k in ks]
    with SiteMasker(graph) as masker:
        for name, entries in plans.items():
            points = []
            for k, keep in entries:
                masker.set({name: keep})
                points.append((k / graph.groups[name].size, calibration.mean_loss(graph.model) - base))
            out[name] = points
    return out


def task_ignored(task: Task | None) -> list[str]:
    """Module-name globs of the task's default exclusions (parameter globs without ".weight")."""
    globs = task.default_exclude if task is not None else ()
    return [g.removesuffix(".weight") for g in globs]


def _totals(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("params", "macs", "bytes") if k in summary}


def _resolve_budget(flops_target: float | None, params_target: float | None,
                    ratios: Mapping[str, float] | None) -> tuple[str, Any]:
    given = [(k, v) for k, v in (("macs", flops_target), ("params", params_target), ("ratios", ratios))
             if v is not None]
    if len(given) != 1:
        got = [k for k, _ in given] or "none"
        raise ValueError("give exactly one budget: flops_target (fraction of MACs to keep), params_target "
                         f"(fraction of parameters to keep) or ratios (per-layer); got {got}")
    for name, value in (("flops_target", flops_target), ("params_target", params_target)):
        if value is not None and not (isinstance(value, int | float) and 0.0 < value <= 1.0):
            raise ValueError(f"{name} {value!r} must be the fraction of the dense cost to keep, in (0, 1]; "
                             "e.g. 0.5 keeps half (2× fewer)")
    return given[0]


CALIBRATION_BATCHES = 8
"""Default calibration batches of structured pruning (512 images at batch 64): the layerwise
criterion at 2× fewer MACs on the digits ResNet-20 kept 97.5 ± 0.4% with 4 and 98.1 ± 0.4% with 8
(5 seeds; 16 gave no more on 3 seeds)."""
ALLOCATIONS = ("uniform", "convex", "curves")
"""Per-group budgets for a target: one keep fraction for every group, or the convex program on
sensitivities measured as the loss rise under masks (convex) or as the layer solver's relative
consumer error at `CURVE_LEVELS` (curves)."""
CURVE_LEVELS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
"""Keep fractions of each group's error curve (allocation "curves")."""
CURVE_GAMMAS = (0.5, 1.0, 2.0)
"""The "curves" candidates: the convex program on the errors raised to each γ; they and the uniform
allocation are judged by the loss of the stitched network (`stitched_loss`), the lowest wins."""


def _checked_budget(allocation: str, flops_target: float | None, params_target: float | None,
                    ratios: Mapping[str, float] | None) -> tuple[str, Any]:
    """(kind, budget) after checking that the allocation fits it."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation {allocation!r} is not one of {', '.join(ALLOCATIONS)}")
    kind, budget = _resolve_budget(flops_target, params_target, ratios)
    if kind == "ratios" and allocation != "uniform":
        raise ValueError(f"allocation {allocation!r} needs a flops_target or params_target, not per-layer ratios")
    return kind, budget


def _checked_repair(repair: bool | None, finetune: TrainConfig | None, bn_batches: int, has_data: bool) -> bool:
    """Whether to repair: given, or on when no fine-tuning epoch follows and there is data to repair with."""
    if repair is not None and not isinstance(repair, bool):
        raise ValueError(f"repair must be True, False or None (on at zero fine-tuning epochs), got {repair!r}")
    check_bn_batches(bn_batches)
    if repair and not has_data:
        raise ValueError("repair re-fits the consumers on calibration data: give a task or a Calibration, or "
                         "repair=False")
    return repair if repair is not None else has_data and (finetune is None or finetune.epochs <= 0)


def structured_prune(model: nn.Module, task: Task | None = None, *, example_input: Tensor | None = None,
                     criterion: str | Criterion = "l1", criterion_options: Mapping[str, Any] | None = None,
                     flops_target: float | None = None, params_target: float | None = None,
                     ratios: Mapping[str, float] | None = None, allocation: str = "uniform", round_to: int = 8,
                     min_keep: float = 0.1, ignored_layers: Iterable[nn.Module | str] = (),
                     calibration: Calibration | None = None, calibration_batches: int = CALIBRATION_BATCHES,
                     sensitivity_levels: Sequence[float] = (0.25, 0.5, 0.75), finetune: TrainConfig | None = None,
                     repair: bool | None = None, bn_batches: int = BN_BATCHES, seed: int = 0,
                     device: str | torch.device = "auto", latency: LatencyOptions | None = None,
                     out_dir: str | Path | None = None, hooks: Sequence[Hooks] = ()) -> StructuredResult:
    """Prune `model`'s filters for real, in place; see the module docstring for the steps.

    Budgets: `flops_target` / `params_target` are the fraction of the dense MACs / parameters to
    keep (0.5 = half); `ratios` maps globs over group or layer names to prune ratios.
    `allocation` "uniform", "convex" or "curves" (for targets; see `ALLOCATIONS`).  `round_to`
    makes every kept channel count a multiple of it (1 = exact counts).  `repair` (default: on
    when no fine-tuning follows) re-fits the consumers of every pruned group by least squares on
    the calibration batches before removal and re-estimates BatchNorm on `bn_batches` training
    batches (of `seed`) after it; `pruned` is measured before that re-estimation, `pruned_bn`
    after.  `finetune` is a `TrainConfig` (needs `task`); `hooks`
    join its Trainer.  The task's `default_exclude` (e.g. a detection head's output convs) joins
    `ignored_layers`.
    """
    start = time.perf_counter()
    kind, budget = _checked_budget(allocation, flops_target, params_target, ratios)
    repair = _checked_repair(repair, finetune, bn_batches, task is not None or calibration is not None)
    run = Run(model, task, place(model, device), seed=seed, hooks=hooks)
    if example_input is None:
        if task is None:
            raise ValueError("give a task or an example_input (a batch-of-1 input tensor)")
        example_input = task.example_input()
    example = example_input.to(run.device)
    crit, calibration = _criterion(criterion, criterion_options, allocation, repair, task, calibration,
                                   calibration_batches, run.device)
    dense_copy = copy.deepcopy(model) if latency is not None else None
    graph = ChannelGraph(model, example[:1], [*ignored_layers, *task_ignored(task)])
    sizes = graph.sizes()
    if kind != "ratios":  # a target out of reach is refused before any data is read
        allocate_uniform(sizes, graph.costs.polynomial(kind), budget, kind, round_to, min_keep)
    before = measure(model, example)
    dense = task.evaluate(model, run.device) if task is not None else {}
    t0 = time.perf_counter()
    alloc, scores = _allocate(graph, sizes, crit, calibration, kind, budget, allocation, round_to, min_keep,
                              CURVE_LEVELS if allocation == "curves" else sensitivity_levels)
    seconds = {"allocation": time.perf_counter() - t0}
    t0 = time.perf_counter()
    if scores is None:
        scores = crit.scores(graph, calibration, alloc.counts)
    seconds["criterion"] = time.perf_counter() - t0
    plan = plan_from_scores(scores, {g: k for g, k in alloc.counts.items() if k < sizes[g]})
    layers = getattr(crit, "records", [])
    if repair and not getattr(crit, "reconstructs", False):
        assert calibration is not None  # _criterion built it for the repair
        t0 = time.perf_counter()
        _, layers = reconstruct_channels(graph, calibration, _repair_config(crit), plan=plan)
        seconds["refit"] = time.perf_counter() - t0
    predicted, after, pruned_metrics = remove_channels(run, graph, plan, example)
    pruned_bn: dict[str, float] = {}
    if repair and task is not None:
        t0 = time.perf_counter()
        if recalibrate_task_bn(task, model, run.device, bn_batches, seed):
            pruned_bn = task.evaluate(model, run.device)
        seconds["bn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = pipeline_finetune(run, finetune)
    if history:
        seconds["finetune"] = time.perf_counter() - t0
    lat = measure_latency(dense_copy, model, example, latency) if latency is not None and dense_copy is not None else {}
    seconds["total"] = time.perf_counter() - start
    result = StructuredResult(
        criterion=crit.describe(), allocation={k: v for k, v in alloc.to_dict().items() if k != "counts"},
        round_to=round_to, counts=dict(alloc.counts), sizes=sizes, metric=task.metric if task is not None else None,
        dense=dense, pruned=pruned_metrics, pruned_bn=pruned_bn, repair=repair, layers=layers, finetune=history,
        costs={"before": _totals(before), "after": _totals(after), "predicted_after": predicted,
               "macs_ratio": before["macs"] / max(1, after["macs"]),
               "params_ratio": before["params"] / max(1, after["params"])},
        latency=lat, seconds=seconds, pruning_history=graph.pruning_history())
    if out_dir is not None:
        _save(Path(out_dir), model, task, result)
    return result


def _criterion(criterion: str | Criterion, criterion_options: Mapping[str, Any] | None, allocation: str,
               repair: bool, task: Task | None, calibration: Calibration | None, calibration_batches: int,
               device: torch.device) -> tuple[Criterion, Calibration | None]:
    """The criterion (workflow criteria get the task) and the calibration data it or the allocation needs."""
    options = dict(criterion_options or {})
    if isinstance(criterion, str) and "task" in CRITERIA.get(criterion).traits["workflow"]:
        options.setdefault("task", task)
    crit = make_criterion(criterion, **options)
    if (crit.needs_data or repair or allocation != "uniform") and calibration is None:
        if task is None:
            raise ValueError(f"criterion {crit.name!r} / allocation {allocation!r} need data: give a task or a "
                             "Calibration")
        calibration = Calibration.from_task(task, calibration_batches, device)
    return crit, calibration


def _allocate(graph: ChannelGraph, sizes: dict[str, int], crit: Criterion, calibration: Calibration | None,
              kind: str, budget: Any, allocation: str, round_to: int, min_keep: float,
              levels: Sequence[float]) -> tuple[Allocation, dict[str, Tensor] | None]:
    """Channels to keep per group (ratios, uniform or convex); the convex program also returns the
    criterion's scores when it measured sensitivities with them (None: score after the allocation)."""
    if kind == "ratios":
        names = {g: grp.member_names() for g, grp in graph.groups.items()}
        counts = counts_from_ratios(sizes, budget, names, round_to)
        return Allocation(counts, "ratios", "ratios", float("nan"),
                          graph.costs.cost(_full_plan(graph, counts), "macs") / graph.costs.total("macs")), None
    poly = graph.costs.polynomial(kind)
    if allocation == "uniform":
        return allocate_uniform(sizes, poly, budget, kind, round_to, min_keep), None
    assert calibration is not None  # _criterion built it for the convex allocation
    if allocation == "curves":
        return _curves_allocation(graph, sizes, poly, crit, calibration, kind, budget, round_to, min_keep, levels), None
    scores = None if crit.needs_counts else crit.scores(graph, calibration)
    proxy = WeightNorm(p=2).scores(graph) if scores is None else scores  # solver criteria score after: L2 stands in
    sens = measure_sensitivity(graph, proxy, calibration, levels)
    alloc = allocate_convex(sizes, poly, budget, sens, kind, round_to, min_keep)
    alloc.info["sensitivity"] = {g: [list(p) for p in pts] for g, pts in sens.items()}
    return alloc, scores


def _curves_allocation(graph: ChannelGraph, sizes: dict[str, int], poly: Monomials, crit: Criterion,
                       calibration: Calibration, kind: str, budget: float, round_to: int, min_keep: float,
                       levels: Sequence[float]) -> Allocation:
    """The "curves" allocation: the layer solver's error curve of every group at `levels`, the convex
    program on them raised to each of `CURVE_GAMMAS`, and the uniform allocation, judged by
    `stitched_loss`; the candidate of lowest loss, with every candidate's loss in its info."""
    ks = {g: sorted({max(1, round(x * n)) for x in levels}) for g, n in sizes.items()}
    sens = channel_error_curves(graph, calibration, _repair_config(crit), ks)
    candidates = {"uniform": allocate_uniform(sizes, poly, budget, kind, round_to, min_keep)}
    for gamma in CURVE_GAMMAS:
        powered = {g: [(x, e ** gamma) for x, e in pts] for g, pts in sens.items()}
        candidates[f"curves, γ={gamma}"] = allocate_convex(sizes, poly, budget, powered, kind, round_to, min_keep)
    proxy = WeightNorm(p=2).scores(graph) if crit.needs_counts else crit.scores(graph, calibration)
    losses = {name: stitched_loss(graph, calibration, _repair_config(crit), proxy, a.counts)
              for name, a in candidates.items()}
    best = min(losses, key=losses.__getitem__)
    alloc = candidates[best]
    alloc.method = "curves"
    alloc.info.update(sensitivity={g: [list(p) for p in pts] for g, pts in sens.items()}, chosen=best,
                      candidates=losses)
    return alloc


def stitched_loss(graph: ChannelGraph, calibration: Calibration, config: Reconstruction, scores: Mapping[str, Tensor],
                  counts: Mapping[str, int]) -> float:
    """The calibration loss of the model repaired at `counts` (channels chosen by `scores`, consumers
    re-fitted, BatchNorm re-estimated on the calibration batches), the model left as it was: how the
    SPDY-style check of the "curves" allocation judges a candidate on the stitched network."""
    saved = copy.deepcopy(graph.model.state_dict())
    try:
        plan = plan_from_scores(scores, {g: k for g, k in counts.items() if k < graph.groups[g].size})
        reconstruct_channels(graph, calibration, config, plan=plan, log=None)
        recalibrate_bn(graph.model, calibration.batches, calibration.forward)
        return calibration.mean_loss(graph.model)
    finally:
        graph.model.load_state_dict(saved)


def _repair_config(crit: Criterion) -> Reconstruction:
    """The reconstruction settings of the repair and the error curves: the layerwise criterion's own,
    else `REPAIR`."""
    config = getattr(crit, "config", None)
    return config if isinstance(config, Reconstruction) else REPAIR


def _save(out: Path, model: nn.Module, task: Task | None, result: StructuredResult) -> None:
    """pruned.pt (state dict + structure record, `record.py`) and report.json."""
    extra = {"task": task.record() if task is not None else {}, "task_name": task_name(task),
             "result": result.to_dict(), "pruning_history": result.pruning_history}
    save_pruned(out / "pruned.pt", model, extra)
    write_text_atomic(json.dumps(result.to_dict(), indent=2, default=str), out / "report.json")


def _full_plan(graph: ChannelGraph, counts: Mapping[str, int]) -> dict[str, Tensor]:
    """Any plan with these counts (the first k channels): enough to evaluate costs."""
    plan = {}
    for g, k in counts.items():
        keep = torch.zeros(graph.groups[g].size, dtype=torch.bool)
        keep[:k] = True
        plan[g] = keep
    return plan


def _tp_kept(size: int, ratio: float, round_to: int | None) -> int:
    """Channels Torch-Pruning's local pruning keeps of `size` at `ratio` (base_pruner's arithmetic)."""
    kept = int(size * (1 - ratio))
    if round_to:
        kept = kept - kept % round_to
        return min(size, max(kept, round_to))
    return max(kept, 1)


def torch_pruning_baseline(model: nn.Module, example_input: Tensor, *, flops_target: float | None = None,
                           params_target: float | None = None, ignored_layers: Iterable[nn.Module | str] = (),
                           importance: Any = None, round_to: int | None = None) -> dict[str, Any]:
    """Torch-Pruning's own pruning at the uniform ratio that meets the target, in place.

    Defaults are Torch-Pruning's: `GroupMagnitudeImportance(p=2)`, local (per-group) ranking,
    no channel rounding.  The ratio is found by bisection on the exact cost predicted for
    Torch-Pruning's channel arithmetic, then the real pruner runs once and its result is measured.
    """
    import torch_pruning as tp

    kind, target = _resolve_budget(flops_target, params_target, None)
    example = example_input.to(next(model.parameters()).device)
    graph = ChannelGraph(model, example[:1], ignored_layers)
    poly = graph.costs.polynomial(kind)
    total = polynomial_value(poly, {})
    sizes = graph.sizes()

    def cost(r: float) -> float:
        return polynomial_value(poly, {g: _tp_kept(s, r, round_to) / s for g, s in sizes.items()}) / total

    if cost(0.95) > target:
        raise ValueError(f"{kind} target {target} is out of reach for Torch-Pruning's uniform ratio (≤ 0.95)")
    lo, hi = 0.0, 0.95
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cost(mid) <= target:
            hi = mid
        else:
            lo = mid
    ratio = hi
    before = cost_summary(model, example)
    with model_mode(model, train=False):
        pruner = tp.pruner.MetaPruner(model, example[:1],
                                      importance=importance or tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=graph.ignored + graph.output_layers,
                                      round_to=round_to)
        pruner.step()
    after = cost_summary(model, example)
    return {"ratio": ratio, "predicted": cost(ratio), "kind": kind, "target": target,
            "costs": {"before": _totals(before), "after": _totals(after),
                      "macs_ratio": before["macs"] / max(1, after["macs"]),
                      "params_ratio": before["params"] / max(1, after["params"])},
            "pruning_history": pruner.pruning_history()}
