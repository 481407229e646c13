"""PrunedConv2d / PrunedLinear: conv and linear layers whose weights live on a sparsity set.

The forward pass uses the exact projection Π_S(W) of the dense weights W (any slr_prune form:
unstructured, N:M, filter, channel, pattern).  The backward pass is, by `gradient`:

- "straight_through" (default, the search's): ∂L/∂W = ∂L/∂Π(W), so pruned weights keep getting a
  signal and the support can change while the architecture is searched;
- "masked": the exact derivative wherever the support is locally constant, m ⊙ ∂L/∂Π(W).

`penalty()` is the stabilising regulariser ½‖W − Π_S(W)‖² (the quadratic term SLR and ADMM use):
added to the weight objective with a weight ρ it pulls the dense weights onto the set, so the
straight-through signal does not let pruned weights drift and the projected network the
architecture gradient sees stays close to the one being trained.  The state_dict holds plain
tensors only; `to_plain` gives an ordinary nn.Conv2d / nn.Linear (projected weights) and its mask.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sets import ConstraintSet

__all__ = ["PrunedConv2d", "PrunedLinear", "PrunedMixin", "Gradient", "pruned_modules", "to_plain_modules"]

Gradient = Literal["straight_through", "masked"]


class _Project(torch.autograd.Function):
    """y = W ⊙ m with m the support of Π_S(W); backward straight-through or masked."""

    @staticmethod
    def forward(ctx, w: Tensor, mask: Tensor, straight: bool) -> Tensor:  # noqa: D102
        ctx.save_for_backward(mask)
        ctx.straight = straight
        return w * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        (mask,) = ctx.saved_tensors
        return (grad if ctx.straight else grad * mask), None, None


class PrunedMixin:
    """Shared by the pruned layers: the set, the projection, the regulariser and conversion."""

    weight: nn.Parameter
    sparsity: ConstraintSet
    gradient: Gradient

    def _setup(self, sparsity: ConstraintSet, gradient: Gradient) -> None:
        if not isinstance(sparsity, ConstraintSet):
            raise TypeError(f"sparsity must be a ConstraintSet (e.g. Unstructured(0.9)), got {type(sparsity).__name__}")
        if gradient not in ("straight_through", "masked"):
            raise ValueError(f"gradient must be 'straight_through' or 'masked', got {gradient!r}")
        sparsity.validate("weight", self.weight.shape)
        self.sparsity, self.gradient = sparsity, gradient

    def mask(self) -> Tensor:
        """The support of Π_S(W) (exactly the set's kept count)."""
        return self.sparsity.mask(self.weight.detach())

    def projected_weight(self) -> Tensor:
        return _Project.apply(self.weight, self.mask(), self.gradient == "straight_through")

    def penalty(self) -> Tensor:
        """½‖W − Π_S(W)‖²: zero on the set."""
        w = self.weight
        return 0.5 * (w * ~self.mask()).pow(2).sum()


class PrunedConv2d(PrunedMixin, nn.Conv2d):
    """nn.Conv2d whose forward uses Π_S(W); `sparsity` is any slr_prune ConstraintSet."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = False, *, sparsity: ConstraintSet,
                 gradient: Gradient = "straight_through"):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self._setup(sparsity, gradient)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.projected_weight(), self.bias)

    def to_plain(self) -> tuple[nn.Conv2d, Tensor]:
        plain = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                          self.dilation, self.groups, self.bias is not None)
        return _copy_into(plain, self), self.mask()


class PrunedLinear(PrunedMixin, nn.Linear):
    """nn.Linear whose forward uses Π_S(W)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, sparsity: ConstraintSet,
                 gradient: Gradient = "straight_through"):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._setup(sparsity, gradient)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.projected_weight(), self.bias)

    def to_plain(self) -> tuple[nn.Linear, Tensor]:
        plain = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        return _copy_into(plain, self), self.mask()


def _copy_into(plain: nn.Module, pruned: PrunedMixin) -> nn.Module:
    with torch.no_grad():
        plain.weight.copy_(pruned.weight * pruned.mask())
        if getattr(pruned, "bias", None) is not None:
            plain.bias.copy_(pruned.bias)
    return plain.to(pruned.weight.device)


def pruned_modules(model: nn.Module) -> dict[str, PrunedMixin]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PrunedMixin)}


def to_plain_modules(model: nn.Module) -> dict[str, Tensor]:
    """Replace every pruned layer of `model` in place by its plain layer; returns the masks by
    parameter name ("<module>.weight"), ready for `slr_prune.Masks` (evaluator, export, surgery)."""
    masks = {}
    for name, module in list(pruned_modules(model).items()):
        plain, mask = module.to_plain()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, plain)
        masks[f"{name}.weight"] = mask
    return masks
