"""`slr-prune structured`: prune filters for real and report params, MACs and latency before/after.

Examples:

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

from ..structured.criteria import CRITERIA
from ..structured.workflow import ALLOCATIONS, CALIBRATION_BATCHES, LatencyOptions
from .common import (
    bn_args,
    check_out,
    load_model,
    solver_args,
    task_args,
    train_args,
    train_config,
    write_run_files,
)
from .options import add_config_flags, add_entry_options, config_values, entry_options, unused_flags
from .runfolder import DEFAULT_OUT

NAME = "structured"
HELP = ("structured pruning: score filters with a registered criterion, remove them for real through "
        "Torch-Pruning's dependency graph, fine-tune, report params, MACs and latency")


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    p.add_argument("--checkpoint", default=None, help="dense checkpoint from 'slr-prune train' (else random init)")
    p.add_argument("--load", default=None, help="evaluate a pruned file written by this command, then exit")
    g = p.add_argument_group("what to remove")
    g.add_argument("--form", default="filter", choices=["filter"], help="structured pruning removes output filters")
    g.add_argument("--criterion", default="l1", choices=CRITERIA.list(),
                   help="; ".join(f"{e.name}: {e.help}" for e in CRITERIA.entries()))
    g.add_argument("--flops-target", type=float, default=None,
                   help="fraction of the dense MACs to keep, e.g. 0.5 = 2x fewer")
    g.add_argument("--params-target", type=float, default=None, help="fraction of the dense parameters to keep")
    g.add_argument("--ratios", default=None, help="per-layer prune ratios 'glob=ratio,...' over group/layer names")
    g.add_argument("--allocation", default="uniform", choices=list(ALLOCATIONS),
                   help="per-group budgets for a target: one ratio for all (uniform), or the cvxpy program on "
                        "sensitivities measured as the loss rise under masks (convex) or as the layer solver's "
                        "consumer error at 7 keep fractions (curves)")
    g.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (1 = exact)")
    g.add_argument("--min-keep", type=float, default=0.1, help="never keep less than this fraction of a group")
    g.add_argument("--ignore", action="append", default=[],
                   help="module-name glob whose outputs stay (repeatable); the task's own exclusions always apply")
    g.add_argument("--repair", default="auto", choices=["auto", "on", "off"],
                   help="re-fit the consumers of every pruned group by least squares on the calibration batches "
                        "and re-estimate BatchNorm after removal (auto: on when --finetune-epochs is 0)")
    bn_args(g)
    g = p.add_argument_group("criterion options (each applies to the criteria in brackets)")
    g.add_argument("--calibration-batches", type=int, default=CALIBRATION_BATCHES,
                   help="batches for feature maps, losses, sensitivities, channel reconstruction and the repair")
    add_entry_options(g, CRITERIA.entries(), "criterion")
    train_args(p, prefix="solver-", epochs=3, lr=0.01, label="solver training under filter constraints")
    solver_args(p, trains=True)  # the solver criteria train under filter constraints
    train_args(p, prefix="finetune-", epochs=1, lr=0.01, label="fine-tuning of the pruned model")
    g = p.add_argument_group("latency (dense vs pruned, interleaved)")
    add_config_flags(g, LatencyOptions, defaults={"device": None})
    g.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--out", default=DEFAULT_OUT[NAME], help="run folder for pruned.pt and report.json")


def _criterion_options(args: argparse.Namespace) -> dict[str, Any]:
    """The criterion's options from the command line, plus what a training criterion needs."""
    from .common import solver_options

    entry = CRITERIA.get(args.criterion)
    options = entry_options(args, entry)
    solver = entry.traits.get("solver")
    if solver:
        options.update(train=train_config(args, prefix="solver_"), solver_options=solver_options(args, solver))
    return options


def _refuse_unused(args: argparse.Namespace, entry: Any, solver: str | None) -> None:
    """Criterion and solver flags that the chosen criterion (and its solver, if it trains) has no
    option for are refused rather than dropped."""
    from ..solvers import SOLVERS

    unused = unused_flags(args, CRITERIA.entries(), entry)
    training = [SOLVERS.get(n) for n in SOLVERS.list(trains=True)]
    unused += unused_flags(args, training, SOLVERS.get(solver) if solver else None)
    if unused:
        flags = ", ".join("--" + f for f in unused)
        raise ValueError(f"{flags} does not apply to --criterion {args.criterion}: drop it, or choose a criterion "
                         "that uses it (--help lists each option's criteria and methods)")


REPAIR = {"auto": None, "on": True, "off": False}


def _fmt_int(n: float) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _print_report(result: Any) -> None:
    c = result.costs
    b, a = c["before"], c["after"]
    rows = [("params", _fmt_int(b["params"]), _fmt_int(a["params"]), f"{c['params_ratio']:.2f}x fewer"),
            ("MACs", _fmt_int(b["macs"]), _fmt_int(a["macs"]), f"{c['macs_ratio']:.2f}x fewer"),
            ("checkpoint bytes (float32)", f"{b['bytes']['dense']:,}", f"{a['bytes']['dense']:,}",
             f"{a['bytes']['dense'] / b['bytes']['dense']:.3f}x: the physical size of the smaller model")]
    if result.latency:
        d, p = result.latency["dense"], result.latency["pruned"]
        rows.append((f"latency ms (batch {d['batch_size']}, {d['device']}, {d['dtype']})", f"{d['median_ms']:.2f}",
                     f"{p['median_ms']:.2f}", f"{result.latency['speedup']:.2f}x faster"))
    if result.metric:
        m = result.metric
        tuned = result.finetuned
        rows.append((m, f"{100 * result.dense[m]:.2f}%", f"{100 * result.pruned[m]:.2f}% (no retraining"
                     f"{', consumers re-fitted' if result.repair else ''})",
                     f"{100 * tuned[m]:.2f}% after {len(result.finetune)} fine-tuning epochs" if tuned else ""))
        if result.pruned_bn:
            rows.append((f"{m}, BatchNorm re-estimated", "", f"{100 * result.pruned_bn[m]:.2f}%", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"criterion {result.criterion['name']}, allocation {result.allocation['method']}, round_to {result.round_to}")
    print("  ".join(h.ljust(w) for h, w in zip(("", "dense", "pruned", ""), widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _evaluate_saved(args: argparse.Namespace) -> None:
    import torch

    from ..engine import resolve_device
    from ..metrics import cost_summary
    from ..metrics.latency import measure_latency

    task, model, _ = load_model(argparse.Namespace(**{**vars(args), "checkpoint": args.load}))
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
    from ..engine import resolve_device
    from ..spec import parse_ratios
    from ..structured.workflow import structured_prune

    if args.load:
        _evaluate_saved(args)
        return
    ratios = parse_ratios(args.ratios, "--ratios") if args.ratios else None
    entry = CRITERIA.get(args.criterion)
    _refuse_unused(args, entry, entry.traits.get("solver"))
    check_out(args.out)
    task, model, checkpoint = load_model(args, need_checkpoint=False)
    if checkpoint is None:
        print("note: no --checkpoint given; pruning a randomly initialised model", file=sys.stderr)
    device = resolve_device(args.device)
    latency = None
    if not args.no_latency:
        values = config_values(args, LatencyOptions)
        latency = LatencyOptions(**{**values, "device": str(values["device"] or device)})
    finetune = train_config(args, prefix="finetune_", schedule="constant")
    options = _criterion_options(args)
    result = structured_prune(
        model, task, criterion=args.criterion, criterion_options=options,
        flops_target=args.flops_target, params_target=args.params_target, ratios=ratios,
        allocation=args.allocation, round_to=args.round_to, min_keep=args.min_keep, ignored_layers=args.ignore,
        calibration_batches=args.calibration_batches, finetune=finetune, repair=REPAIR[args.repair],
        bn_batches=args.bn_batches, seed=args.seed, device=device, latency=latency, out_dir=args.out)
    _print_report(result)
    from ..report import plot_kept_channels

    kept = ", ".join(f"{g} {result.counts[g]}/{n}" for g, n in result.sizes.items())
    print(f"channels kept per group: {kept}")
    png = plot_kept_channels(result.counts, result.sizes, Path(args.out) / "allocation.png",
                             f"{args.criterion}, allocation {args.allocation}: "
                             f"{result.costs['macs_ratio']:.2f}× fewer MACs")
    write_run_files(args.out, args, result.to_dict(), task=task.record(), source_checkpoint=args.checkpoint,
                    criterion_options={k: v for k, v in options.items()
                                       if k not in CRITERIA.get(args.criterion).traits["workflow"]})
    print(f"run folder: {args.out}\n  pruned model: {Path(args.out) / 'pruned.pt'} "
          f"(slr_prune.structured.load_pruned, or slr-prune export)\n  report: {Path(args.out) / 'report.json'}\n"
          f"  channels kept per group: {png}")
