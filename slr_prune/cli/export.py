"""`slr-prune export`: a pruned checkpoint as ONNX, a plain state_dict or an ultralytics .pt,
with the output-equivalence check printed (the exported file against the model it came from)."""

from __future__ import annotations

import argparse
import dataclasses

from ..export import EXPORTERS
from .common import check_out, load_model, task_args
from .runfolder import DEFAULT_OUT, NAME_MAX

NAME = "export"
HELP = ("export a pruned checkpoint (prune/compare/finetune, or structured) as ONNX, a plain state_dict or an "
        "ultralytics .pt, and check the exported model's outputs against the checkpoint's")


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    p.add_argument("--checkpoint", required=True,
                   help="pruned.pt of prune/compare, finetuned.pt of finetune, or pruned.pt of structured")
    p.add_argument("--format", default="onnx", choices=EXPORTERS.list(),
                   help="; ".join(f"{e.name}: {e.help}" for e in EXPORTERS.entries()))
    p.add_argument("--out", default=DEFAULT_OUT[NAME], help="folder for the exported file")
    p.add_argument("--name", default="model", help="file name without suffix")
    p.add_argument("--batch", type=int, default=2, help="batch size of the equivalence check's input")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="value precision of the file (--format compressed only; default float32); the "
                        "equivalence check then compares with the model rounded to it")


def run(args: argparse.Namespace) -> None:
    import torch

    from ..compressed import dense_bytes
    from ..export import outputs, sparsity
    from ..structure import structure_record

    entry = EXPORTERS.get(args.format)
    options = {"dtype": args.dtype} if args.dtype is not None else {}
    if options and "dtype" not in {f.name for f in dataclasses.fields(entry.options)}:
        raise ValueError(f"--dtype applies to --format compressed, not {args.format}; leave it out")
    if not args.name or args.name in (".", "..") or "/" in args.name or "\\" in args.name or "\0" in args.name:
        raise ValueError(f"--name {args.name!r} must be a plain file name (no folder part); the file is written "
                         "into --out")
    if len(f"{args.name}{entry.traits['suffix']}".encode()) > NAME_MAX:
        raise ValueError(f"--name {args.name[:24]!r}... is too long: a file name has at most {NAME_MAX} bytes")
    if args.batch < 1:
        raise ValueError(f"--batch must be ≥ 1, got {args.batch}")
    out = check_out(args.out)
    task, model, artifact = load_model(args)
    fresh = task.build_model()  # the dense architecture: is the file's model resized, and its dense size
    resized = artifact.structure is not None and structure_record(fresh) != artifact.structure
    kind = "structured" if resized else "unstructured"
    model = model.float().cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    x = task.example_input(args.batch).float()
    reference = outputs(model, x)
    path, diff = entry.build(task, model, out / f"{args.name}{entry.traits['suffix']}", x, reference, **options)
    scale = float(reference.abs().max()) or 1.0
    ok = diff <= 1e-4 * scale
    counts = sparsity(model)
    dense = dense_bytes(fresh.state_dict())
    print(f"exported {kind} model ({counts['weights']:,} conv/linear weights, {counts['sparsity']:.1%} zero) "
          f"as {args.format}: {path}")
    print(f"file size {path.stat().st_size:,} bytes = {path.stat().st_size / dense:.3f}x the dense model's "
          f"state dict ({dense:,} bytes, torch.save, float32)")
    print(f"equivalence on {tuple(x.shape)} inputs: max |Δ output| = {diff:.3g} "
          f"(output scale {scale:.3g}, relative {diff / scale:.2g}) — {'match' if ok else 'MISMATCH'}")
    if not ok:
        raise ValueError(f"the exported {args.format} model's outputs differ from the checkpoint's by {diff:.3g}")
