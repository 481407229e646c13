"""Per-group channel budgets under a FLOPs (MACs) or parameter target.

The cost of a model after structured pruning is a polynomial in the keep fractions x_g of its
channel groups: a conv's MACs scale with (kept outputs)·(kept inputs), so
cost(x) = Σ_t c_t Π_{g ∈ t} x_g with c_t ≥ 0 (`slr_prune.structured.CostModel.polynomial`).

- `allocate_uniform`: one keep fraction for every group, the largest whose rounded channel counts
  meet the target (bisection; rounded counts grow monotonically with the fraction).
- `allocate_convex`: per-group fractions from a convex program.  With y_g = log x_g the cost is
  Σ c_t exp(Σ y_g), a sum of exponentials of affine functions, hence convex, so the budget
  constraint is exact and convex.  The objective is the estimated loss increase Σ_g s_g(y_g),
  where s_g is the lower convex envelope (in log keep) of measured sensitivities: the loss rise
  when group g alone keeps a fraction x of its channels (additivity across groups is the model's
  assumption, as in the linear-filter-ensemble criterion).  cvxpy solves it (exponential cone).
  The continuous solution is rounded to allowed counts, then repaired greedily (cheapest
  estimated loss per saved cost) until the budget holds, and filled greedily while it allows.
- `counts_from_ratios`: explicit per-layer ratios by glob.

Allowed counts are multiples of `round_to` (channel counts the hardware runs well; see
docs/structured.md) plus the full size, never below `min_keep` of the group.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Allocation", "allowed_counts", "allocate_uniform", "allocate_convex", "counts_from_ratios",
    "convex_envelope", "polynomial_value",
]

Monomials = Mapping[tuple[str, ...], float]


@dataclass
class Allocation:
    """Channels to keep per group, and what the allocation predicted."""

    counts: dict[str, int]
    method: str
    kind: str
    target: float
    predicted: float  # cost after rounding, as a fraction of the dense cost
    fractions: dict[str, float] = field(default_factory=dict)  # continuous solution (convex)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def polynomial_value(poly: Monomials, fractions: Mapping[str, float]) -> float:
    """Σ c Π x_g at keep fractions x (groups absent from `fractions` are whole)."""
    total = 0.0
    for key, c in poly.items():
        v = c
        for g in key:
            v *= fractions.get(g, 1.0)
        total += v
    return total


def allowed_counts(size: int, round_to: int = 1, min_keep: float = 0.0) -> list[int]:
    """Channel counts a group of `size` may keep: multiples of `round_to` ≥ min_keep·size, and size."""
    if not (isinstance(round_to, int) and round_to >= 1):
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    if not 0.0 <= min_keep <= 1.0:
        raise ValueError(f"min_keep must lie in [0, 1], got {min_keep!r}")
    lo = max(1, math.ceil(min_keep * size - 1e-9))
    counts = [c for c in range(round_to, size + 1, round_to) if c >= lo]
    if size not in counts:
        counts.append(size)
    return counts


def _nearest(value: float, allowed: Sequence[int]) -> int:
    return min(allowed, key=lambda c: (abs(c - value), -c))


def _check_target(target: float, kind: str) -> None:
    if not (isinstance(target, int | float) and 0.0 < target <= 1.0):
        raise ValueError(f"{kind} target {target!r} must be the fraction of the dense cost to keep, in (0, 1]; "
                         "e.g. 0.5 keeps half the MACs (2× fewer)")


def _fractions(counts: Mapping[str, int], sizes: Mapping[str, int]) -> dict[str, float]:
    return {g: counts[g] / sizes[g] for g in counts}


def allocate_uniform(sizes: Mapping[str, int], poly: Monomials, target: float, kind: str = "macs",
                     round_to: int = 1, min_keep: float = 0.1) -> Allocation:
    """The same keep fraction for every group: the largest whose rounded counts meet `target`."""
    _check_target(target, kind)
    total = polynomial_value(poly, {})
    allowed = {g: allowed_counts(s, round_to, min_keep) for g, s in sizes.items()}

    def counts_at(x: float) -> dict[str, int]:
        return {g: _nearest(x * sizes[g], allowed[g]) for g in sizes}

    def cost(counts: Mapping[str, int]) -> float:
        return polynomial_value(poly, _fractions(counts, sizes)) / total

    floor = cost(counts_at(0.0))
    if floor > target + 1e-12:
        raise ValueError(f"{kind} target {target} is out of reach: keeping the fewest channels allowed "
                         f"(min_keep {min_keep}, round_to {round_to}) still costs {floor:.3f} of the dense model")
    lo, hi = 0.0, 1.0
    if cost(counts_at(1.0)) <= target:
        lo = 1.0
    else:
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if cost(counts_at(mid)) <= target:
                lo = mid
            else:
                hi = mid
    counts = counts_at(lo)
    current = cost(counts)
    while True:  # rounding leaves budget: raise the least-kept group one step while it fits
        options = []
        for g in sizes:
            pos = allowed[g].index(counts[g])
            if pos + 1 < len(allowed[g]):
                trial = {**counts, g: allowed[g][pos + 1]}
                new = cost(trial)
                if new <= target + 1e-12:
                    options.append((trial[g] / sizes[g], g, trial, new))
        if not options:
            break
        _, _, counts, current = min(options, key=lambda o: (o[0], o[1]))
    return Allocation(counts, "uniform", kind, target, current, {g: lo for g in sizes},
                      {"keep_fraction": lo})


def convex_envelope(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower convex envelope of (keep fraction, loss increase) points in log-keep coordinates.

    Adds the point (1, 0) (nothing removed, nothing lost) and clamps increases below 0 (noise) to
    0.  Returns the affine pieces (slope, intercept) in y = log x; the envelope is their maximum.
    """
    pts = {0.0: 0.0}
    for x, d in points:
        if not 0 < x <= 1:
            raise ValueError(f"sensitivity point keep fraction {x!r} must lie in (0, 1]")
        y = math.log(x)
        pts[y] = min(pts.get(y, math.inf), max(0.0, float(d))) if y != 0.0 else 0.0
    xs = sorted(pts.items())
    hull: list[tuple[float, float]] = []
    for p in xs:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    if len(hull) == 1:
        return [(0.0, hull[0][1])]
    pieces = []
    for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False):
        slope = (y2 - y1) / (x2 - x1)
        pieces.append((slope, y1 - slope * x1))
    return pieces


def _envelope_value(pieces: Sequence[tuple[float, float]], y: float) -> float:
    return max(s * y + b for s, b in pieces)


CostOf = Callable[[Mapping[str, int]], float]
LossOf = Callable[[str, int], float]


def allocate_convex(sizes: Mapping[str, int], poly: Monomials, target: float,
                    sensitivity: Mapping[str, Sequence[tuple[float, float]]], kind: str = "macs",
                    round_to: int = 1, min_keep: float = 0.1, solver: str | None = None) -> Allocation:
    """Per-group keep fractions minimising the estimated loss rise subject to the cost target."""
    _check_target(target, kind)
    names = list(sizes)
    missing = [g for g in names if g not in sensitivity]
    if missing:
        raise ValueError(f"no sensitivity estimate for groups {missing[:5]}; measure every group")
    total = polynomial_value(poly, {})
    allowed = {g: allowed_counts(sizes[g], round_to, min_keep) for g in names}
    floor_counts = {g: allowed[g][0] for g in names}
    floor = polynomial_value(poly, _fractions(floor_counts, sizes)) / total
    if floor > target + 1e-12:
        raise ValueError(f"{kind} target {target} is out of reach: keeping the fewest channels allowed "
                         f"(min_keep {min_keep}, round_to {round_to}) still costs {floor:.3f} of the dense model")
    envelopes = {g: convex_envelope(sensitivity[g]) for g in names}
    lower = {g: floor_counts[g] / sizes[g] for g in names}
    fractions, problem = _solve_keep_fractions(poly, total, target, envelopes, lower, solver)

    def cost_of(counts: Mapping[str, int]) -> float:
        return polynomial_value(poly, _fractions(counts, sizes)) / total

    def loss_of(g: str, count: int) -> float:
        return _envelope_value(envelopes[g], math.log(count / sizes[g]))

    counts = {g: _nearest(fractions[g] * sizes[g], allowed[g]) for g in names}
    counts, current = _repair(counts, allowed, target, cost_of, loss_of)
    counts, current = _fill(counts, current, allowed, target, cost_of, loss_of)
    info = {"status": problem.status, "solver": problem.solver_stats.solver_name if problem.solver_stats else None,
            "estimated_loss_increase": sum(loss_of(g, counts[g]) for g in names),
            "continuous_cost": cost_of(fractions_to_counts_free(fractions, sizes))}
    return Allocation(counts, "convex", kind, target, current, fractions, info)


def _exponent_rows(poly: Monomials, index: Mapping[str, int], total: float) -> tuple[float, list[Any], list[float]]:
    """The cost posynomial in log keep y: (constant, one 0/1 exponent row per monomial, its coefficient
    over the dense cost), so cost = Σ coef·exp(row·y) + constant / total."""
    import numpy as np

    const, rows, coefs = 0.0, [], []
    for key, c in poly.items():
        if c < -1e-9 * total:
            raise ValueError(f"cost polynomial has a negative coefficient {c} for {key}; it must be a posynomial")
        if not key:
            const += c
            continue
        row = np.zeros(len(index))
        for g in key:
            if g in index:
                row[index[g]] += 1
        rows.append(row)
        coefs.append(max(c, 0.0) / total)
    return const, rows, coefs


def _solve_keep_fractions(poly: Monomials, total: float, target: float,
                          envelopes: Mapping[str, Sequence[tuple[float, float]]], lower: Mapping[str, float],
                          solver: str | None) -> tuple[dict[str, float], Any]:
    """The convex program in y = log x: minimise Σ envelope_g(y_g) subject to cost(exp y) ≤ target
    and lower_g ≤ x_g ≤ 1; returns the keep fractions and the solved cvxpy problem."""
    import cvxpy as cp
    import numpy as np

    names = list(envelopes)
    index = {g: i for i, g in enumerate(names)}
    const, rows, coefs = _exponent_rows(poly, index, total)
    y = cp.Variable(len(names))
    t = cp.Variable(len(names))
    cost = np.array(coefs) @ cp.exp(np.array(rows) @ y) + const / total
    constraints = [cost <= target, y >= np.log([lower[g] for g in names]), y <= 0]
    for g, pieces in envelopes.items():
        for s, b in pieces:
            constraints.append(t[index[g]] >= s * y[index[g]] + b)
    # a tiny reward for keeping channels breaks ties where the envelopes are flat
    scale = max(1e-9, max(abs(b) for pieces in envelopes.values() for _, b in pieces))
    problem = cp.Problem(cp.Minimize(cp.sum(t) - 1e-6 * scale * cp.sum(y)), constraints)
    problem.solve(solver=solver)
    if y.value is None:
        raise RuntimeError(f"cvxpy could not solve the allocation program (status {problem.status})")
    return {g: float(math.exp(min(0.0, y.value[index[g]]))) for g in names}, problem


def _repair(counts: dict[str, int], allowed: Mapping[str, list[int]], target: float, cost_of: CostOf,
            loss_of: LossOf) -> tuple[dict[str, int], float]:
    """Step groups down one allowed count at a time, cheapest estimated loss per unit of saved cost
    first, until the rounded counts meet the target (or nothing can shrink)."""
    current = cost_of(counts)
    while current > target + 1e-12:
        best = None
        for g in counts:
            pos = allowed[g].index(counts[g])
            if pos == 0:
                continue
            trial = {**counts, g: allowed[g][pos - 1]}
            saved = current - cost_of(trial)
            if saved <= 0:
                continue
            score = (loss_of(g, trial[g]) - loss_of(g, counts[g])) / saved
            if best is None or score < best[0]:
                best = (score, g, trial)
        if best is None:
            break
        counts = best[2]
        current = cost_of(counts)
    return counts, current


def _fill(counts: dict[str, int], current: float, allowed: Mapping[str, list[int]], target: float,
          cost_of: CostOf, loss_of: LossOf) -> tuple[dict[str, int], float]:
    """Step groups up one allowed count at a time, largest estimated loss reduction per unit of added
    cost first, while the target still holds."""
    while True:
        best = None
        for g in counts:
            pos = allowed[g].index(counts[g])
            if pos + 1 >= len(allowed[g]):
                continue
            trial = {**counts, g: allowed[g][pos + 1]}
            new = cost_of(trial)
            if new > target + 1e-12:
                continue
            gain = (loss_of(g, counts[g]) - loss_of(g, trial[g])) / max(new - current, 1e-15)
            if best is None or gain > best[0]:
                best = (gain, g, trial, new)
        if best is None:
            break
        counts, current = best[2], best[3]
    return counts, current


def fractions_to_counts_free(fractions: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
    """Unrounded 'counts' x_g·size_g (for reporting the continuous optimum's cost)."""
    return {g: fractions[g] * sizes[g] for g in fractions}


def counts_from_ratios(sizes: Mapping[str, int], ratios: Mapping[str, float],
                       member_names: Mapping[str, Sequence[str]] | None = None,
                       round_to: int = 1) -> dict[str, int]:
    """Counts from per-layer prune ratios keyed by globs over group or layer names (first match wins).

    A glob matches a group when it matches the group's name (its root layer) or the name of any
    layer in it; groups no glob matches stay whole.  Every glob must match some group.
    """
    from .sets import check_ratio

    counts: dict[str, int] = {}
    used = set()
    for g, size in sizes.items():
        names = [g, *(member_names or {}).get(g, [])]
        for glob_, ratio in ratios.items():
            if any(fnmatch.fnmatchcase(n, glob_) for n in names):
                check_ratio(ratio, f"ratio for {glob_!r}")
                counts[g] = _nearest((1.0 - ratio) * size, allowed_counts(size, round_to, 0.0))
                used.add(glob_)
                break
    unused = [k for k in ratios if k not in used]
    if unused:
        raise ValueError(f"per-layer ratios {unused} match no prunable group; groups are named by their root "
                         f"layer, e.g. {', '.join(list(sizes)[:4])}")
    return counts
