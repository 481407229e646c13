"""Parameters and multiply-accumulates (MACs) of conv and linear layers, dense and sparse.

Counted with forward hooks on one example input: a conv's MACs are output elements × (in/groups
· kh · kw), a linear's are output elements × in_features.  "Sparse" MACs scale each layer by its
weight density, the work an ideal sparse kernel would do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..utils import CONV_LINEAR, model_mode

__all__ = ["layer_costs", "cost_summary"]


@torch.no_grad()
def layer_costs(model: nn.Module, example_input: Tensor) -> list[dict[str, Any]]:
    """One row per conv/linear module: name, params, nonzero weights, dense and sparse MACs."""
    rows: list[dict[str, Any]] = []
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: Tensor) -> None:
            per_output = module.weight[0].numel()  # (in/groups)·kh·kw, or in_features
            macs = output.numel() // output.shape[0] * per_output
            w = module.weight.detach()
            density = float(torch.count_nonzero(w)) / w.numel()
            rows.append({"name": name, "params": w.numel(), "nonzero": int(torch.count_nonzero(w)),
                         "macs": macs, "sparse_macs": int(macs * density)})
        return record

    for name, module in model.named_modules():
        if isinstance(module, CONV_LINEAR):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with model_mode(model, train=False):
            model(example_input[:1].to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return rows


def cost_summary(model: nn.Module, example_input: Tensor) -> dict[str, Any]:
    """Totals over the model: all parameters, non-zero parameters (`compression` is their ratio,
    the nominal figure), dense and sparse MACs (measured file sizes: `engine.pipeline.measure`)."""
    rows = layer_costs(model, example_input)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return {
        "params": params,
        "nonzero_params": nonzero,
        "compression": params / max(1, nonzero),
        "macs": sum(r["macs"] for r in rows),
        "sparse_macs": sum(r["sparse_macs"] for r in rows),
        "layers": rows,
    }
