"""Non-uniform per-layer ratios for unstructured pruning: the rules of `ALLOCATIONS`.

A rule turns the overall budget of the spec's unstructured sets (the weights they keep together,
so the overall fraction of zeros is the spec's) into per-layer kept counts that add up to exactly
that budget; `allocate` then replaces the sets by per-layer `Unstructured` sets at those ratios,
so every method (slr, admm, magnitude, layerwise) prunes with them.

- `uniform`: the sets as given (every layer at its own ratio).
- `global`: one magnitude threshold across layers; no layer pruned beyond `max_ratio` (each
  keeps its largest weights up to that floor first, the rest of the budget goes by magnitude).
- `lamp` (Lee et al., ICLR 2021): score w² / Σ of the w² at least as large in the same layer, one
  global threshold on the scores.
- `erk` (Evci et al., RigL): density ∝ (Σ dims)/(Π dims) of the weight's shape, scaled to the
  budget; layers that would exceed density 1 stay dense and the others are re-scaled.
- `curves`: each layer's relative output error at a grid of ratios from the dense network
  (engine/error_database.py, cached in the run folder); a knapsack DP minimises Σ err^γ under the
  budget, a greedy fill along the piecewise-linear curves spends what the grid leaves, and the
  candidates (one per γ) are scored SPDY-style on the calibration loss of the stitched model
  (each layer's solved weights at its chosen grid ratio, BatchNorm re-estimated); the best wins.

Every rule returns per-layer kept counts and what it measured; `AllocationRecord` is what a run
reports.  Bad input is refused by `check_allocation` before any compute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import is_int, option
from ..errors import SpecError
from ..evaluate import bn_state_kept, recalibrate_task_bn
from ..layerwise import LAYER_SOLVERS, Reconstruction
from ..registry import Entry, Registry
from ..sets import ConstraintSet, TopKSet, Unstructured, n_keep
from ..task import Task
from ..utils import model_mode, weights_set_to
from .error_database import ErrorDatabase, build_database
from .reconstruct import check_reconstruction, per_layer_sets

__all__ = ["ALLOCATIONS", "AllocationContext", "AllocationRecord", "allocate", "check_allocation",
           "allocation_options", "GlobalOptions", "CurvesOptions", "knapsack", "fill", "GRID"]

Rule = Callable[..., tuple[dict[str, int], dict[str, Any]]]
"""rule(model, sets, budget, context, options) → (kept count per layer, adding up to budget; what it measured)."""

ALLOCATIONS: Registry[Rule] = Registry("allocation", defaults={"needs_task": False, "reallocates": True})
"""Allocation rules by name; an entry's options are its options dataclass; traits `needs_task`
(the rule runs the model on the task's calibration batches) and `reallocates` (False: the sets
stay as given, whatever their form)."""

GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
"""The default ratios `curves` measures every layer at (ratio 0, the dense layer, at error 0, is implied)."""
DP_RESOLUTION = 20_000
"""The knapsack's budget is counted in units of ceil(budget / DP_RESOLUTION) weights (exact below it)."""


@dataclass
class AllocationContext:
    """What a rule may use beyond the weights: the task, where to run, the layer-wise settings
    (`curves`), the run folder for its database, and where lines go."""

    task: Task | None = None
    device: torch.device | None = None
    seed: int = 0
    reconstruction: Reconstruction = field(default_factory=Reconstruction)
    folder: Path | None = None
    resume: bool = False
    log: Callable[[str], None] | None = print


@dataclass
class AllocationRecord:
    """What an allocation chose and measured; `to_dict()` goes into the run's result."""

    rule: str
    options: dict[str, Any]
    target: float
    sparsity: float
    ratios: dict[str, float]
    kept: dict[str, int]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NoOptions:
    """A rule without options."""


@dataclass(frozen=True)
class GlobalOptions:
    """`global`: the per-layer cap."""

    max_ratio: float = option(0.99, "allocation global: no layer is pruned beyond this ratio (what it cannot "
                                    "take goes to the others)", flag="allocation-cap")

    def __post_init__(self) -> None:
        if not (isinstance(self.max_ratio, int | float) and not isinstance(self.max_ratio, bool)
                and 0.0 < self.max_ratio < 1.0):
            raise SpecError(f"allocation cap (max_ratio) must be a ratio in (0, 1), got {self.max_ratio!r}")


@dataclass(frozen=True)
class CurvesOptions:
    """`curves`: the grid of ratios, the layer solver's iterations for the database, the candidates' γ."""

    grid: tuple[float, ...] = option(GRID, "allocation curves: the ratios every layer's error is measured at "
                                           "(comma-separated, in (0, 1))", flag="allocation-grid")
    iterations: int = option(50, "allocation curves: iterations of the layer solver (slr, admm) for the "
                                 "database", flag="allocation-iterations")
    gammas: tuple[float, ...] = option((0.5, 1.0, 2.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _ratios(self.grid, "allocation grid"))
        object.__setattr__(self, "gammas", _numbers(self.gammas, "allocation gammas"))
        if not (is_int(self.iterations) and self.iterations >= 1):
            raise SpecError(f"allocation iterations must be an integer ≥ 1, got {self.iterations!r}")


def _numbers(values: Any, what: str) -> tuple[float, ...]:
    """`values` (a sequence, or a comma-separated string) as positive floats."""
    items = values.split(",") if isinstance(values, str) else list(values)
    out = []
    for v in items:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise SpecError(f"{what}: {v!r} is not a number") from None
        if not (math.isfinite(x) and x > 0):
            raise SpecError(f"{what}: {v!r} must be a finite number > 0")
        out.append(x)
    if not out:
        raise SpecError(f"{what} is empty; give at least one value")
    return tuple(sorted(set(out)))


def _ratios(values: Any, what: str) -> tuple[float, ...]:
    out = _numbers(values, what)
    bad = [r for r in out if not r < 1.0]
    if bad:
        raise SpecError(f"{what}: ratio {bad[0]!r} is outside (0, 1); a layer keeps at least one weight")
    return out


def register_allocation(name: str, options: type = NoOptions, *, help: str, **traits: Any) -> Callable[[Rule], Rule]:
    """Decorator: register `rule` as allocation `name` with its options dataclass and traits."""

    def add(rule: Rule) -> Rule:
        return ALLOCATIONS.register(name, rule, help=help, config=options, **traits)

    return add


# ---- checks, budget and the one entry point ---------------------------------------------------
def allocation_options(rule: str, options: Mapping[str, Any] | Any = None) -> tuple[Entry[Rule], Any]:
    """(registry entry, its options dataclass) for `rule` and a mapping (or the dataclass itself);
    an unknown rule or option is refused with the valid names."""
    entry = ALLOCATIONS.get(rule)
    if isinstance(options, entry.options):
        return entry, options
    try:
        return entry, entry.options(**entry.check_options(dict(options or {})))
    except TypeError as e:
        raise SpecError(f"allocation {rule!r}: {e}") from e


def check_allocation(rule: str, options: Mapping[str, Any] | Any, sets: Mapping[str, ConstraintSet],
                     model: nn.Module, reconstruction: Reconstruction | None = None,
                     task: Task | None = None) -> tuple[Entry[Rule], Any]:
    """Refuse, before any compute, what `rule` cannot do with these sets (SpecError, one line);
    returns (entry, options)."""
    entry, opts = allocation_options(rule, options)
    if not entry.traits["reallocates"]:
        return entry, opts
    for name, s in sets.items():
        if isinstance(s, TopKSet) and s.scope == "global":
            raise SpecError(f"allocation {rule!r} replaces the global budget's one threshold with its own "
                            f"per-layer ratios ({name} is in a global budget); give one of them, not both")
        if type(s) is not Unstructured:
            raise SpecError(f"allocation {rule!r} needs unstructured sets; {name} is {s.label}: use "
                            "--form unstructured, or --allocation uniform")
    if not sets:
        raise SpecError(f"allocation {rule!r}: the spec prunes no tensor")
    sizes = _sizes(sets, model)
    budget = sum(s.kept(torch.Size(shape)) for s, shape in zip(sets.values(), _shapes(sets, model), strict=True))
    target = 1.0 - budget / sum(sizes.values())
    if isinstance(opts, GlobalOptions) and opts.max_ratio < target:
        raise SpecError(f"allocation 'global': the cap {opts.max_ratio:g} is below the overall target "
                        f"{target:.4g}: every layer would have to exceed it; raise --allocation-cap")
    if isinstance(opts, CurvesOptions):
        floor = sum(n_keep(max(opts.grid), n) for n in sizes.values())
        if floor > budget:
            raise SpecError(f"allocation 'curves': the target {target:.4g} lies above the largest grid ratio "
                            f"{max(opts.grid):g}, so no choice of grid ratios meets it; add a larger ratio "
                            "to --allocation-grid")
        if reconstruction is not None:
            check_reconstruction(model, sets, reconstruction)
    if entry.traits["needs_task"] and task is None:
        raise SpecError(f"allocation {rule!r} needs the task (its calibration batches)")
    return entry, opts


def _shapes(sets: Mapping[str, ConstraintSet], model: nn.Module) -> list[torch.Size]:
    params = dict(model.named_parameters())
    return [params[n].shape for n in sets]


def _sizes(sets: Mapping[str, ConstraintSet], model: nn.Module) -> dict[str, int]:
    return {n: math.prod(shape) for n, shape in zip(sets, _shapes(sets, model), strict=True)}


def allocate(model: nn.Module, sets: Mapping[str, ConstraintSet], rule: str = "uniform",
             options: Mapping[str, Any] | Any = None,
             context: AllocationContext | None = None) -> tuple[dict[str, ConstraintSet], AllocationRecord]:
    """Per-layer sets from `rule` at the overall budget of `sets` (see the module doc); returns
    (the new sets, the record).  A rule that needs the task gets it from `context`."""
    context = context or AllocationContext()
    entry, opts = check_allocation(rule, options, sets, model, context.reconstruction, context.task)
    start = time.perf_counter()
    params = dict(model.named_parameters())
    sizes = _sizes(sets, model)
    layered = per_layer_sets(sets, _weights(model, sets))
    budget = sum(s.kept(params[n].shape) for n, s in layered.items())
    target = 1.0 - budget / sum(sizes.values())
    kept, info = entry.build(model, sets, budget, context, opts)
    if sum(kept.values()) != budget or any(not 1 <= kept[n] <= sizes[n] for n in sets):
        raise RuntimeError(f"allocation {rule!r} kept {sum(kept.values())} weights for a budget of {budget}")
    out = {n: Unstructured(ratio=(sizes[n] - kept[n]) / sizes[n]) for n in sets} if entry.traits["reallocates"] \
        else dict(sets)
    ratios = {n: 1.0 - kept[n] / sizes[n] for n in sets}
    record = AllocationRecord(rule, asdict(opts), target, 1.0 - sum(kept.values()) / sum(sizes.values()),
                              ratios, kept, time.perf_counter() - start, info)
    if context.log and entry.traits["reallocates"]:
        context.log(f"allocation {rule}: {100 * record.sparsity:.2f}% of {sum(sizes.values())} weights pruned "
                    f"over {len(sets)} layers")
        for n in sets:
            context.log(f"  {n} ({sizes[n]} weights): {100 * ratios[n]:.2f}% pruned")
    return out, record


# ---- shared selection and rounding ------------------------------------------------------------
def _top_counts(scores: Sequence[Tensor], budget: int, floors: Sequence[int]) -> list[int]:
    """How many of each layer's scores are kept when every layer first keeps its `floors` best
    ones and the rest of `budget` goes to the largest remaining scores across layers."""
    counts = list(floors)
    left = budget - sum(floors)
    if left <= 0:
        return counts
    rest, owners = [], []
    for i, (s, f) in enumerate(zip(scores, floors, strict=True)):
        ordered = s.flatten().double().sort(descending=True).values[f:]
        rest.append(ordered)
        owners.append(torch.full((ordered.numel(),), i, dtype=torch.long, device=ordered.device))
    chosen = torch.topk(torch.cat(rest), left).indices
    extra = torch.bincount(torch.cat(owners)[chosen], minlength=len(scores)).tolist()
    return [c + e for c, e in zip(counts, extra, strict=True)]


def _rounded(values: Sequence[float], sizes: Sequence[int], budget: int) -> list[int]:
    """Integer counts in [1, size] adding up to `budget`, nearest to `values` (largest remainders)."""
    counts = [min(max(1, math.floor(v)), n) for v, n in zip(values, sizes, strict=True)]
    order = sorted(range(len(values)), key=lambda i: -(values[i] - math.floor(values[i])))
    while sum(counts) != budget:
        step = 1 if sum(counts) < budget else -1
        moved = False
        for i in order:
            if sum(counts) == budget:
                break
            if 1 <= counts[i] + step <= sizes[i]:
                counts[i] += step
                moved = True
        if not moved:
            raise RuntimeError(f"cannot round {len(values)} layer counts to a budget of {budget}")
    return counts


# ---- the weight-only rules --------------------------------------------------------------------
def _weights(model: nn.Module, sets: Mapping[str, ConstraintSet]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in sets}


@register_allocation("uniform", help="the sets as the spec gives them (any form; every layer at its own ratio)",
                     reallocates=False)
def uniform(model: nn.Module, sets: Mapping[str, ConstraintSet], budget: int, context: AllocationContext,
            options: NoOptions) -> tuple[dict[str, int], dict[str, Any]]:
    """Each layer's own count (a global budget's by its threshold)."""
    weights = _weights(model, sets)
    return {n: s.kept(weights[n].shape) for n, s in per_layer_sets(sets, weights).items()}, {}


@register_allocation("global", GlobalOptions, help="one magnitude threshold across layers, no layer past a cap")
def global_magnitude(model: nn.Module, sets: Mapping[str, ConstraintSet], budget: int, context: AllocationContext,
                     options: GlobalOptions) -> tuple[dict[str, int], dict[str, Any]]:
    """Every layer keeps its largest weights down to the cap, then the budget's rest by magnitude."""
    weights = _weights(model, sets)
    floors = [n_keep(options.max_ratio, w.numel()) for w in weights.values()]
    if sum(floors) > budget:
        raise SpecError(f"allocation 'global': the cap {options.max_ratio:g} keeps {sum(floors)} weights, more "
                        f"than the budget's {budget}; raise --allocation-cap")
    counts = _top_counts([w.abs() for w in weights.values()], budget, floors)
    return dict(zip(weights, counts, strict=True)), {"capped": sum(c == f for c, f in zip(counts, floors, strict=True))}


def lamp_scores(w: Tensor) -> Tensor:
    """LAMP: w_i² / Σ_{j : |w_j| ≥ |w_i|} w_j², flattened (ties ordered as the sort leaves them)."""
    sq = w.detach().double().flatten().square()
    ordered, index = sq.sort()
    tail = ordered.flip(0).cumsum(0).flip(0)  # Σ of the weights at least as large, in sorted order
    scores = torch.empty_like(sq)
    scores[index] = ordered / tail.clamp_min(torch.finfo(sq.dtype).tiny)
    return scores


@register_allocation("lamp", help="LAMP (Lee et al., ICLR 2021): layer-normalised magnitude scores, one threshold")
def lamp(model: nn.Module, sets: Mapping[str, ConstraintSet], budget: int, context: AllocationContext,
         options: NoOptions) -> tuple[dict[str, int], dict[str, Any]]:
    weights = _weights(model, sets)
    counts = _top_counts([lamp_scores(w) for w in weights.values()], budget, [1] * len(weights))
    return dict(zip(weights, counts, strict=True)), {}


def erk_densities(shapes: Sequence[Sequence[int]], budget: int) -> list[float]:
    """ERK densities: ε·(Σ dims)/(Π dims) meeting `budget` kept weights, layers capped at 1 (iterated)."""
    sizes = [math.prod(s) for s in shapes]
    dense: set[int] = set()
    while True:
        free = budget - sum(sizes[i] for i in dense)
        scale = free / sum(sum(shapes[i]) for i in range(len(shapes)) if i not in dense)
        over = {i for i in range(len(shapes)) if i not in dense and scale * sum(shapes[i]) / sizes[i] >= 1.0}
        if not over:
            return [1.0 if i in dense else scale * sum(shapes[i]) / sizes[i] for i in range(len(shapes))]
        dense |= over


@register_allocation("erk", help="ERK (Evci et al., RigL): density from the layer's shape, (Σ dims)/(Π dims)")
def erk(model: nn.Module, sets: Mapping[str, ConstraintSet], budget: int, context: AllocationContext,
        options: NoOptions) -> tuple[dict[str, int], dict[str, Any]]:
    weights = _weights(model, sets)
    shapes = [list(w.shape) for w in weights.values()]
    densities = erk_densities(shapes, budget)
    sizes = [w.numel() for w in weights.values()]
    counts = _rounded([d * n for d, n in zip(densities, sizes, strict=True)], sizes, budget)
    return dict(zip(weights, counts, strict=True)), {"dense_layers": sum(d >= 1.0 for d in densities)}


# ---- error curves ---------------------------------------------------------------------------------
def knapsack(costs: Sequence[Sequence[int]], errors: Sequence[Sequence[float]], budget: int,
             resolution: int = DP_RESOLUTION) -> list[int]:
    """The option per layer minimising Σ errors with Σ costs ≤ budget (dynamic programming).

    Costs are counted in units of ceil(budget / resolution), each rounded up, so the choice always
    fits; exact when the budget is at most `resolution`.  Raises ValueError when nothing fits."""
    unit = max(1, math.ceil(budget / resolution))
    cap = budget // unit
    scaled = [[math.ceil(c / unit) for c in row] for row in costs]
    best = np.zeros(cap + 1)  # least error within cost ≤ b of the layers so far
    choice = np.zeros((len(costs), cap + 1), dtype=np.int64)
    for layer, (row, errs) in enumerate(zip(scaled, errors, strict=True)):
        new = np.full(cap + 1, np.inf)
        for j, (c, e) in enumerate(zip(row, errs, strict=True)):
            if c > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[c:] = best[: cap + 1 - c] + e
            better = cand < new
            new[better] = cand[better]
            choice[layer, better] = j
        best = new
    if not np.isfinite(best[cap]):
        raise ValueError(f"no choice of options fits a budget of {budget}")
    picked, b = [0] * len(costs), cap
    for layer in range(len(costs) - 1, -1, -1):
        picked[layer] = int(choice[layer, b])
        b -= scaled[layer][picked[layer]]
    return picked


def fill(points: Sequence[Sequence[tuple[int, float]]], picked: Sequence[int], budget: int) -> list[int]:
    """Kept counts from the chosen points, raised along the piecewise-linear (kept, error) curves
    until they add up to `budget`: each step goes to the steepest error decrease per weight."""
    curves = [sorted(p) for p in points]
    kept = [points[i][j][0] for i, j in enumerate(picked)]
    left = budget - sum(kept)
    while left > 0:
        best = None
        for i, curve in enumerate(curves):
            nxt = next(((k, e) for k, e in curve if k > kept[i]), None)
            if nxt is None:
                continue
            here = float(np.interp(kept[i], *zip(*curve, strict=True)))
            slope = (here - nxt[1]) / (nxt[0] - kept[i])
            if best is None or slope > best[0]:
                best = (slope, i, nxt[0])
        if best is None:
            break
        _, i, upto = best
        step = min(left, upto - kept[i])
        kept[i] += step
        left -= step
    return kept


@register_allocation("curves", CurvesOptions, needs_task=True,
                     help="error curves: each layer solved at a grid of ratios on the dense network, "
                          "a DP under the budget, candidates scored on the stitched model")
def curves(model: nn.Module, sets: Mapping[str, ConstraintSet], budget: int, context: AllocationContext,
           options: CurvesOptions) -> tuple[dict[str, int], dict[str, Any]]:
    task = context.task
    assert task is not None  # check_allocation refused it
    device = context.device or next(model.parameters()).device
    config = database_reconstruction(context.reconstruction, options.iterations)
    path = context.folder / "allocation.pt" if context.folder is not None else None
    db = build_database(model, task, list(sets), options.grid, config, device=device, seed=context.seed,
                        path=path, resume=context.resume, log=context.log)
    names = list(sets)
    points = [db.curves[n].points() for n in names]
    costs = [[k for k, _ in p] for p in points]
    start = time.perf_counter()
    candidates, scored = [], {}
    for gamma in options.gammas:
        picked = knapsack(costs, [[e ** gamma for _, e in p] for p in points], budget)
        key = tuple(picked)
        if key not in scored:
            scored[key] = _stitched_loss(model, context, db, names, picked, config.calibration_batches, device)
        kept = fill(points, picked, budget)
        candidates.append({"gamma": gamma, "loss": scored[key], "error": sum(points[i][j][1] for i, j in
                                                                             enumerate(picked)),
                           "kept": dict(zip(names, kept, strict=True))})
    best = min(candidates, key=lambda c: c["loss"])
    if context.log:
        context.log("allocation curves: calibration loss of the stitched model per candidate: " +
                    ", ".join(f"γ {c['gamma']:g}: {c['loss']:.4f}" for c in candidates) + f"; γ {best['gamma']:g} kept")
    info = {"database_seconds": db.seconds, "database_layers_solved": db.solved, "grid": list(options.grid),
            "search_seconds": time.perf_counter() - start, "gamma": best["gamma"],
            "candidates": [{k: v for k, v in c.items() if k != "kept"} for c in candidates],
            "errors": {n: dict(zip(map(str, db.curves[n].ratios), db.curves[n].errors, strict=True)) for n in names},
            "reconstruction": config.fingerprint()}
    return best["kept"], info


def database_reconstruction(config: Reconstruction, iterations: int) -> Reconstruction:
    """The reconstruction the database solves with: `config` with the layer solver's iterations cut
    to `iterations` where the solver iterates (slr, admm)."""
    fields_ = LAYER_SOLVERS.get(config.solver).options.__dataclass_fields__
    if "iterations" not in fields_:
        return config
    return replace(config, options={**config.options, "iterations": iterations})


@torch.no_grad()
def _stitched_loss(model: nn.Module, context: AllocationContext, db: ErrorDatabase, names: Sequence[str],
                   picked: Sequence[int], batches: int, device: torch.device) -> float:
    """The task's mean loss on the calibration batches with every layer's solved weights at its
    chosen grid ratio (the dense weights where the dense point was chosen), BatchNorm re-estimated
    on the same batches; the model is left as it was."""
    task = context.task
    assert task is not None
    params = dict(model.named_parameters())
    chosen = [(n, db.curves[n].ratios[j - 1]) for n, j in zip(names, picked, strict=True) if j > 0]
    targets = [params[n] for n, _ in chosen]
    values = [db.curves[n].weights[r].to(params[n].device, params[n].dtype) for n, r in chosen]
    with weights_set_to(targets, values), bn_state_kept(model):
        recalibrate_task_bn(task, model, device, batches, context.seed)
        with model_mode(model, train=False):
            losses = [float(task.loss(model, b, device)) for b in task.calibration_batches(batches, context.seed)]
    return sum(losses) / len(losses)
