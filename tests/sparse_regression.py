"""Small sparse least-squares problems with an exactly known optimum (helper for the cvxpy tests).

An instance is min_w f(w) = (1/n)‖Xw − y‖²  s.t.  card(w) ≤ k, with d ≤ 16 weights.  The exact
optimum enumerates every support of size k and solves the restricted least-squares problem on it
with cvxpy; the best support wins.  The model is `nn.Linear(d, 1, bias=False)`, so its weight is
the 1 × d row w and the library prunes it with the unstructured set (keep k of d entries).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import torch
from torch import nn

from slr_prune import SLR, Magnitude, PruneSpec

__all__ = [
    "Instance",
    "make_instance",
    "objective",
    "exact_optimum",
    "dense_model",
    "spec_for",
    "run_slr",
    "run_magnitude",
    "refit",
    "loss_grad",
]

MAX_WEIGHTS = 16


@dataclass
class Instance:
    """One random problem: design X (n × d), target y (n), keep k; the generating truth too."""

    seed: int
    X: np.ndarray
    y: np.ndarray
    k: int
    w_true: np.ndarray

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def ratio(self) -> float:
        """Prune ratio that keeps exactly k of the d weights."""
        return (self.d - self.k) / self.d


def make_instance(seed: int) -> Instance:
    """A seeded instance: 6–10 correlated features, a k-sparse truth (k 2–4) plus noise.

    The columns follow an AR(1) correlation c^|i−j| with c in [0.6, 0.9] and are scaled to
    (1/n)‖x_j‖² = 1, so neighbouring features are strongly correlated: the dense least-squares
    solution spreads weight over them and keeping its k largest entries sometimes misses the best
    support (7 of seeds 0–59).
    """
    rng = np.random.default_rng(seed)
    d = int(rng.integers(6, 11))
    k = int(rng.integers(2, 5))
    n = int(rng.integers(50, 101))
    c = float(rng.uniform(0.6, 0.9))
    idx = np.arange(d)
    cov = c ** np.abs(idx[:, None] - idx[None, :])
    X = rng.standard_normal((n, d)) @ np.linalg.cholesky(cov).T
    X /= np.sqrt((X**2).mean(axis=0))
    w_true = np.zeros(d)
    support = rng.choice(d, size=k, replace=False)
    w_true[support] = rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 1.5, size=k)
    sigma = float(rng.uniform(0.5, 1.2))
    y = X @ w_true + sigma * rng.standard_normal(n)
    return Instance(seed=seed, X=X, y=y, k=k, w_true=w_true)


def objective(inst: Instance, w: np.ndarray) -> float:
    """f(w) = (1/n)‖Xw − y‖² in float64."""
    r = inst.X @ np.asarray(w, dtype=np.float64).reshape(-1) - inst.y
    return float(r @ r / inst.n)


def exact_optimum(inst: Instance) -> tuple[float, tuple[int, ...], np.ndarray, int]:
    """(f*, best support, w*, supports tried): enumerate all C(d, k) supports, each solved by cvxpy.

    One cvxpy problem per instance, with the restricted design as a Parameter, is re-solved for
    every support (DPP: compiled once).  Each solve is checked against numpy's lstsq.
    """
    if inst.d > MAX_WEIGHTS:
        raise ValueError(f"enumeration is meant for at most {MAX_WEIGHTS} weights, got {inst.d}")
    Xs = cp.Parameter((inst.n, inst.k))
    v = cp.Variable(inst.k)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(Xs @ v - inst.y) / inst.n))
    best = (math.inf, (), np.zeros(inst.d))
    tried = 0
    for support in itertools.combinations(range(inst.d), inst.k):
        cols = list(support)
        Xs.value = inst.X[:, cols]
        problem.solve(solver=cp.CLARABEL)
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(f"cvxpy returned {problem.status} on support {support}")
        tried += 1
        w = np.zeros(inst.d)
        w[cols] = v.value
        f = objective(inst, w)
        f_ls = objective(inst, _lstsq_on(inst, cols))
        if not abs(f - f_ls) <= 1e-6 * max(1.0, f_ls):
            raise RuntimeError(f"cvxpy and lstsq disagree on support {support}: {f} vs {f_ls}")
        if f < best[0]:
            best = (f, support, w)
    return best[0], best[1], best[2], tried


def _lstsq_on(inst: Instance, cols: list[int]) -> np.ndarray:
    w = np.zeros(inst.d)
    w[cols] = np.linalg.lstsq(inst.X[:, cols], inst.y, rcond=None)[0]
    return w


def refit(inst: Instance, w: np.ndarray) -> float:
    """f after re-solving least squares on the support of w (context only; SLR is not refitted)."""
    cols = [int(j) for j in np.flatnonzero(np.asarray(w).reshape(-1))]
    return objective(inst, _lstsq_on(inst, cols))


def spec_for(inst: Instance) -> PruneSpec:
    """Keep k of the d weights of the single linear layer (which is both first and last)."""
    return PruneSpec.uniform(inst.ratio, include_first=True, include_last=True)


def dense_model(inst: Instance) -> nn.Linear:
    """nn.Linear(d, 1, bias=False) holding the dense least-squares solution."""
    model = nn.Linear(inst.d, 1, bias=False).double()
    w = np.linalg.lstsq(inst.X, inst.y, rcond=None)[0]
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w).view(1, -1))
    return model


def _weights(model: nn.Linear) -> np.ndarray:
    return model.weight.detach().double().numpy().reshape(-1).copy()


def run_magnitude(inst: Instance) -> np.ndarray:
    """One-shot magnitude pruning of the dense least-squares solution (no refit)."""
    model = dense_model(inst)
    solver = Magnitude(model, spec_for(inst))
    solver.step()
    solver.hard_prune()
    return _weights(model)


def loss_grad(w: torch.Tensor, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """∇f for f(w) = (1/n)‖Xw − y‖² with w a 1 × d row: 2(wA − b), A = XᵀX/n, b = (Xᵀy/n)ᵀ."""
    return 2 * (w @ A - b)


def run_slr(inst: Instance, *, iterations: int, inner_steps: int, lr: float, rho: float,
            rho_growth: float, rho_max: float | None, history: list | None = None,
            **slr_options: Any) -> np.ndarray:
    """SLR from the dense least-squares solution; returns the hard-pruned weights (no refit).

    Each SLR iteration is `inner_steps` full-batch gradient steps on f + ρ/2‖W − Z + Λ/ρ‖²:
    the gradient of f is written to `.grad` (`loss_grad`, the exact full-data gradient; on a
    problem this small it is several times cheaper than autograd, and a test checks the two
    agree), the solver adds its penalty gradient with `add_penalty_grad_`, and SGD steps.  Then
    `solver.step(closure)` with the full-data loss f(W) (a forward pass of the model) as the
    probe closure.  ρ grows by `rho_growth` per SLR iteration up to `rho_max`.  SLR's own
    options (M, r, s0, step_scale, ...) are the library's defaults unless given.
    """
    model = dense_model(inst)
    w = model.weight
    A = torch.from_numpy(inst.X.T @ inst.X / inst.n)
    b = torch.from_numpy(inst.X.T @ inst.y / inst.n).view(1, -1)
    X = torch.from_numpy(inst.X)
    y = torch.from_numpy(inst.y).view(-1, 1)
    solver = SLR(model, spec_for(inst), rho=rho, rho_growth=rho_growth, rho_max=rho_max, **slr_options)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def closure() -> float:
        with torch.no_grad():
            return float(((model(X) - y) ** 2).mean())

    for _ in range(iterations):
        for _ in range(inner_steps):
            with torch.no_grad():
                w.grad = loss_grad(w, A, b)
            solver.add_penalty_grad_()
            optimizer.step()
        record = solver.step(closure)
        if history is not None:
            history.append(record)
    solver.hard_prune()
    return _weights(model)
