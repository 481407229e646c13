"""The search space: DARTS cells whose mixed edges hold dense and pruned candidate operations.

A cell has two input nodes (the two previous cells' outputs) and `steps` intermediate nodes;
every intermediate node sums one mixed edge from each earlier node, and the cell outputs the
concatenation of its intermediate nodes (Liu et al., DARTS, 2019).  A mixed edge is the
softmax(α)-weighted sum of the candidate operations (`OPS`); the pruned candidates
(`pruned_conv_3x3`, `pruned_dil_conv_3x3`) are PrunedConv2d layers at the target sparsity, so
the architecture gradient sees how an operation performs once pruned.  `SearchNetwork` is the
supernet (α as parameters); `DerivedNetwork` builds the discrete network of a `Genotype` with
ordinary layers, to be trained and pruned by any registered solver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from ..sets import ConstraintSet
from .genotype import Genotype
from .ops import PrunedConv2d

__all__ = ["OPS", "register_op", "SearchNetwork", "DerivedNetwork", "Cell", "MixedOp", "DEFAULT_OPS"]

OPS: Registry[nn.Module] = Registry("search operation", defaults={"pruned": False})
"""Candidate operations by name: builder(channels, stride, sparsity) → module.  Trait `pruned`:
the operation's convolutions are PrunedConv2d at the target sparsity during the search (plain
convolutions when `sparsity` is None, in the derived network)."""
register_op = OPS.register


def _conv(c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int = 1, groups: int = 1,
          sparsity: ConstraintSet | None = None) -> nn.Conv2d:
    if sparsity is None:
        return nn.Conv2d(c_in, c_out, k, stride, padding, dilation, groups, bias=False)
    return PrunedConv2d(c_in, c_out, k, stride, padding, dilation, groups, bias=False, sparsity=sparsity)


def _relu_conv_bn(c: int, k: int, stride: int, padding: int, dilation: int = 1,
                  sparsity: ConstraintSet | None = None) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), _conv(c, c, k, stride, padding, dilation, sparsity=sparsity),
                         nn.BatchNorm2d(c, affine=False))


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two stride-2 1×1 convs, offset by one."""

    def __init__(self, c_in: int, c_out: int, sparsity: ConstraintSet | None = None):
        super().__init__()
        self.a = _conv(c_in, c_out // 2, 1, 2, 0, sparsity=sparsity)
        self.b = _conv(c_in, c_out - c_out // 2, 1, 2, 0, sparsity=sparsity)
        self.bn = nn.BatchNorm2d(c_out, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return self.bn(torch.cat([self.a(x), self.b(F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:])], dim=1))


@register_op("skip_connect", help="identity (a factorized reduction in reduction cells)")
def _skip(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, sparsity)


@register_op("max_pool_3x3", help="3×3 max pooling")
def _max_pool(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return nn.MaxPool2d(3, stride, 1)


@register_op("avg_pool_3x3", help="3×3 average pooling")
def _avg_pool(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return nn.AvgPool2d(3, stride, 1, count_include_pad=False)


@register_op("sep_conv_3x3", help="separable 3×3 convolution (DARTS: twice depthwise + pointwise), dense in the search")
def _sep_conv(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(), _conv(c, c, 3, stride, 1, groups=c, sparsity=sparsity), _conv(c, c, 1, 1, 0, sparsity=sparsity),
        nn.BatchNorm2d(c, affine=False), nn.ReLU(), _conv(c, c, 3, 1, 1, groups=c, sparsity=sparsity),
        _conv(c, c, 1, 1, 0, sparsity=sparsity), nn.BatchNorm2d(c, affine=False))


@register_op("dil_conv_3x3", help="dilated (2) separable 3×3 convolution, dense in the search")
def _dil_conv(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return nn.Sequential(nn.ReLU(), _conv(c, c, 3, stride, 2, 2, groups=c, sparsity=sparsity),
                         _conv(c, c, 1, 1, 0, sparsity=sparsity), nn.BatchNorm2d(c, affine=False))


@register_op("pruned_conv_3x3", pruned=True, help="full 3×3 convolution on the target sparsity set")
def _pruned_conv(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return _relu_conv_bn(c, 3, stride, 1, sparsity=sparsity)


@register_op("pruned_dil_conv_3x3", pruned=True, help="full dilated (2) 3×3 convolution on the target sparsity set")
def _pruned_dil_conv(c: int, stride: int, sparsity: ConstraintSet | None) -> nn.Module:
    return _relu_conv_bn(c, 3, stride, 2, dilation=2, sparsity=sparsity)


DEFAULT_OPS = tuple(OPS.list())


def _build(name: str, c: int, stride: int, sparsity: ConstraintSet | None, prune_all: bool = False) -> nn.Module:
    """Operation `name`; its convolutions are on `sparsity` if it is a pruned candidate (or with
    `prune_all`, whatever it is), dense otherwise (and always when `sparsity` is None)."""
    entry = OPS.get(name)
    return entry.build(c, stride, sparsity if entry.traits["pruned"] or prune_all else None)


class MixedOp(nn.Module):
    """Σ_o softmax(α)_o · o(x) over the candidate operations of one edge."""

    def __init__(self, c: int, stride: int, ops: Sequence[str], sparsity: ConstraintSet, prune_all: bool = False):
        super().__init__()
        self.ops = nn.ModuleList(_build(name, c, stride, sparsity, prune_all) for name in ops)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))


def _preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool,
                sparsity: ConstraintSet | None = None) -> tuple[nn.Module, nn.Module]:
    def rcb(c_in: int) -> nn.Sequential:
        return nn.Sequential(nn.ReLU(), _conv(c_in, c, 1, 1, 0, sparsity=sparsity), nn.BatchNorm2d(c, affine=False))

    return (FactorizedReduce(c_pp, c, sparsity) if reduction_prev else rcb(c_pp)), rcb(c_p)


class Cell(nn.Module):
    """A searched cell: `steps` nodes, each the sum of mixed edges from every earlier node."""

    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 ops: Sequence[str], sparsity: ConstraintSet, prune_all: bool = False):
        super().__init__()
        self.reduction, self.steps = reduction, steps
        self.pre0, self.pre1 = _preprocess(c_pp, c_p, c, reduction_prev, sparsity if prune_all else None)
        self.edges = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1, ops, sparsity, prune_all)
                                   for i in range(steps) for j in range(2 + i))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            states.append(sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states)))
            offset += len(states) - 1
        return torch.cat(states[2:], dim=1)


def _reductions(layers: int) -> set[int]:
    return {layers // 3, 2 * layers // 3} if layers >= 3 else {layers - 1}


class _Network(nn.Module):
    """The shared skeleton: stem, cells (reduction at 1/3 and 2/3 of the depth), pooling, classifier."""

    def __init__(self, c: int, layers: int, steps: int, num_classes: int, in_channels: int,
                 make_cell: Callable[[int, int, int, int, bool, bool], nn.Module]):
        super().__init__()
        c_curr = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in _reductions(layers)
            if reduction:
                c_curr *= 2
            self.cells.append(make_cell(i, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c_curr
        self.classifier = nn.Linear(c_p, num_classes)

    def head(self, s1: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


class SearchNetwork(_Network):
    """The supernet; `alphas()` are the architecture parameters (normal and reduction cells).

    `prune_all`: every convolution inside the cells (all candidates and the cells' input
    convolutions) is on the sparsity set during the search, as it will be once the derived
    network is pruned; otherwise only the pruned candidates are.
    """

    def __init__(self, sparsity: ConstraintSet, c: int = 8, layers: int = 3, steps: int = 3, num_classes: int = 10,
                 in_channels: int = 3, ops: Sequence[str] = DEFAULT_OPS, prune_all: bool = False):
        for name in ops:
            OPS.get(name)
        self.op_names, self.steps = tuple(ops), steps
        super().__init__(c, layers, steps, num_classes, in_channels,
                         lambda i, c_pp, c_p, c_curr, red, red_prev: Cell(steps, c_pp, c_p, c_curr, red, red_prev, ops,
                                                                        sparsity, prune_all))
        edges = sum(2 + i for i in range(steps))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, len(ops)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(ops)))

    def alphas(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weights(self) -> list[nn.Parameter]:
        ids = {id(a) for a in self.alphas()}
        return [p for p in self.parameters() if id(p) not in ids]

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        normal, reduce = F.softmax(self.alpha_normal, -1), F.softmax(self.alpha_reduce, -1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.head(s1)

    def genotype(self) -> Genotype:
        return Genotype.derive(F.softmax(self.alpha_normal, -1).detach(), F.softmax(self.alpha_reduce, -1).detach(),
                               self.op_names, self.steps)


class DerivedCell(nn.Module):
    """A discrete cell: every node sums the two operations the genotype chose for it."""

    def __init__(self, genes: Sequence[tuple[str, int]], steps: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction, self.steps, self.genes = reduction, steps, list(genes)
        self.pre0, self.pre1 = _preprocess(c_pp, c_p, c, reduction_prev)
        self.ops = nn.ModuleList(_build(op, c, 2 if reduction and src < 2 else 1, None) for op, src in self.genes)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(self.steps):
            (_, a), (_, b) = self.genes[2 * i], self.genes[2 * i + 1]
            states.append(self.ops[2 * i](states[a]) + self.ops[2 * i + 1](states[b]))
        return torch.cat(states[2:], dim=1)


class DerivedNetwork(_Network):
    """The network of a genotype, with plain layers (train it, then prune it with any solver)."""

    def __init__(self, genotype: Genotype, c: int = 8, layers: int = 3, num_classes: int = 10, in_channels: int = 3):
        steps = genotype.steps
        super().__init__(c, layers, steps, num_classes, in_channels,
                         lambda i, c_pp, c_p, c_curr, red, red_prev: DerivedCell(
                             genotype.reduce if red else genotype.normal, steps, c_pp, c_p, c_curr, red, red_prev))

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(s1)
