"""`slr-prune structured`: prune filters for real and report params, MACs and latency before/after.

Wired into slr_prune/cli.py by `add_parser(subparsers)` and `run(args)`.  Examples:

    slr-prune structured --model resnet56 --dataset digits --criterion chip --flops-target 0.5
    slr-prune structured --checkpoint runs/r56.pt --criterion lfe --flops-target 0.5 --allocation convex
    slr-prune structured --checkpoint runs/r56.pt --criterion l1 --ratios 'layer1.*=0.5,layer2.*=0.3'
    slr-prune structured --load runs/structured/pruned.pt          # evaluate a saved pruned model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

CRITERION_NAMES = ("l1", "l2", "nuclear", "chip", "lfe", "slr", "admm")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `structured` subcommand on an argparse subparsers object."""
    from .. import cli as main_cli

    help_ = ("structured pruning: score filters (l1, l2, nuclear, chip, lfe, slr, admm), remove them for real "
             "through Torch-Pruning's dependency graph, fine-tune, report params, MACs and latency")
    p = subparsers.add_parser("structured", help=help_, description=help_,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file of option defaults")
    main_cli._task_args(p)
    p.add_argument("--checkpoint", default=None, help="dense checkpoint from 'slr-prune train' (else random init)")
    p.add_argument("--load", default=None, help="evaluate a pruned file written by this command, then exit")
    g = p.add_argument_group("what to remove")
    g.add_argument("--form", default="filter", choices=["filter"], help="structured pruning removes output filters")
    g.add_argument("--criterion", default="l1", choices=CRITERION_NAMES)
    g.add_argument("--flops-target", type=float, default=None,
                   help="fraction of the dense MACs to keep, e.g. 0.5 = 2x fewer")
    g.add_argument("--params-target", type=float, default=None, help="fraction of the dense parameters to keep")
    g.add_argument("--ratios", default=None, help="per-layer prune ratios 'glob=ratio,...' over group/layer names")
    g.add_argument("--allocation", default="uniform", choices=["uniform", "convex"],
                   help="per-group budgets for a target: one ratio for all, or the cvxpy program on sensitivities")
    g.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (1 = exact)")
    g.add_argument("--min-keep", type=float, default=0.1, help="never keep less than this fraction of a group")
    g.add_argument("--ignore", action="append", default=[], help="module-name glob whose outputs stay (repeatable)")
    g = p.add_argument_group("criterion options")
    g.add_argument("--calibration-batches", type=int, default=4, help="batches for feature maps, losses, sensitivity")
    g.add_argument("--nuclear-reading", default="batch", choices=["batch", "image"])
    g.add_argument("--activation", default="relu", choices=["relu", "none"], help="applied to feature maps")
    g.add_argument("--lfe-samples", type=int, default=256, help="random filter masks for lfe")
    g.add_argument("--lfe-keep", type=float, default=0.75, help="keep probability of each filter in a lfe mask")
    g.add_argument("--lfe-solver", default="ridge", choices=["ridge", "cvxpy"])
    main_cli._train_args(p, prefix="solver-", epochs=3, lr=0.01, label="slr/admm training under filter constraints")
    main_cli._solver_args(p)
    main_cli._train_args(p, prefix="finetune-", epochs=1, lr=0.01, label="fine-tuning of the pruned model")
    g = p.add_argument_group("latency (dense vs pruned, interleaved)")
    g.add_argument("--latency-batch", type=int, default=1)
    g.add_argument("--latency-device", default=None, help="cpu or cuda (default: --device)")
    g.add_argument("--latency-dtype", default=None, choices=["bfloat16", "float16"], help="default float32")
    g.add_argument("--latency-repeats", type=int, default=10)
    g.add_argument("--no-latency", action="store_true")
    p.add_argument("--out", default="runs/structured", help="folder for pruned.pt and report.json")
    return p


def _ratios(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        glob_, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--ratios item {item!r} is not glob=ratio")
        try:
            out[glob_.strip()] = float(value)
        except ValueError as e:
            raise ValueError(f"--ratios item {item!r}: {value!r} is not a number") from e
    return out


def _criterion_options(args: argparse.Namespace) -> dict[str, Any]:
    from .. import cli as main_cli

    if args.criterion in ("nuclear",):
        return {"reading": args.nuclear_reading, "activation": args.activation}
    if args.criterion == "chip":
        return {"activation": args.activation}
    if args.criterion == "lfe":
        return {"samples": args.lfe_samples, "keep_prob": args.lfe_keep, "solver": args.lfe_solver}
    if args.criterion in ("slr", "admm"):
        return {"train": main_cli.train_config(args, prefix="solver_"),
                "solver_options": main_cli.solver_options(args, args.criterion)}
    return {}


def _fmt_int(n: float) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _print_report(result: Any) -> None:
    c = result.costs
    b, a = c["before"], c["after"]
    rows = [("params", _fmt_int(b["params"]), _fmt_int(a["params"]), f"{c['params_ratio']:.2f}x fewer"),
            ("MACs", _fmt_int(b["macs"]), _fmt_int(a["macs"]), f"{c['macs_ratio']:.2f}x fewer")]
    if result.latency:
        d, p = result.latency["dense"], result.latency["pruned"]
        rows.append((f"latency ms (batch {d['batch_size']}, {d['device']}, {d['dtype']})", f"{d['median_ms']:.2f}",
                     f"{p['median_ms']:.2f}", f"{result.latency['speedup']:.2f}x faster"))
    if result.metric:
        m = result.metric
        tuned = result.finetuned
        rows.append((m, f"{100 * result.dense[m]:.2f}%", f"{100 * result.pruned[m]:.2f}% (no retraining)",
                     f"{100 * tuned[m]:.2f}% after {len(result.finetune)} fine-tuning epochs" if tuned else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"criterion {result.criterion['name']}, allocation {result.allocation['method']}, round_to {result.round_to}")
    print("  ".join(h.ljust(w) for h, w in zip(("", "dense", "pruned", ""), widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _evaluate_saved(args: argparse.Namespace) -> None:
    import torch

    from .. import cli as main_cli
    from ..engine import resolve_device
    from ..metrics import cost_summary
    from ..metrics.latency import measure_latency
    from .record import load_pruned

    payload = torch.load(args.load, map_location="cpu", weights_only=True) if Path(args.load).is_file() else None
    if payload is None:
        raise FileNotFoundError(f"--load {args.load!r} does not exist")
    task = main_cli.make_task(args, {"task": payload.get("extra", {}).get("task", {})})
    model, _ = load_pruned(args.load, task.build_model())
    device = resolve_device(args.device)
    model.to(device)
    costs = cost_summary(model, task.example_input())
    metrics = task.evaluate(model, device)
    print(f"params {costs['params']:,}  MACs {costs['macs']:,}")
    if not args.no_latency:
        x = task.example_input(args.latency_batch)
        dtype = getattr(torch, args.latency_dtype) if args.latency_dtype else None
        stats = measure_latency(model, x, device=args.latency_device or device, dtype=dtype,
                                repeats=args.latency_repeats)
        print(f"latency {stats.median_ms:.2f} ms (batch {stats.batch_size}, {stats.device})")
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def run(args: argparse.Namespace) -> None:
    """Run `slr-prune structured` with parsed arguments."""
    from .. import cli as main_cli
    from ..engine import resolve_device
    from .workflow import LatencyOptions, structured_prune

    if args.load:
        _evaluate_saved(args)
        return
    task, model, checkpoint = main_cli.load_model(args, need_checkpoint=False)
    if checkpoint is None:
        print("note: no --checkpoint given; pruning a randomly initialised model", file=sys.stderr)
    device = resolve_device(args.device)
    latency = None if args.no_latency else LatencyOptions(
        batch_size=args.latency_batch, device=str(args.latency_device or device), dtype=args.latency_dtype,
        repeats=args.latency_repeats)
    finetune = main_cli.train_config(args, prefix="finetune_", schedule="constant")
    result = structured_prune(
        model, task, criterion=args.criterion, criterion_options=_criterion_options(args),
        flops_target=args.flops_target, params_target=args.params_target, ratios=_ratios(args.ratios),
        allocation=args.allocation, round_to=args.round_to, min_keep=args.min_keep, ignored_layers=args.ignore,
        calibration_batches=args.calibration_batches, finetune=finetune, device=device, latency=latency,
        out_dir=args.out)
    _print_report(result)
    print(f"pruned model: {Path(args.out) / 'pruned.pt'} (load with slr_prune.structured.load_pruned)\n"
          f"report: {Path(args.out) / 'report.json'}")
