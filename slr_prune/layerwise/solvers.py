"""Layer solvers: min f(W′) over W′ ∈ S for one layer (problem.py), registered in LAYER_SOLVERS.

- `slr`: surrogate Lagrangian relaxation of the split W′ = Z, Z ∈ S.  The W-step is closed form
  from one eigendecomposition H = Q diag(e) Qᵀ, so the iterates live in the eigenbasis
  (V = W′Q): V = (2eV₀ − ΛQ + ρZQ) / (2e + ρ), two matrix products per iteration.  The Z-step is
  the exact projection Z = Π_S(W′ + Λ/ρ).  Each multiplier update Λ ← Λ + sρ(W′ − Z) is taken
  only when its surrogate optimality condition holds (the relaxed Lagrangian decreased), with
  SLR's step rule s ← α_k s g_last / g (solvers/slr.py).
- `admm`: the same splitting with ADMM's unguarded dual step Λ ← Λ + ρ(W′ − Z).
- `obs`: SparseGPT-style optimal brain surgeon in column blocks: each pruned weight's error is
  compensated on the columns not yet visited through the Cholesky factor of H⁻¹ (unstructured and
  N:M only).
- `magnitude`: the projection Π_S(W) alone.

Both splittings share the rest: by default (`normalize`) they run on the equivalent problem in
B = W′D, D = diag(H)^½, whose H has a unit diagonal (every sparsity set is a union of coordinate
subspaces, so the set and its exact projection carry over); ρ rises geometrically from `rho` to
`rho_end` over the iterations, so the support settles; the `candidates` distinct supports of
lowest f(Z) seen, and the last iterate's, are re-fitted by a short conjugate gradient and the best
is returned with those weights.  Every solver returns its weights and the support; the caller may
re-fit the weights on that support.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from ..config import Config, option
from ..errors import SpecError
from ..registry import Registry
from ..sets import NM, ConstraintSet, Unstructured
from ..solvers.slr import slr_alpha
from .problem import LayerProblem, refit

__all__ = ["LAYER_SOLVERS", "register_layer_solver", "LayerSolver", "check_form", "SplittingConfig",
           "SLRLayerConfig", "OBSLayerConfig"]

LAYER_SOLVERS: Registry[LayerSolver] = Registry("layer solver", defaults={"forms": None})
"""Layer solvers by name; an entry's options are the solver's `Config`; trait `forms`: the set
classes a solver handles (None: every form)."""

LayerT = TypeVar("LayerT", bound="type[LayerSolver]")


def register_layer_solver(name: str, *, help: str | None = None, **traits: Any) -> Callable[[LayerT], LayerT]:
    """Class decorator: register a `LayerSolver` subclass as `name`, its options being its `Config`."""

    def add(cls: LayerT) -> LayerT:
        return LAYER_SOLVERS.register(name, cls, help=help, config=cls.Config, **traits)

    return add


def check_form(solver: str, name: str, s: ConstraintSet) -> None:
    """SpecError when the layer solver `solver` cannot handle the set `s` of parameter `name`."""
    forms = LAYER_SOLVERS[solver].traits["forms"]
    if forms is not None and not isinstance(s, forms):
        valid = ", ".join(sorted(f.form for f in forms))
        others = ", ".join(repr(n) for n in LAYER_SOLVERS.list(forms=None))
        raise SpecError(f"{name}: layer solver {solver!r} handles the forms {valid}, not {s.form!r}; use "
                        f"layer solver {others} for it")


class LayerSolver:
    """Solves one LayerProblem; `solve` returns (W′ as (groups, rows, d), its support, info).

    Options are the class's `Config` (validated on construction): a config, or its fields as
    keyword arguments."""

    Config: ClassVar[type[Config]] = Config

    def __init__(self, config: Config | None = None, **options: Any):
        self.config = self.Config.given(config, options, type(self).__name__)

    def solve(self, problem: LayerProblem) -> tuple[Tensor, Tensor, dict[str, Any]]:
        raise NotImplementedError


@register_layer_solver("magnitude", help="the exact projection of the weights, no update")
class MagnitudeLayer(LayerSolver):

    def solve(self, problem: LayerProblem) -> tuple[Tensor, Tensor, dict[str, Any]]:
        mask = problem.project_mask(problem.W)
        return problem.W * mask, mask, {}


def _scaled(problem: LayerProblem) -> tuple[LayerProblem, Tensor]:
    """The problem in the variable B = W′D, D = diag(H)^½ per group (H's diagonal becomes 1), and D
    as (groups, 1, d).  Every sparsity set is a union of coordinate subspaces, so B ∈ S ⇔ W′ ∈ S and
    the exact projection of B is a step of the same method on an equivalent problem."""
    diag = torch.diagonal(problem.H, dim1=-2, dim2=-1)
    D = torch.where(diag > 0, diag.clamp_min(0).sqrt(), torch.ones_like(diag))
    H = problem.H / D.unsqueeze(-1) / D.unsqueeze(-2)
    D = D.unsqueeze(1)
    return LayerProblem(problem.W * D, H, problem.sets, problem.shape), D


@dataclass(frozen=True)
class SplittingConfig(Config):
    """Options of the W′ = Z splittings (SLR and ADMM layer solvers)."""

    iterations: int = option(200)
    rho: float = option(0.03)
    rho_end: float = option(3.0)
    candidates: int = option(3)
    normalize: bool = option(True)

    def __post_init__(self) -> None:
        iterations, rho, rho_end, candidates = self.iterations, self.rho, self.rho_end, self.candidates
        if not (isinstance(iterations, int) and iterations >= 1):
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        if not (isinstance(rho, int | float) and math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho must be a positive number, got {rho!r}")
        if not (isinstance(rho_end, int | float) and math.isfinite(rho_end) and rho_end >= rho):
            raise ValueError(f"rho_end must be a number ≥ rho ({rho}), got {rho_end!r}")
        if not (isinstance(candidates, int) and not isinstance(candidates, bool) and candidates >= 0):
            raise ValueError(f"candidates must be a non-negative integer (0: no candidate re-fits), got "
                             f"{candidates!r}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be true or false, got {self.normalize!r}")


class _Splitting(LayerSolver):
    """The W′ = Z splitting of SLR and ADMM; subclasses give the multiplier rule.

    With `normalize` the iteration runs on the diagonally scaled problem (`_scaled`), where one
    penalty ρ weighs every input alike.  The `candidates` distinct supports of lowest f(Z) and the
    last iterate's are re-fitted (a truncated conjugate gradient, `candidate_cg` steps, warm-started
    from Z) and the one of lowest objective is returned with those weights.
    """

    Config: ClassVar[type[Config]] = SplittingConfig
    candidate_cg = 30  # CG steps per candidate re-fit; the caller's re-fit continues from the winner

    def __init__(self, config: SplittingConfig | None = None, **options: Any):
        super().__init__(config, **options)
        c = self.config
        self.iterations, self.rho, self.rho_end = c.iterations, float(c.rho), float(c.rho_end)
        self.candidates, self.normalize = c.candidates, c.normalize

    def solve(self, problem: LayerProblem) -> tuple[Tensor, Tensor, dict[str, Any]]:
        scaled, D = _scaled(problem) if self.normalize else (problem, None)
        e, Q = scaled.eig()
        e = e.unsqueeze(1)  # (groups, 1, d): scales the columns of V
        V0 = scaled.W @ Q
        V0e2 = 2 * e * V0
        mask = scaled.project_mask(scaled.W)
        Z = scaled.W * mask
        ZQ = Z @ Q
        Lq = torch.zeros_like(ZQ)  # the multipliers Λ in the eigenbasis, ΛQ
        growth = (self.rho_end / self.rho) ** (1.0 / max(1, self.iterations - 1))
        self.begin(V0, e, ZQ)
        rho = self.rho
        # the distinct supports of lowest f(Z) so far, as (f, Z, mask), best first
        kept = [(float((e * (ZQ - V0) ** 2).sum()), Z, mask)]
        limit = max(1, self.candidates)
        for _ in range(self.iterations):
            V = (V0e2 - Lq + rho * ZQ) / (2 * e + rho)
            Lq = self.before_z(V, ZQ, Lq, rho)
            X = (V + Lq / rho) @ Q.transpose(-1, -2)
            mask = scaled.project_mask(X)
            Z = X * mask
            ZQ_new = Z @ Q
            Lq = self.after_z(V, ZQ, ZQ_new, Lq, rho)
            ZQ = ZQ_new
            rho *= growth
            f = float((e * (ZQ - V0) ** 2).sum())
            if len(kept) < limit or f < kept[-1][0]:
                same = next((i for i, c in enumerate(kept) if torch.equal(c[2], mask)), None)
                if same is None or f < kept[same][0]:
                    if same is not None:
                        del kept[same]
                    kept.append((f, Z, mask))
                    kept.sort(key=lambda c: c[0])
                    del kept[limit:]
        if self.candidates and not any(torch.equal(c[2], mask) for c in kept):
            kept.append((math.inf, Z, mask))
        unscale = (lambda T: T / D) if D is not None else (lambda T: T)
        if not self.candidates:
            return unscale(kept[0][1]), kept[0][2], self.info()
        best = None
        for i, (_, Zc, mc) in enumerate(kept):
            Wc = refit(problem, mc, unscale(Zc), iters=self.candidate_cg)
            fc = float(problem.objective(Wc))
            if best is None or fc < best[0]:
                best = (fc, Wc, mc, i)
        return best[1], best[2], {**self.info(), "candidate": best[3], "candidates": len(kept)}

    def begin(self, V0: Tensor, e: Tensor, ZQ: Tensor) -> None:
        pass

    def before_z(self, V: Tensor, ZQ: Tensor, Lq: Tensor, rho: float) -> Tensor:
        return Lq

    def after_z(self, V: Tensor, ZQ: Tensor, ZQ_new: Tensor, Lq: Tensor, rho: float) -> Tensor:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {}


@register_layer_solver("admm", help="ADMM on the layer's quadratic (dual step ρ)")
class ADMMLayer(_Splitting):

    def after_z(self, V: Tensor, ZQ: Tensor, ZQ_new: Tensor, Lq: Tensor, rho: float) -> Tensor:
        return Lq + rho * (V - ZQ_new)


@dataclass(frozen=True)
class SLRLayerConfig(SplittingConfig):
    """The SLR layer solver's options: the splitting's and SLR's step rule (s in units of ρ)."""

    M: float = option(300.0)
    r: float = option(0.1)
    s0: float = option(0.3)

    def __post_init__(self) -> None:
        super().__post_init__()
        M, r, s0 = self.M, self.r, self.s0
        if not (isinstance(M, int | float) and math.isfinite(M) and M > 1):
            raise ValueError(f"M must be a number > 1, got {M!r}")
        if not (isinstance(r, int | float) and 0 < r < 1):
            raise ValueError(f"r must lie in (0, 1), got {r!r}")
        if not (isinstance(s0, int | float) and math.isfinite(s0) and s0 > 0):
            raise ValueError(f"s0 must be a positive number, got {s0!r}")


@register_layer_solver("slr", help="surrogate Lagrangian relaxation on the layer's quadratic")
class SLRLayer(_Splitting):
    """SLR: guarded multiplier updates Λ ← Λ + sρ(W′ − Z), the step s (in units of ρ) following
    s ← α_k s g_last / g."""

    Config = SLRLayerConfig

    def __init__(self, config: SLRLayerConfig | None = None, **options: Any):
        super().__init__(config, **options)
        self.M, self.r, self.s0 = float(self.config.M), float(self.config.r), float(self.config.s0)

    def begin(self, V0: Tensor, e: Tensor, ZQ: Tensor) -> None:
        self.V0, self.e = V0, e
        self.V_prev = V0.clone()
        self.s, self.k = self.s0, 1
        self.g_last = float(torch.linalg.vector_norm(V0 - ZQ))
        self.held = [0, 0]

    def _penalty(self, V: Tensor, ZQ: Tensor, Lq: Tensor, rho: float) -> float:
        diff = V - ZQ
        return float((Lq * diff).sum() + 0.5 * rho * (diff * diff).sum())

    def _lagrangian(self, V: Tensor, ZQ: Tensor, Lq: Tensor, rho: float) -> float:
        return float((self.e * (V - self.V0) ** 2).sum()) + self._penalty(V, ZQ, Lq, rho)

    def _update(self, V: Tensor, ZQ: Tensor, Lq: Tensor, rho: float) -> Tensor:
        g = float(torch.linalg.vector_norm(V - ZQ))
        if self.g_last > 0 and g > 0:
            self.s = slr_alpha(self.k, self.M, self.r) * self.s * self.g_last / g
            self.g_last = g
        self.k += 1
        return Lq + self.s * rho * (V - ZQ)

    def before_z(self, V: Tensor, ZQ: Tensor, Lq: Tensor, rho: float) -> Tensor:
        # condition 1: the W-step lowered the relaxed Lagrangian at the current Z and Λ
        if self.k == 1 or self._lagrangian(V, ZQ, Lq, rho) < self._lagrangian(self.V_prev, ZQ, Lq, rho):
            self.held[0] += 1
            return self._update(V, ZQ, Lq, rho)
        return Lq

    def after_z(self, V: Tensor, ZQ: Tensor, ZQ_new: Tensor, Lq: Tensor, rho: float) -> Tensor:
        # condition 2: the Z-step lowered the penalty terms at the current W′ and Λ
        if self._penalty(V, ZQ_new, Lq, rho) < self._penalty(V, ZQ, Lq, rho):
            self.held[1] += 1
            self.V_prev = V
            return self._update(V, ZQ_new, Lq, rho)
        return Lq

    def info(self) -> dict[str, Any]:
        return {"cond1_held": self.held[0], "cond2_held": self.held[1], "iterations": self.iterations}


@dataclass(frozen=True)
class OBSLayerConfig(Config):
    """The OBS layer solver's option: columns per block."""

    block: int = option(128)

    def __post_init__(self) -> None:
        if not (isinstance(self.block, int) and self.block >= 1):
            raise ValueError(f"block must be a positive integer, got {self.block!r}")


@register_layer_solver("obs", forms=(Unstructured, NM),
                       help="SparseGPT-style optimal brain surgeon in column blocks (unstructured, N:M)")
class OBSLayer(LayerSolver):
    """Blocked OBS: columns in order, each pruned weight's error spread over the later columns."""

    Config = OBSLayerConfig

    def __init__(self, config: OBSLayerConfig | None = None, **options: Any):
        super().__init__(config, **options)
        self.block = self.config.block

    def solve(self, problem: LayerProblem) -> tuple[Tensor, Tensor, dict[str, Any]]:
        s, shape = problem.sets, problem.shape
        # N:M groups run along the input channels at each kernel position: visit columns so that
        # every group of M is consecutive (position-major), then undo the order.
        positions = math.prod(shape[2:]) if len(shape) > 2 else 1
        d = problem.W.shape[-1]
        order = torch.arange(d, device=problem.W.device).view(-1, positions).t().reshape(-1)
        W = problem.W[..., order].clone()
        H = problem.H[:, order][:, :, order]
        U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
        prune = torch.zeros_like(W, dtype=torch.bool)
        block = -(-self.block // s.m) * s.m if isinstance(s, NM) else self.block  # whole N:M groups
        for i1 in range(0, d, block):
            i2 = min(i1 + block, d)
            W1, U1 = W[..., i1:i2].clone(), U[:, i1:i2, i1:i2]
            diag = torch.diagonal(U1, dim1=-2, dim2=-1).unsqueeze(1)
            err = torch.zeros_like(W1)
            if isinstance(s, Unstructured):
                score = (W1 ** 2 / diag ** 2).reshape(W1.shape[0], -1)
                count = round(s.ratio * score.shape[-1])
                if count:
                    low = torch.topk(score, count, dim=-1, largest=False).indices
                    chosen = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, low, True)
                    prune[..., i1:i2] = chosen.view(W1.shape)
            for i in range(i2 - i1):
                col = i1 + i
                if isinstance(s, NM) and i % s.m == 0:
                    score = W1[..., i:i + s.m] ** 2 / diag[..., i:i + s.m] ** 2
                    low = torch.topk(score, s.m - s.n, dim=-1, largest=False).indices
                    prune[..., col:col + s.m].scatter_(-1, low, True)
                w = W1[..., i]
                q = torch.where(prune[..., col], torch.zeros_like(w), w)
                e1 = (w - q) / U1[:, i, i].unsqueeze(-1)
                W1[..., i:] -= e1.unsqueeze(-1) * U1[:, i, i:].unsqueeze(1)
                err[..., i] = e1
            W[..., i1:i2] = W1
            W[..., i2:] -= err @ U[:, i1:i2, i2:]
        inverse = torch.argsort(order)
        W = W[..., inverse]
        mask = problem.project_mask(W)
        return W * mask, mask, {}
