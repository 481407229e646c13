"""Calibration: the Gram matrix H = XᵀX of one layer's inputs, from the network as it is now.

A layer's reconstruction error ‖X(W′ − W)ᵀ‖² depends on its inputs only through H.  `layer_gram`
runs seeded calibration batches through the model (in eval mode, no gradients), captures the
layer's input with a forward pre-hook, accumulates H in float64 and stops the forward pass right
there, so a layer costs a forward pass up to itself.  `StageInputs` keeps the inputs of a module
that contains the layer (a ResNet stage, then its block) once the layers before it are final, so
the layers inside it run only that module; stages nest.  Conv inputs are unfolded with the layer's
stride, padding (any padding mode, 'same' included) and dilation; a grouped or depthwise conv gets
one H per group.  A projection that its attention module applies functionally (its weight passed to
a fused kernel, its forward never called: nn.MultiheadAttention's out_proj, torchvision Swin's qkv
and proj) is calibrated through that module (`input_source`).  Under torch.distributed each rank
takes its share of the batches and the H are summed, so every rank solves the same problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..bn import batchnorm_layers
from ..evaluate import bn_state_kept
from ..utils import model_mode, weights_set_to

__all__ = ["layer_gram", "layer_grams", "cross_grams", "full_passes", "flat_weight", "LAYER_TYPES", "StageInputs",
           "calibration_mode", "input_source"]

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layers whose reconstruction problem is defined here (a Conv1d is a Conv2d of height 1)."""


InputOf = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Tensor]
"""From a call of the hooked module (module, args, kwargs): the layer's input."""

_SWIN_ATTENTION = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2")


class _Captured(Exception):
    """Raised by the hook once the layer's input is counted: the rest of the pass is not needed."""


def groups_of(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv1d | nn.Conv2d) else 1


def flat_weight(module: nn.Module) -> Tensor:
    """The weight as (groups, rows per group, d): the rows that share one H, group by group."""
    w = module.weight.detach()
    g = groups_of(module)
    return w.reshape(g, w.shape[0] // g, -1)


def _columns(module: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as (groups, N, d): every row one input vector of the GEMM the layer runs."""
    if isinstance(module, nn.Linear):
        return x.reshape(1, -1, x.shape[-1])
    conv1d = isinstance(module, nn.Conv1d)
    if conv1d:
        x = x.unsqueeze(2)
    kernel = (1, *module.kernel_size) if conv1d else module.kernel_size
    stride = (1, *module.stride) if conv1d else module.stride
    dilation = (1, *module.dilation) if conv1d else module.dilation
    pad = _padding(module, kernel, dilation)
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (B, C·kh·kw, L), C-major
    g = module.groups
    b, d, n = cols.shape
    return cols.view(b, g, d // g, n).permute(1, 0, 3, 2).reshape(g, b * n, d // g)


def _padding(module: nn.Module, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad's (left, right, top, bottom) for the layer's padding, 'same' and 'valid' included."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0, 0, 0)
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        (th, tw) = total
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = (0, *module.padding) if isinstance(module, nn.Conv1d) else module.padding
    return (pw, pw, ph, ph)


def _first_argument(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    return args[0]


def _projection_input(layer: nn.Module) -> InputOf:
    """The input of `layer`, a square output projection its parent applies: the parent's output
    with the projection set to the identity (the parent's forward, hooks bypassed)."""
    def run(parent: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        w, b = layer.weight, layer.bias
        params = [w] if b is None else [w, b]
        values = [torch.eye(w.shape[0], dtype=w.dtype, device=w.device)] + ([] if b is None else [torch.zeros_like(b)])
        with weights_set_to(params, values):
            out = parent.forward(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    return run


def input_source(model: nn.Module, layer: nn.Module) -> tuple[nn.Module, InputOf]:
    """(the module to hook, how its call gives `layer`'s input): the layer itself, or the attention
    module that applies it functionally (its forward never runs, so a hook on it never fires).  An
    input projection (Swin's qkv) sees the attention's input tokens (its padding and shifted
    windows are zeros and a permutation, which leave H unchanged); an output projection
    (out_proj, proj) sees the attention's output with the projection set to the identity."""
    for parent in model.modules():
        for attr, child in parent.named_children():
            if child is not layer:
                continue
            swin = type(parent).__name__ in _SWIN_ATTENTION and type(parent).__module__.startswith("torchvision")
            if (isinstance(parent, nn.MultiheadAttention) and attr == "out_proj") or (swin and attr == "proj"):
                if layer.weight.shape[0] != layer.weight.shape[1]:
                    raise ValueError(f"output projection {attr} of {type(parent).__name__} is not square")
                return parent, _projection_input(layer)
            if swin and attr == "qkv":
                return parent, _first_argument
    return layer, _first_argument


@contextmanager
def calibration_mode(model: nn.Module, batch_stats: bool) -> Iterator[None]:
    """Eval mode, with every BatchNorm on batch statistics when `batch_stats`; the modes and every
    BatchNorm buffer are restored on exit, so the passes leave no trace in the state dict."""
    with model_mode(model, train=False):
        if batch_stats:
            with bn_state_kept(model):
                for m in batchnorm_layers(model):
                    m.train()
                yield
        else:
            yield


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


Pass = Callable[[], Any]
"""One calibration pass: runs (part of) the model on one batch; a pre-hook may stop it."""


def _drain(passes: Iterable[Pass], done: Callable[[], bool] = lambda: False) -> None:
    """Run the passes (each stopped by a hook) until they run out or `done()`."""
    for run in passes:
        try:
            run()
        except _Captured:
            pass
        if done():
            return


def full_passes(model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]) -> Iterator[Pass]:
    """The whole model on this rank's share of the batches (every world-th, from its rank on)."""
    rank, world = _rank_world()
    for i, batch in enumerate(batches):
        if i % world == rank:
            yield lambda b=batch: forward(model, b)


class StageInputs:
    """The inputs of `stage`, a module that contains the layers being calibrated, on every
    calibration batch: one pass up to the stage, then every layer inside it runs the stage alone.

    Valid while the layers that run before the stage stay as they are (the reconstruction goes in
    model order, so they are final).  `runs` is None when the stage is not called before `layer`
    in the forward pass (a parent that calls its children one by one): calibrate with full passes.
    """

    def __init__(self, model: nn.Module, stage: nn.Module, layer: nn.Module, passes: Iterable[Pass],
                 batch_stats: bool):
        self.stage = stage
        captured: list[tuple[Any, Any]] = []
        reached: list[bool] = []

        def at_stage(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append((args, kwargs))
            raise _Captured

        def at_layer(mod: nn.Module, args: tuple[Any, ...]) -> None:
            reached.append(True)
            raise _Captured

        handles = [stage.register_forward_pre_hook(at_stage, with_kwargs=True),
                   layer.register_forward_pre_hook(at_layer)]
        try:
            with torch.no_grad(), calibration_mode(model, batch_stats):
                _drain(passes, lambda: bool(reached))
        finally:
            for h in handles:
                h.remove()
        self.runs = None if reached else captured

    def passes(self) -> Iterator[Pass]:
        """One call per batch: the stage on a copy of its inputs (a stage may change them in place)."""
        for args, kwargs in self.runs or ():
            yield lambda a=args, k=kwargs: self.stage(*_copy(a), **_copy(k))


def _copy(tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return tree.clone()
    if isinstance(tree, tuple | list):
        return type(tree)(_copy(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    return tree


@torch.no_grad()
def layer_gram(model: nn.Module, module: nn.Module, passes: Iterable[Pass],
               batch_stats: bool = False) -> tuple[Tensor, int]:
    """(H, n): H = Σ XᵀX over the calibration inputs of `module`, float64, shape (groups, d, d),
    and n, the number of input vectors; `passes` run the model (`full_passes`) or a stage of it
    (`StageInputs.passes`) on the calibration batches.

    `batch_stats` normalises with each batch's own statistics in every BatchNorm (their running
    statistics are left as they are), so the inputs are those the pruned network will see once
    its BatchNorm is recalibrated rather than those of the dense network's stale statistics."""
    return layer_grams(model, [module], passes, batch_stats)[0]


def _first_inputs(net: nn.Module, layers: Sequence[nn.Module], seen: set[int],
                  take: Callable[[int, Tensor], None]) -> list[Any]:
    """Forward pre-hooks that hand `take(i, columns)` the input of each layer (as `_columns`, float64)
    at its first call of a pass and stop the pass once every layer in `seen` has been reached (clear
    `seen` before each pass); returns the handles."""
    def hook_for(i: int, layer: nn.Module, input_of: InputOf) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if i in seen:  # a layer called twice in one pass (shared weights) counts its first call
                return
            take(i, _columns(layer, input_of(mod, args, kwargs).detach()).to(torch.float64))
            seen.add(i)
            if len(seen) == len(layers):
                raise _Captured
        return hook

    handles = []
    for i, layer in enumerate(layers):
        source, input_of = input_source(net, layer)
        handles.append(source.register_forward_pre_hook(hook_for(i, layer, input_of), with_kwargs=True))
    return handles


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


@torch.no_grad()
def layer_grams(model: nn.Module, modules: Sequence[nn.Module], passes: Iterable[Pass],
                batch_stats: bool = False) -> list[tuple[Tensor, int]]:
    """`layer_gram` of several layers from the same passes: each pass stops once every layer has
    seen its input, so the layers of a channel group (or a whole model) cost one set of passes."""
    if not modules:
        raise ValueError("layer_grams needs at least one layer")
    grams: list[Tensor | None] = [None] * len(modules)
    counts = [0] * len(modules)
    seen: set[int] = set()

    def take(i: int, cols: Tensor) -> None:
        grams[i] = _add(grams[i], cols.transpose(1, 2) @ cols)
        counts[i] += cols.shape[1]

    def run_all() -> Iterator[Pass]:
        for run in passes:
            seen.clear()
            yield run

    handles: list[Any] = []
    try:
        handles = _first_inputs(model, modules, seen, take)
        with calibration_mode(model, batch_stats):
            _drain(run_all())
    finally:
        for handle in handles:
            handle.remove()
    return [_reduced(module, H, n) for module, H, n in zip(modules, grams, counts, strict=True)]


def _reduced(module: nn.Module, H: Tensor | None, n: int) -> tuple[Tensor, int]:
    """(H, n) summed over the ranks under torch.distributed; one line when the layer saw nothing."""
    if _rank_world()[1] > 1:
        d, g = module.weight[0].numel(), groups_of(module)
        H = torch.zeros(g, d, d, dtype=torch.float64, device=module.weight.device) if H is None else H
        count = torch.tensor([float(n)], dtype=torch.float64, device=H.device)
        dist.all_reduce(H)
        dist.all_reduce(count)
        n = int(count.item())
    if H is None or n == 0:
        raise ValueError("layer-wise calibration saw no input for this layer: give at least one calibration "
                         "batch, and check that the task's forward pass reaches the layer")
    return H, n


@torch.no_grad()
def cross_grams(model: nn.Module, dense: nn.Module, modules: Sequence[nn.Module], dense_modules: Sequence[nn.Module],
                batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any],
                batch_stats: bool = False) -> list[tuple[Tensor, Tensor, int]]:
    """(H, B, n) per layer: H = Σ X_pᵀX_p of the layer's inputs in `model` and B = Σ X_pᵀX_d with
    X_d the same layer's inputs (`dense_modules`) in `dense` on the same batch; the least-squares
    weights that make the pruned network's layer reproduce the dense one's output X_d Wᵀ are then
    W B ᵀ H⁻¹.  `dense` runs as it serves (eval mode, running BatchNorm statistics)."""
    rank, world = _rank_world()
    grams: list[Tensor | None] = [None] * len(modules)
    crosses: list[Tensor | None] = [None] * len(modules)
    counts = [0] * len(modules)
    dense_cols: dict[int, Tensor] = {}
    seen: set[int] = set()

    def take(i: int, cols: Tensor) -> None:
        grams[i] = _add(grams[i], cols.transpose(1, 2) @ cols)
        crosses[i] = _add(crosses[i], cols.transpose(1, 2) @ dense_cols[i])
        counts[i] += cols.shape[1]

    handles: list[Any] = []
    try:
        handles = _first_inputs(dense, dense_modules, seen, dense_cols.__setitem__)
        handles += _first_inputs(model, modules, seen, take)
        with model_mode(dense, train=False), calibration_mode(model, batch_stats):
            for j, batch in enumerate(batches):
                if j % world != rank:
                    continue
                for net in (dense, model):
                    seen.clear()
                    _drain([lambda n=net, b=batch: forward(n, b)])
                dense_cols.clear()
    finally:
        for h in handles:
            h.remove()
    result = []
    for module, H, B, n in zip(modules, grams, crosses, counts, strict=True):
        H, n = _reduced(module, H, n)
        if world > 1:
            B = torch.zeros_like(H) if B is None else B
            dist.all_reduce(B)
        result.append((H, B, n))
    return result
