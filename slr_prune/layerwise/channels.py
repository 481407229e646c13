"""Channel selection as one layer-wise problem over every layer that reads a channel group.

Removing channel c of a group zeroes, in every layer that consumes the group (a residual stream
feeds several blocks and a shortcut conv), the weight columns that read c; so the consumers share
one channel support:

    min Σ_L f_L(W′_L) / f_L(0)   over W′ whose columns read at most k of the group's channels,

f_L(W′) = ‖X_L(W′ − W_L)ᵀ‖² the consumer's output error on its calibration inputs (ThiNet and
He et al., ICCV 2017, in the layer-wise form of problem.py).  Dividing by f_L(0), the consumer's
output energy, makes every consumer count by its relative error.  The consumers are stacked as the
groups of one `LayerProblem`, padded to common rows and columns (padding is outside the support and
stays zero), and `SharedChannels` is the exact projection onto the shared support: keep the k
channels of largest squared weight summed over all consumers.  So every layer solver that takes any
form (slr, admm, magnitude) and `refit` apply unchanged; obs, which handles unstructured and N:M
only, is refused by `check_form`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..sets import ConstraintSet, topk_mask
from .calibration import flat_weight, groups_of
from .config import PRECISIONS, Reconstruction
from .problem import LayerProblem, damped
from .solvers import LayerSolver, check_form

__all__ = ["Consumer", "SharedChannels", "ChannelSolution", "consumer_columns", "solve_channels", "refit_columns",
           "FREE", "PAD"]

FREE = -2
"""A column that reads a channel of another group (or none): always in the support."""
PAD = -1
"""A padding column of the stacked problem: never in the support."""


def consumer_columns(module: nn.Module, idxs: Tensor, channels: Tensor) -> Tensor:
    """For each weight column of `module` (as `flat_weight` lays it out), the group channel it reads,
    or FREE; `idxs` are the module's input channels (input features of a Linear) that carry the
    group's `channels`."""
    if groups_of(module) != 1:
        raise ValueError(f"a grouped convolution ({type(module).__name__} with groups={groups_of(module)}) reads "
                         "this channel group; channel reconstruction covers consumers with groups=1 (depthwise "
                         "convs are pruned with the group, not as consumers)")
    weight = module.weight
    per_input = weight[0, 0].numel() if weight.dim() > 2 else 1  # kernel positions per input channel
    of_input = torch.full((weight.shape[1],), FREE, dtype=torch.long)
    of_input[idxs.cpu()] = channels.cpu()
    return of_input.repeat_interleave(per_input)


@dataclass
class Consumer:
    """One layer that reads the group: its name, module, column → channel map, its Gram matrix and
    the weights whose output on these inputs it should reproduce (None: its own)."""

    name: str
    module: nn.Module
    columns: Tensor
    H: Tensor  # (1, d, d) float64, from layer_grams
    target: Tensor | None = None  # (rows, d) float64

    def reference(self) -> Tensor:
        """The weights W of the problem min ‖X(W′ − W)ᵀ‖², as (rows, d) in float64."""
        return self.target if self.target is not None else flat_weight(self.module)[0].to(torch.float64)


@dataclass(frozen=True, eq=False)
class SharedChannels(ConstraintSet):
    """Keep `keep` of a group's `size` channels in every stacked consumer at once.

    `columns` (groups, d): the channel each column reads (FREE: always kept, PAD: never);
    `rows` (groups, r): which rows are real.  The mask of W is the exact Euclidean projection's
    support: the `keep` channels of largest summed squared weight (ties to the lower index)."""

    columns: Tensor
    rows: Tensor
    size: int
    keep: int
    form = "channel"

    def scores(self, w: Tensor) -> Tensor:
        """Summed squared weight of each channel over every consumer and row."""
        energy = w.detach().pow(2).sum(-2)
        cols = self.columns.to(w.device)
        inside = cols >= 0
        return torch.zeros(self.size, dtype=energy.dtype, device=w.device).index_add_(0, cols[inside],
                                                                                      energy[inside])

    def expand(self, chosen: Tensor) -> Tensor:
        """The stacked support of a channel keep vector."""
        cols = self.columns.to(chosen.device)
        keep = torch.where(cols >= 0, chosen[cols.clamp_min(0)], cols == FREE)
        return keep.unsqueeze(-2) & self.rows.to(chosen.device).unsqueeze(-1)

    def mask(self, w: Tensor) -> Tensor:
        return self.expand(topk_mask(self.scores(w), self.keep))

    def chosen(self, mask: Tensor) -> Tensor:
        """The channel keep vector of a stacked support."""
        cols = self.columns.to(mask.device)
        inside = cols >= 0
        hits = torch.zeros(self.size, dtype=torch.long, device=mask.device)
        hits.index_add_(0, cols[inside], mask.any(-2)[inside].long())
        return hits > 0

    def kept(self, shape: torch.Size) -> int:
        return int(self.expand(torch.arange(self.size) < self.keep).sum())


@dataclass
class ChannelSolution:
    """The kept channels, each consumer's new weight (its own shape) and the relative output errors."""

    keep: Tensor
    weights: list[Tensor]
    error_projection: float
    error: float
    errors: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _stacked(consumers: Sequence[Consumer], damping: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(W, H, columns, rows) of the stacked problem; each H damped, then divided by the consumer's
    output energy tr(W H Wᵀ) so that its objective is a relative error."""
    weights = [c.reference() for c in consumers]
    g, r, d = len(consumers), max(w.shape[0] for w in weights), max(w.shape[1] for w in weights)
    device = weights[0].device
    W = torch.zeros(g, r, d, dtype=torch.float64, device=device)
    H = torch.eye(d, dtype=torch.float64, device=device).repeat(g, 1, 1)
    columns = torch.full((g, d), PAD, dtype=torch.long)
    rows = torch.zeros(g, r, dtype=torch.bool)
    for i, (c, w) in enumerate(zip(consumers, weights, strict=True)):
        h = damped(c.H.to(device), damping)[0]
        energy = float(((w @ h) * w).sum())
        rw, dw = w.shape
        W[i, :rw, :dw] = w
        H[i, :dw, :dw] = h / energy if energy > 0 else h
        columns[i, :dw] = c.columns
        rows[i, :rw] = True
    return W, H, columns, rows


def _relative_errors(consumers: Sequence[Consumer], new: Tensor) -> list[float]:
    """Each consumer's ‖X(W′ − W)ᵀ‖² / ‖XWᵀ‖² on its undamped H."""
    out = []
    for i, c in enumerate(consumers):
        w = c.reference()
        h = c.H[0].to(w.device)
        delta = new[i, :w.shape[0], :w.shape[1]].to(torch.float64) - w
        base = float(((w @ h) * w).sum()) or 1.0
        out.append(float(((delta @ h) * delta).sum()) / base)
    return out


def refit_columns(problem: LayerProblem, mask: Tensor) -> Tensor:
    """argmin f(W′) with support in `mask` when every row of a group keeps the same columns (a
    channel support): one Cholesky solve per group, W′_K = (W H)_K H_KK⁻¹, exact where `refit`'s
    conjugate gradients iterate over every row (O(d³ + rows·d²) instead of iterations × rows·d²)."""
    out = torch.zeros_like(problem.W)
    for g in range(problem.W.shape[0]):
        cols = mask[g].any(0).nonzero().flatten()
        rows = mask[g].any(1).nonzero().flatten()
        if cols.numel() == 0 or rows.numel() == 0:
            continue
        H, W = problem.H[g], problem.W[g][rows]
        rhs = (W @ H[:, cols]).T  # (k, rows)
        L = torch.linalg.cholesky(H[cols][:, cols])
        out[g, rows[:, None], cols[None, :]] = torch.cholesky_solve(rhs, L).T
    return out


@torch.no_grad()
def solve_channels(consumers: Sequence[Consumer], size: int, keep: int | Tensor, config: Reconstruction,
                   solver: LayerSolver | None = None) -> ChannelSolution:
    """Choose `keep` channels (a count: by `solver`; a bool vector: given) and re-fit the consumers.

    The weights are not written; `ChannelSolution.weights` holds them.  With a count, the solver's
    support is re-fitted by least squares when `config.refit`; a given support always is (the
    repair of another criterion's choice)."""
    if not consumers:
        raise ValueError("a channel group needs at least one consumer layer to reconstruct")
    W, H, columns, rows = _stacked(consumers, config.damping)
    fixed = isinstance(keep, Tensor)
    count = int(keep.sum()) if fixed else int(keep)
    sets = SharedChannels(columns, rows, size, count)
    dtype = PRECISIONS[config.precision]
    problem = LayerProblem(W.to(dtype), H.to(dtype), sets, W.shape)
    info: dict[str, Any] = {}
    if fixed:
        mask = sets.expand(keep.bool().to(W.device))
        new = refit_columns(problem, mask)
    else:
        solver = solver or config.build_solver()
        check_form(config.solver, consumers[0].name, sets)
        new, mask, info = solver.solve(problem)
        if config.refit:
            new = refit_columns(problem, mask)
    projection = _relative_errors(consumers, W * problem.project_mask(W))
    errors = _relative_errors(consumers, new)
    weights = [new[i, :c.module.weight.shape[0], :c.module.weight[0].numel()]
               .reshape(c.module.weight.shape).to(c.module.weight.dtype) for i, c in enumerate(consumers)]
    n = len(consumers)
    return ChannelSolution(sets.chosen(mask).cpu(), weights, sum(projection) / n, sum(errors) / n,
                           {c.name: e for c, e in zip(consumers, errors, strict=True)}, info)
