"""`slr-prune export`: a pruned checkpoint as ONNX, a plain state_dict or an ultralytics .pt,
with the output-equivalence check printed (the exported file against the model it came from)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Registry
from ..task import task_name
from .common import check_out, is_structured, load_model, task_args

NAME = "export"
HELP = ("export a pruned checkpoint (prune/compare/finetune, or structured) as ONNX, a plain state_dict or an "
        "ultralytics .pt, and check the exported model's outputs against the checkpoint's")

Exporter = Callable[[Any, nn.Module, Path, Tensor, Tensor], tuple[Path, float]]
EXPORTERS: Registry[Exporter] = Registry("export format")
"""Formats by name; exporter(task, model, path, x, reference) writes the file and returns (path,
largest |difference| between the exported model's output on x and `reference`, the model's)."""


def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    from ..export import plain_copy

    with torch.no_grad():
        out = plain_copy(model)(x)
    return out[0] if isinstance(out, tuple | list) else out


@EXPORTERS.register("onnx", help="ONNX graph (torch.onnx), checked with onnxruntime", suffix=".onnx")
def _onnx(task: Any, model: nn.Module, path: Path, x: Tensor, reference: Tensor) -> tuple[Path, float]:
    from ..export import export_onnx, onnx_max_difference

    export_onnx(model, path, x)
    return path, onnx_max_difference(path, model, x)


@EXPORTERS.register("state_dict", help="plain tensors (torch.load(weights_only=True)), reloaded into a fresh "
                                       "model of the task", suffix=".pt")
def _state_dict(task: Any, model: nn.Module, path: Path, x: Tensor, reference: Tensor) -> tuple[Path, float]:
    from ..engine import save_atomic
    from ..export import plain_copy

    clone = plain_copy(model)
    save_atomic({"model": clone.state_dict(), "task": task.record(), "task_name": task_name(task)}, path)
    fresh = _fresh_like(task, clone)
    fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return path, _difference(_outputs(fresh.eval(), x), reference)


@EXPORTERS.register("ultralytics", help="a .pt that ultralytics.YOLO(path) loads (detection models only)",
                    suffix=".pt")
def _ultralytics(task: Any, model: nn.Module, path: Path, x: Tensor, reference: Tensor) -> tuple[Path, float]:
    from ..export import export_ultralytics
    from ..models.yolo import load_detection_model

    export_ultralytics(model, path)
    loaded = load_detection_model(path).eval()  # through the safe loader, as a user would load it
    return path, _difference(_outputs(loaded, x), reference)


def _fresh_like(task: Any, model: nn.Module) -> nn.Module:
    """A new model of the task with `model`'s structure (a structured-pruned model is smaller)."""
    from ..structured.record import apply_record, structure_record

    return apply_record(task.build_model(), structure_record(model)).float().cpu()


def _difference(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    p.add_argument("--checkpoint", required=True,
                   help="pruned.pt of prune/compare, finetuned.pt of finetune, or pruned.pt of structured")
    p.add_argument("--format", default="onnx", choices=EXPORTERS.list(),
                   help="; ".join(f"{e.name}: {e.help}" for e in EXPORTERS.entries()))
    p.add_argument("--out", default="runs/export", help="folder for the exported file")
    p.add_argument("--name", default="model", help="file name without suffix")
    p.add_argument("--batch", type=int, default=2, help="batch size of the equivalence check's input")


def run(args: argparse.Namespace) -> None:
    entry = EXPORTERS.get(args.format)
    if args.batch < 1:
        raise ValueError(f"--batch must be ≥ 1, got {args.batch}")
    out = check_out(args.out)
    task, model, checkpoint = load_model(args)
    kind = "structured" if is_structured(checkpoint) else "unstructured"
    model = model.float().cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    x = task.example_input(args.batch).float()
    reference = _outputs(model, x)
    path, diff = entry.build(task, model, out / f"{args.name}{entry.suffix}", x, reference)
    scale = float(reference.abs().max()) or 1.0
    ok = diff <= 1e-4 * scale
    zeros = sum(int((p == 0).sum()) for p in model.parameters() if p.dim() > 1)
    total = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    print(f"exported {kind} model ({total:,} conv/linear weights, {zeros / max(1, total):.1%} zero) "
          f"as {args.format}: {path}")
    print(f"equivalence on {tuple(x.shape)} inputs: max |Δ output| = {diff:.3g} "
          f"(output scale {scale:.3g}, relative {diff / scale:.2g}) — {'match' if ok else 'MISMATCH'}")
    if not ok:
        raise ValueError(f"the exported {args.format} model's outputs differ from the checkpoint's by {diff:.3g}")
