"""Channel removal without retraining: each group's channels chosen and its consumers re-fitted
by layer-wise reconstruction, and the `layerwise` criterion that does it.

`reconstruct_channels` visits the groups of a `ChannelGraph` in the order the forward pass first
reads them.  For each group it computes the Gram matrices of the group's consumers from the
network *as already pruned* (earlier groups zeroed, their consumers re-fitted), then either
chooses the kept channels with a layer solver on the consumers' joint problem
(layerwise/channels.py: SLR by default, ADMM, or the projection) or takes them from a plan (the
repair of any other criterion's choice), re-fits every consumer by least squares on the kept
columns, writes the new weights and zeroes the group's removed filters and their BatchNorm affine
parameters (`ChannelGraph.zero_pruned_`, which equals removal).  The workflow then removes the
channels for real and re-estimates BatchNorm.

`channel_error_curves` is the allocation's database: each group's relative consumer error at a
grid of keep fractions, solved on the dense network, the sensitivities `allocate_convex` takes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..layerwise import Reconstruction, flat_weight, full_passes, layer_grams
from ..layerwise.calibration import Pass, calibration_mode, cross_grams
from ..layerwise.channels import ChannelSolution, Consumer, consumer_columns, solve_channels
from ..layerwise.config import CALIBRATION_BATCHES, DAMPING
from ..layerwise.problem import dense_reference
from ..layerwise.solvers import LAYER_SOLVERS, check_form
from .criteria import Calibration, Criterion, register_criterion
from .surgery import CONV_LINEAR, ChannelGraph, ChannelGroup

__all__ = ["reconstruct_channels", "channel_error_curves", "group_order", "LayerwiseChannels", "REPAIR"]

REPAIR = Reconstruction()
"""The repair of another criterion's choice: least squares to the dense network's output (measured:
ResNet-20 on the digits at 2× fewer MACs, l1 + repair 96.9% with the dense target, 91.1% with the
consumers' own weights; one seed)."""


def _passes(graph: ChannelGraph, calibration: Calibration) -> Iterator[Pass]:
    return full_passes(graph.model, calibration.batches, calibration.forward)


@torch.no_grad()
def group_order(graph: ChannelGraph, calibration: Calibration) -> list[str]:
    """Group names in the order the forward pass first calls one of their consumers."""
    order: dict[int, int] = {}
    handles = []
    for module in graph.model.modules():
        if isinstance(module, CONV_LINEAR):
            def hook(mod: nn.Module, args: Any, key: int = id(module)) -> None:
                order.setdefault(key, len(order))
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with calibration_mode(graph.model, batch_stats=False):
            calibration.forward(graph.model, calibration.batches[0])
    finally:
        for h in handles:
            h.remove()

    def first(group: ChannelGroup) -> int:
        seen = [order[id(m.module)] for m in group.members if m.role == "consumer" and id(m.module) in order]
        if not seen:
            raise ValueError(f"channel group {group.name!r}: the forward pass never calls a layer that reads it")
        return min(seen)

    return sorted(graph.groups, key=lambda name: first(graph.groups[name]))


def _consumers(graph: ChannelGraph, name: str, calibration: Calibration, config: Reconstruction,
               dense: nn.Module | None = None) -> list[Consumer]:
    """The group's consumer layers with their column maps and Grams from the network as it is now;
    with `dense`, each consumer's target is the weight that reproduces the dense network's output
    (W Bᵀ (H + δI)⁻¹, `cross_grams`) instead of its own weight on the pruned inputs."""
    members = [m for m in graph.groups[name].members if m.role == "consumer"]
    modules = [m.module for m in members]
    if dense is None:
        grams = layer_grams(graph.model, modules, _passes(graph, calibration), config.batch_stats)
        return [Consumer(m.name, m.module, consumer_columns(m.module, m.idxs, m.root_idxs), H)
                for m, (H, _) in zip(members, grams, strict=True)]
    crosses = cross_grams(graph.model, dense, modules, [dense.get_submodule(m.name) for m in members],
                          calibration.batches, calibration.forward, config.batch_stats)
    out = []
    for m, (H, B, _) in zip(members, crosses, strict=True):
        target = dense_reference(flat_weight(dense.get_submodule(m.name)).to(torch.float64), H, B, config.damping)[0]
        out.append(Consumer(m.name, m.module, consumer_columns(m.module, m.idxs, m.root_idxs), H, target))
    return out


@torch.no_grad()
def reconstruct_channels(graph: ChannelGraph, calibration: Calibration, config: Reconstruction, *,
                         counts: Mapping[str, int] | None = None, plan: Mapping[str, Tensor] | None = None,
                         log: Callable[[str], None] | None = print) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Choose (from `counts`, by the layer solver) or take (`plan`) each group's kept channels,
    re-fit its consumers and zero its removed filters, in place; returns (plan, per-group records).
    Groups absent from counts/plan, or keeping every channel, are left whole.  `config.target`
    "dense": every consumer reproduces the dense network's output (so the errors of earlier groups
    are corrected); "current": its own weights on the inputs of the network as pruned so far."""
    if (counts is None) == (plan is None):
        raise ValueError("give exactly one of counts (the solver chooses) or plan (given channels)")
    targets: dict[str, int | Tensor] = dict(plan if plan is not None else counts)  # type: ignore[arg-type]
    solver = config.build_solver() if plan is None else None
    names = [n for n in group_order(graph, calibration) if n in targets]
    dense = copy.deepcopy(graph.model) if config.target == "dense" else None
    out: dict[str, Tensor] = {}
    records: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        size, goal = graph.groups[name].size, targets[name]
        kept = int(goal.sum()) if isinstance(goal, Tensor) else int(goal)
        if kept >= size:
            continue
        start = time.perf_counter()
        consumers = _consumers(graph, name, calibration, config, dense)
        solution = solve_channels(consumers, size, targets[name], config, solver)
        for c, w in zip(consumers, solution.weights, strict=True):
            c.module.weight.copy_(w)
        out[name] = solution.keep
        graph.zero_pruned_({name: solution.keep})
        record = _record(name, consumers, solution, kept, size, time.perf_counter() - start)
        records.append(record)
        if log:
            log(f"group {i + 1}/{len(names)} {name}: keep {kept}/{size} channels, {len(consumers)} consumer(s); "
                f"output error {record['error_projection']:.4f} (projection) → {record['error']:.4f} "
                f"({'given + lstsq' if plan is not None else config.solver + (' + lstsq' if config.refit else '')}), "
                f"{record['seconds']:.1f} s")
    return out, records


def _record(name: str, consumers: Sequence[Consumer], solution: ChannelSolution, kept: int, size: int,
            seconds: float) -> dict[str, Any]:
    return {"group": name, "kept": kept, "size": size, "consumers": [c.name for c in consumers],
            "error_projection": solution.error_projection, "error": solution.error, "errors": solution.errors,
            "seconds": seconds, **solution.info}


@torch.no_grad()
def channel_error_curves(graph: ChannelGraph, calibration: Calibration, config: Reconstruction,
                         counts: Mapping[str, Sequence[int]],
                         log: Callable[[str], None] | None = print) -> dict[str, list[tuple[float, float]]]:
    """{group: [(keep fraction, relative consumer error)]}: each group alone pruned to each count
    by the layer solver (re-fitted when `config.refit`), on the dense network; weights untouched."""
    solver = config.build_solver()
    out: dict[str, list[tuple[float, float]]] = {}
    for i, (name, ks) in enumerate(counts.items()):
        start = time.perf_counter()
        size = graph.groups[name].size
        consumers = _consumers(graph, name, calibration, config)
        points = [(k / size, solve_channels(consumers, size, k, config, solver).error) for k in ks if k < size]
        out[name] = points
        if log:
            log(f"error curve {i + 1}/{len(counts)} {name}: {len(points)} levels, {time.perf_counter() - start:.1f} s")
    return out


@register_criterion("layerwise", help="zero epochs: channels chosen by the layer solver on the consumers' "
                    "reconstruction (ThiNet / He et al. in layer-wise form), consumers re-fitted by least squares")
class LayerwiseChannels(Criterion):
    """Channels chosen group by group with a layer solver on the joint reconstruction problem of the
    group's consumers, the consumers re-fitted: the weights change in place, and the kept channels
    score 1, the removed 0 (so the workflow's top-k plan is the solver's)."""

    name = "layerwise"
    needs_data = True
    needs_counts = True
    reconstructs = True
    option_help = {"layer_solver": "layer-wise: the solver of each group's channel problem",
                   "damping": "layer-wise: relative damping of H = XᵀX",
                   "calibration_bn": "layer-wise: BatchNorm during calibration normalises by each batch's "
                                     "statistics or by the running ones",
                   "precision": "layer-wise: the dtype the layer solvers work in",
                   "target": "layer-wise: a re-fitted consumer reproduces the dense network's output, or its own "
                             "weights on the inputs of the network as pruned so far"}
    option_flags = {"target": "layer-target"}

    def __init__(self, layer_solver: str = "slr", damping: float = DAMPING, refit: bool = True,
                 calibration_bn: Literal["batch", "running"] = "batch",
                 precision: Literal["float64", "float32"] = "float64", target: Literal["dense", "current"] = "dense",
                 layer_options: Mapping[str, Any] | None = None):
        if calibration_bn not in ("batch", "running"):
            raise ValueError(f"calibration_bn must be 'batch' or 'running', got {calibration_bn!r}")
        self.config = Reconstruction(layer_solver, CALIBRATION_BATCHES, damping, refit, dict(layer_options or {}),
                                     calibration_bn == "batch", precision, target)
        forms = LAYER_SOLVERS.get(layer_solver).traits["forms"]
        if forms is not None:
            from ..sets import Channel

            check_form(layer_solver, "channel groups", Channel(0.5))
        self.records: list[dict[str, Any]] = []

    def scores(self, graph: ChannelGraph, calibration: Calibration | None = None,
               counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        calibration = self._need(calibration)
        if counts is None:
            raise ValueError("criterion 'layerwise' needs the per-group channel counts of the allocation")
        plan, self.records = reconstruct_channels(graph, calibration, self.config, counts=counts)
        return {name: (plan[name] if name in plan else torch.ones(g.size, dtype=torch.bool)).double()
                for name, g in graph.groups.items()}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **{k: v for k, v in self.config.fingerprint().items()
                                      if k != "calibration_batches"}}
