"""One layer's reconstruction problem and what every layer solver shares.

    min over W′ ∈ S   f(W′) = Σ_g tr((W′_g − W_g) H_g (W′_g − W_g)ᵀ)

W is the layer's weight as (groups, rows, d) (see calibration.flat_weight), H_g the damped Gram
matrix of group g's inputs, S the layer's sparsity set, applied to the weight in its own shape
by the exact projection of slr_prune.sets.  H is scaled to a mean diagonal of 1, so penalties
(ρ) mean the same in every layer.  `refit` is the exact least-squares re-fit on a fixed support
(a batched, Jacobi-preconditioned conjugate gradient over all rows at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..sets import ConstraintSet

__all__ = ["LayerProblem", "refit", "damped", "dense_reference"]


def damped(H: Tensor, damping: float) -> Tensor:
    """H + damping · mean(diag H) · I per group, scaled to a mean diagonal of 1 (dead inputs get
    the damping alone; an all-zero H becomes the identity)."""
    diag = torch.diagonal(H, dim1=-2, dim2=-1)
    mean = diag.mean(-1, keepdim=True).clamp_min(torch.finfo(H.dtype).tiny)
    out = H / mean.unsqueeze(-1)
    zero = (diag.mean(-1) <= 0).view(-1, 1, 1)
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    out = torch.where(zero, eye, out) + damping * eye
    return out / (1.0 + damping)


def dense_reference(W: Tensor, H: Tensor, B: Tensor, damping: float) -> Tensor:
    """The weights whose output on the pruned network's inputs is closest to the dense layer's
    output: argmin ‖X_p W″ᵀ − X_d Wᵀ‖² + δ‖W″‖² = W Bᵀ (H + δI)⁻¹ per group, with H = X_pᵀX_p,
    B = X_pᵀX_d and δ = damping · mean(diag H).  Using it as the problem's W makes a layer correct
    the error of the layers before it instead of reproducing its own weights on their output.
    W (groups, rows, d), H and B (groups, d, d), all float64."""
    h = damped(H, damping) * torch.diagonal(H, dim1=-2, dim2=-1).mean(-1).clamp_min(
        torch.finfo(H.dtype).tiny).view(-1, 1, 1) * (1.0 + damping)
    return torch.linalg.solve(h, (W @ B.transpose(-1, -2)).transpose(-1, -2)).transpose(-1, -2)


@dataclass
class LayerProblem:
    """W (groups, rows, d), H (groups, d, d) damped and scaled, the set and the weight's shape."""

    W: Tensor
    H: Tensor
    sets: ConstraintSet
    shape: torch.Size
    _eig: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    def project_mask(self, W: Tensor) -> Tensor:
        """Support of Π_S(W) as a (groups, rows, d) bool tensor."""
        return self.sets.mask(W.reshape(self.shape)).reshape(W.shape)

    def objective(self, W: Tensor) -> Tensor:
        """f(W′) = Σ tr(δ H δᵀ), δ = W′ − W."""
        delta = W - self.W
        return ((delta @ self.H) * delta).sum()

    def eig(self) -> tuple[Tensor, Tensor]:
        """(e, Q): H = Q diag(e) Qᵀ per group, computed once."""
        if self._eig is None:
            e, Q = torch.linalg.eigh(self.H)
            self._eig = (e.clamp_min(0), Q)
        return self._eig


def refit(problem: LayerProblem, mask: Tensor, start: Tensor | None = None, iters: int = 200,
          tol: float = 1e-10) -> Tensor:
    """argmin f(W′) over W′ with support in `mask`: the masked normal equations
    mask ⊙ (W′H) = mask ⊙ (WH), solved row by row by conjugate gradients (all rows batched) until
    every row's squared residual is below `tol` times its right-hand side's."""
    H, m = problem.H, mask.to(problem.W.dtype)
    b = m * (problem.W @ H)
    x = m * (problem.W if start is None else start)
    precond = torch.diagonal(H, dim1=-2, dim2=-1).unsqueeze(1).expand_as(x)
    inv_diag = torch.where(m > 0, 1.0 / precond, torch.zeros_like(precond))
    r = b - m * (x @ H)
    z = inv_diag * r
    p = z.clone()
    rz = (r * z).sum(-1, keepdim=True)
    scale = (b * b).sum(-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
    tol = max(tol, torch.finfo(b.dtype).eps)  # float32 cannot go below its rounding
    for _ in range(iters):
        if bool(((r * r).sum(-1, keepdim=True) <= tol * scale).all()):
            break
        Ap = m * (p @ H)
        pAp = (p * Ap).sum(-1, keepdim=True)
        alpha = torch.where(pAp > 0, rz / pAp.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(pAp))
        x = x + alpha * p
        r = r - alpha * Ap
        z = inv_diag * r
        rz_new = (r * z).sum(-1, keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return x * m
