"""Sparsity sets and their exact Euclidean projections.

Every set S answers one question: which entries of a weight tensor survive the projection
Π_S(W) = argmin_{Z ∈ S} ‖W − Z‖_F.  For all the sets here the nearest point keeps the surviving
entries unchanged and zeroes the rest, so a projection is fully described by a boolean mask.

The top-k family (unstructured, filter, channel, column) keeps the k groups of largest energy;
N:M keeps the N largest of every M consecutive input weights; a kernel pattern keeps, in every
3×3 kernel, the allowed pattern that retains the most energy.  Ties are broken deterministically
in favour of the lower flat index, and the number of kept entries is always exactly the target.

`Projector` projects many tensors at once: on CUDA, all top-k segments of a model (per-layer or
global) are solved by one stable sort of packed (segment, score) keys instead of a kernel per
layer; on the CPU a per-segment selection (`kthvalue`, linear time) is faster and is used.
Both strategies return identical masks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from .errors import SpecError
from .registry import Registry

__all__ = [
    "FORMS",
    "register_form",
    "ConstraintSet",
    "TopKSet",
    "Unstructured",
    "Filter",
    "Channel",
    "Column",
    "NM",
    "Pattern",
    "KERNEL_PATTERNS",
    "Projector",
    "topk_mask",
    "segmented_topk_masks",
]


FORMS: Registry[ConstraintSet] = Registry("form", defaults={"global_budget": False})
"""Sparsity forms by name; an entry's options say what a rule passes: ratio and scope where the set has
them, and the form's own parameters (N:M's n and m, pattern's patterns) as the rule's `options`."""

SetT = TypeVar("SetT", bound="type[ConstraintSet]")


def register_form(name: str, **traits: Any) -> Callable[[SetT], SetT]:
    """Class decorator: register a `ConstraintSet` subclass as form `name`, which becomes its `form`
    (the registry key is the one place a form's name is written)."""

    def add(cls: SetT) -> SetT:
        cls.form = name
        return FORMS.register(name, cls, **traits)

    return add


def n_keep(ratio: float, n: int) -> int:
    """Entries (or groups) kept out of `n` at prune ratio `ratio`: n − round(ratio·n), at least 1."""
    return max(1, n - math.floor(ratio * n + 0.5))


def check_ratio(ratio: float, where: str) -> float:
    """`ratio` as a float in [0, 1): any real number (NumPy scalars included), never a bool or NaN."""
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool):
        raise SpecError(f"{where}: prune ratio {ratio!r} is a {type(ratio).__name__}, not a number in [0, 1); "
                        "give the fraction of weights to remove, e.g. 0.9 keeps 10%")
    if not 0.0 <= float(ratio) < 1.0:
        raise SpecError(
            f"{where}: prune ratio {float(ratio)!r} is outside [0, 1); give the fraction of weights to "
            "remove, e.g. 0.9 keeps 10%"
        )
    return float(ratio)


@dataclass(frozen=True)
class ConstraintSet:
    """A sparsity set S; subclasses define `mask(w)`, the support of Π_S(w)."""

    form = "base"
    """The form's name, set from its registry key by `register_form`."""

    def validate(self, name: str, shape: torch.Size) -> None:
        """Raise `SpecError` when a tensor called `name` of this shape cannot lie in the set."""
        if len(shape) < 2:
            raise SpecError(f"{name}: {self.form} pruning needs a weight of 2+ dims, got {tuple(shape)}")

    def mask(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def project(self, w: Tensor) -> Tensor:
        """Π_S(w): the nearest point of the set."""
        return w * self.mask(w)

    def contains(self, w: Tensor) -> bool:
        """True when w already lies in the set (its projection changes nothing)."""
        return bool(torch.equal(self.project(w), w))

    def scaled(self, fraction: float) -> ConstraintSet:
        """The same set at `fraction` of the prune ratio (gradual pruning); fixed sets return self."""
        return self

    def kept(self, shape: torch.Size) -> int:
        """Number of entries the projection keeps for a tensor of this shape."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The form as tables name it: its name, plus its own parameters that differ from their
        defaults (ratio, scope and budget are shown elsewhere)."""
        own = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
               if f.name not in ("ratio", "scope", "budget") and getattr(self, f.name) != f.default]
        return f"{self.form}({', '.join(own)})" if own else self.form


@dataclass(frozen=True)
class TopKSet(ConstraintSet):
    """Keep the k groups of largest energy, k = n_groups − round(ratio · n_groups).

    `scope="global"` puts every tensor whose set has the same form and `budget` key into one
    budget with one threshold (equal sets share by meaning, not by object identity); a global
    budget keeps at least one group in every tensor.
    """

    ratio: float = 0.0
    scope: str = "layer"
    budget: str = "global"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio, f"{self.form} set"))
        if self.scope not in ("layer", "global"):
            raise SpecError(f"scope {self.scope!r} is not one of 'layer', 'global'")

    def scores(self, w: Tensor) -> Tensor:
        """One non-negative score per group, flattened; larger means more worth keeping."""
        raise NotImplementedError

    def expand(self, group_mask: Tensor, shape: torch.Size) -> Tensor:
        """Broadcast a per-group mask back to the weight's shape."""
        raise NotImplementedError

    def n_groups(self, shape: torch.Size) -> int:
        raise NotImplementedError

    def group_size(self, shape: torch.Size) -> int:
        return math.prod(shape) // self.n_groups(shape)

    def mask(self, w: Tensor) -> Tensor:
        scores = self.scores(w)
        return self.expand(topk_mask(scores, n_keep(self.ratio, scores.numel())), w.shape)

    def kept(self, shape: torch.Size) -> int:
        return n_keep(self.ratio, self.n_groups(shape)) * self.group_size(shape)

    def scaled(self, fraction: float) -> TopKSet:
        return replace(self, ratio=self.ratio * fraction)  # keeps a form's own parameters


@register_form("unstructured", global_budget=True)
@dataclass(frozen=True)
class Unstructured(TopKSet):
    """card(W) ≤ k: keep the k entries of largest magnitude."""

    def validate(self, name: str, shape: torch.Size) -> None:
        if len(shape) < 1:
            raise SpecError(f"{name}: cannot prune a scalar")

    def scores(self, w: Tensor) -> Tensor:
        return w.detach().abs().flatten()

    def expand(self, group_mask: Tensor, shape: torch.Size) -> Tensor:
        return group_mask.view(shape)

    def n_groups(self, shape: torch.Size) -> int:
        return math.prod(shape)


@register_form("filter")
@dataclass(frozen=True)
class Filter(TopKSet):
    """At most k non-zero output filters (rows of W viewed as out × rest)."""

    def scores(self, w: Tensor) -> Tensor:
        return w.detach().flatten(1).pow(2).sum(1)

    def expand(self, group_mask: Tensor, shape: torch.Size) -> Tensor:
        return group_mask.view(-1, *([1] * (len(shape) - 1))).expand(shape)

    def n_groups(self, shape: torch.Size) -> int:
        return shape[0]


@register_form("channel")
@dataclass(frozen=True)
class Channel(TopKSet):
    """At most k non-zero input channels (dim 1 of the weight)."""

    def scores(self, w: Tensor) -> Tensor:
        return w.detach().transpose(0, 1).flatten(1).pow(2).sum(1)

    def expand(self, group_mask: Tensor, shape: torch.Size) -> Tensor:
        return group_mask.view(1, -1, *([1] * (len(shape) - 2))).expand(shape)

    def n_groups(self, shape: torch.Size) -> int:
        return shape[1]


@register_form("column")
@dataclass(frozen=True)
class Column(TopKSet):
    """At most k non-zero columns of W viewed as out × (in·kh·kw) (the GEMM's K dimension)."""

    def scores(self, w: Tensor) -> Tensor:
        return w.detach().flatten(1).pow(2).sum(0)

    def expand(self, group_mask: Tensor, shape: torch.Size) -> Tensor:
        return group_mask.view(1, -1).expand(shape[0], -1).reshape(shape)

    def n_groups(self, shape: torch.Size) -> int:
        return math.prod(shape[1:])


@register_form("nm")
@dataclass(frozen=True)
class NM(ConstraintSet):
    """N:M sparsity along the input dimension: at most N non-zeros in every M consecutive inputs.

    For a conv weight (out, in, kh, kw) the groups run along `in` at each (out, kh, kw), the
    layout sparse tensor cores use for the GEMM's reduction dimension.
    """

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 0 < self.n < self.m):
            raise SpecError(f"N:M needs integers 0 < N < M, got {self.n}:{self.m}")

    def validate(self, name: str, shape: torch.Size) -> None:
        super().validate(name, shape)
        if shape[1] % self.m:
            raise SpecError(
                f"{name}: {self.n}:{self.m} sparsity groups the input dimension in blocks of "
                f"{self.m}, but it has {shape[1]} inputs (shape {tuple(shape)}); use an M that "
                f"divides {shape[1]} or exclude this parameter"
            )

    def mask(self, w: Tensor) -> Tensor:
        moved = w.detach().abs().movedim(1, -1)
        groups = moved.reshape(*moved.shape[:-1], -1, self.m)
        order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, order[..., : self.n], True)
        return keep.reshape(moved.shape).movedim(-1, 1)

    def kept(self, shape: torch.Size) -> int:
        return math.prod(shape) // self.m * self.n

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}"


# The 13 kernel patterns of the SLR authors' pattern pruning: the zeroed positions of a 3×3 kernel
# in row-major order (5 of 9 weights kept).
KERNEL_PATTERNS: tuple[tuple[int, ...], ...] = (
    (0, 2, 6, 8), (0, 1, 7, 8), (0, 1, 6, 7), (0, 1, 3, 4), (2, 3, 5, 6), (0, 3, 5, 8),
    (1, 2, 6, 7), (1, 2, 7, 8), (3, 5, 6, 8), (0, 2, 3, 5), (4, 5, 7, 8), (3, 4, 6, 7),
    (1, 2, 4, 5),
)  # fmt: skip


@register_form("pattern")
@dataclass(frozen=True)
class Pattern(ConstraintSet):
    """Every 3×3 kernel follows one of `patterns` (each lists the positions it zeroes).

    The projection picks per kernel the pattern keeping the most energy Σ w² (first pattern on
    ties) and zeroes its positions; it is exact because the set is a union of subspaces.
    """

    patterns: tuple[tuple[int, ...], ...] = field(default=KERNEL_PATTERNS)

    def __post_init__(self) -> None:
        sizes = {9 - len(set(p)) for p in self.patterns}
        if not self.patterns or len(sizes) != 1 or any(not 0 <= i < 9 for p in self.patterns for i in p):
            raise SpecError("kernel patterns must be non-empty, zero positions in 0..8, equal sizes")

    def validate(self, name: str, shape: torch.Size) -> None:
        if len(shape) != 4 or tuple(shape[2:]) != (3, 3):
            raise SpecError(f"{name}: pattern pruning needs 3×3 conv kernels, got shape {tuple(shape)}")

    def keep_matrix(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        keep = torch.ones(len(self.patterns), 9, device=device, dtype=dtype)
        for row, zeros in enumerate(self.patterns):
            keep[row, list(zeros)] = 0
        return keep

    def mask(self, w: Tensor) -> Tensor:
        kernels = w.detach().reshape(-1, 9)
        keep = self.keep_matrix(w.device, kernels.dtype)
        best = (kernels.pow(2) @ keep.T).argmax(dim=1)  # argmax returns the first maximum
        return keep[best].bool().view(w.shape)

    def kept(self, shape: torch.Size) -> int:
        return math.prod(shape) // 9 * (9 - len(set(self.patterns[0])))


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k largest entries of a 1-D tensor, ties to the lower index.

    Linear time: the k-th largest value by selection, everything above it, then the first
    ties in index order until exactly k are kept.
    """
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = scores.kthvalue(n - k + 1).values
    above = scores > threshold
    ties = scores == threshold
    need = k - above.sum()
    if not scores.is_cuda and int(need) == int(ties.sum()):  # no tie to split: skip the scan
        return above | ties
    return above | (ties & (ties.cumsum(0) <= need))


def segmented_topk_masks(segments: Sequence[Tensor], ks: Sequence[int], strategy: str = "auto") -> list[Tensor]:
    """Top-k masks of many 1-D score vectors at once (same tie rule as `topk_mask`).

    strategy "sort" packs (segment id, descending score bits) into one int64 key per entry and
    runs a single stable sort, so the cost is one device-wide sort whatever the number of
    segments; "loop" selects per segment; "auto" sorts on CUDA and loops elsewhere.  Scores must
    be non-negative; float32 keys need float32-representable scores, so float64 loops.
    """
    if strategy == "auto":
        on_cuda = bool(segments) and segments[0].is_cuda
        strategy = "sort" if on_cuda and segments[0].dtype != torch.float64 else "loop"
    if strategy == "loop":
        return [topk_mask(s, k) for s, k in zip(segments, ks, strict=True)]
    if strategy != "sort":
        raise ValueError(f"strategy {strategy!r} is not one of 'auto', 'sort', 'loop'")
    device = segments[0].device
    lengths = torch.tensor([s.numel() for s in segments], device=device)
    # + 0.0 turns -0.0 (a valid zero score) into +0.0; its sign bit would overflow the segment id.
    flat = torch.cat([s.float() for s in segments]) + 0.0
    segment_of = torch.repeat_interleave(torch.arange(len(segments), device=device), lengths)
    # Non-negative float32 bit patterns order like the floats; subtracting from 0x7FFFFFFF makes
    # the ascending sort descending in score within each segment.
    key = (segment_of << 31) | (0x7FFFFFFF - flat.view(torch.int32).to(torch.int64))
    order = torch.sort(key, stable=True).indices
    starts = torch.cumsum(lengths, 0) - lengths
    rank = torch.arange(flat.numel(), device=device) - starts[segment_of]
    keep_sorted = rank < torch.tensor(list(ks), device=device)[segment_of]
    keep = torch.empty_like(keep_sorted)
    keep[order] = keep_sorted
    return list(keep.split(lengths.tolist()))


def _one_group_each(keep: Tensor, scores: Tensor, sizes: list[int]) -> Tensor:
    """A global budget's mask with at least one kept group per tensor, the total unchanged: an
    emptied tensor keeps its best group in place of the weakest kept group of a tensor that
    keeps more than one (ties to the lower index)."""
    counts_t = torch.stack([part.sum() for part in keep.split(sizes)])
    if not bool((counts_t == 0).any()):  # the common case: one device sync, no copy
        return keep
    counts = counts_t.tolist()
    if sum(counts) < len(sizes):
        return keep
    keep = keep.clone()
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for i, count in enumerate(counts):
        if count:
            continue
        keep[starts[i] + int(torch.argmax(scores[starts[i]:starts[i] + sizes[i]]))] = True
        donors = torch.zeros_like(keep)
        for j, c in enumerate(counts):
            if c > 1:
                donors[starts[j]:starts[j] + sizes[j]] = True
        candidates = (keep & donors).nonzero().flatten()
        weakest = candidates[torch.argmin(scores[candidates])]
        keep[weakest] = False
        owner = max(j for j in range(len(sizes)) if starts[j] <= int(weakest))
        counts[owner] -= 1
        counts[i] = 1
    return keep


class Projector:
    """Projects a model's prunable tensors onto their sets, all at once.

    `sets` maps a parameter name to its set; names whose `TopKSet`s have scope "global", the
    same form and the same `budget` key form a single budget (one threshold across those
    tensors; their ratios must agree).
    """

    def __init__(self, sets: Mapping[str, ConstraintSet], strategy: str = "auto"):
        self.sets = dict(sets)
        self.strategy = strategy
        self._topk: list[tuple[TopKSet, list[str]]] = []
        self._direct: list[str] = []
        shared: dict[tuple[str, str], tuple[TopKSet, list[str]]] = {}
        for name, s in self.sets.items():
            if isinstance(s, TopKSet) and s.scope == "global":
                key = (s.form, s.budget)
                first = shared.setdefault(key, (s, []))
                if first[0].ratio != s.ratio:
                    raise SpecError(f"global {s.form} budget {s.budget!r}: {name} asks for ratio {s.ratio}, another "
                                    f"member for {first[0].ratio}; give each ratio its own budget key")
                first[1].append(name)
                if len(first[1]) == 1:
                    self._topk.append(first)
            elif isinstance(s, TopKSet):
                self._topk.append((s, [name]))
            else:
                self._direct.append(name)

    def names(self) -> list[str]:
        return list(self.sets)

    def masks(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The support of Π_S for every tensor: name → bool mask of the tensor's shape."""
        bad = [n for n, t in tensors.items() if n in self.sets and not torch.isfinite(t).all()]
        if bad:
            raise FloatingPointError(
                f"cannot project {', '.join(bad)}: the tensor holds NaN or Inf; training diverged "
                "(lower the learning rate or rho)"
            )
        segments, ks = [], []
        for s, names in self._topk:
            scores = torch.cat([s.scores(tensors[n]) for n in names])
            segments.append(scores)
            ks.append(n_keep(s.ratio, scores.numel()))
        out: dict[str, Tensor] = {}
        if segments:
            masks = segmented_topk_masks(segments, ks, self.strategy)
            for (s, names), keep, scores in zip(self._topk, masks, segments, strict=True):
                sizes = [s.n_groups(tensors[n].shape) for n in names]
                if len(names) > 1:
                    keep = _one_group_each(keep, scores, sizes)
                for n, part in zip(names, keep.split(sizes), strict=True):
                    out[n] = s.expand(part, tensors[n].shape)
        for n in self._direct:
            out[n] = self.sets[n].mask(tensors[n])
        return {n: out[n] for n in self.sets}

    def project(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Π_S applied to every tensor (new tensors; the inputs are not changed)."""
        return {n: tensors[n] * m for n, m in self.masks(tensors).items()}

    def scaled(self, fraction: float) -> Projector:
        """The same projector at `fraction` of every prune ratio (shared budgets stay shared)."""
        copies: dict[int, ConstraintSet] = {}
        sets = {n: copies.setdefault(id(s), s.scaled(fraction)) for n, s in self.sets.items()}
        return Projector(sets, self.strategy)

    def kept(self, shapes: Mapping[str, torch.Size]) -> dict[str, int | None]:
        """Entries each tensor keeps; None for members of a global budget (data-dependent)."""
        return {
            n: None if isinstance(s, TopKSet) and s.scope == "global" else s.kept(shapes[n])
            for n, s in self.sets.items()
        }
