"""Shared driver of the classification benchmarks: the layout of the SLR paper's tables.

For every prune ratio, SLR and ADMM start from the same dense checkpoint with the same spec,
epochs, optimizer and ρ schedule, next to the zero-epoch baseline (one-shot magnitude).  A row
reports: model, ratio, compression of the pruned layers, dense accuracy, hard-prune accuracy (no
retraining) of each method after BatchNorm recalibration (and, in the JSON, without it),
accuracy after k masked fine-tuning epochs, and the solver epochs each needed before its
recalibrated hard-prune accuracy reached the target (dense − --target-drop points).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slr_prune import PruneSpec
from slr_prune.artifact import load_artifact
from slr_prune.engine import TrainConfig, Trainer, prune
from slr_prune.report import plot_hard_prune_curves

METHODS = ("slr", "admm", "magnitude")
LABELS = {"slr": "SLR", "admm": "ADMM", "magnitude": "0-epoch magnitude"}


def add_arguments(p: argparse.ArgumentParser, model: str, ratios: str, epochs: int, dense_epochs: int) -> None:
    p.add_argument("--model", default=model)
    p.add_argument("--checkpoint", default=None, help="dense checkpoint (slr-prune train); else one is trained")
    p.add_argument("--dense-epochs", type=int, default=dense_epochs)
    p.add_argument("--dense-lr", type=float, default=0.05)
    p.add_argument("--ratios", default=ratios, help="comma-separated prune ratios")
    p.add_argument("--form", default="unstructured")
    p.add_argument("--epochs", type=int, default=epochs, help="SLR/ADMM training epochs")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--rho-growth", type=float, default=1.0)
    p.add_argument("--target-drop", type=float, default=1.0, help="target = dense − this many points")
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..n-1 and average")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true")


def epochs_to_target(result, target: float) -> int | None:
    key = f"hard_prune_bn_{result.metric}" if result.hard_prune_bn else f"hard_prune_{result.metric}"
    return next((e["epoch"] for e in result.epochs if e[key] >= target), None)


def run(args: argparse.Namespace, make_task: Callable[[int], Any], name: str) -> list[dict[str, Any]]:
    """Run the table for every ratio (and seed); print Markdown, write JSON and figures."""
    out = Path(args.out or f"runs/bench_{name}")
    ratios = [float(r) for r in args.ratios.split(",")]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        task = make_task(seed)
        model = task.build_model()
        common = dict(device=args.device, progress=not args.no_progress, seed=seed)
        if args.checkpoint:
            load_artifact(args.checkpoint).build(model)
        else:
            print(f"[seed {seed}] training the dense {args.model} for {args.dense_epochs} epochs", file=sys.stderr)
            Trainer(task, model, TrainConfig(epochs=args.dense_epochs, lr=args.dense_lr, **common), desc="dense").fit()
        dense = None
        for ratio in ratios:
            spec = PruneSpec.uniform(ratio, form=args.form)
            results = {}
            for method in METHODS:
                print(f"[seed {seed}] ratio {ratio}: {method}", file=sys.stderr)
                results[method] = prune(
                    copy.deepcopy(model), task, spec, method,
                    train=TrainConfig(epochs=args.epochs, lr=args.lr, **common),
                    finetune=TrainConfig(epochs=args.finetune_epochs, lr=args.lr, schedule="constant", **common),
                    solver_options={} if method == "magnitude" else {"rho": args.rho, "rho_growth": args.rho_growth},
                    dense_metrics=dense)
                dense = results[method].dense
            metric = results["slr"].metric
            target = dense[metric] - args.target_drop / 100
            row = {"seed": seed, "model": args.model, "ratio": ratio,
                   "compression": 1 / (1 - results["slr"].sparsity), "dense": dense[metric]}
            for method, r in results.items():
                row[f"{method}_hard_stale"] = r.hard_prune[metric]
                row[f"{method}_hard"] = r.best_hard_prune[metric]
                row[f"{method}_finetuned"] = r.finetuned[metric] if r.finetuned else None
                row[f"{method}_epochs_to_target"] = epochs_to_target(r, target)
            rows.append(row)
            plot_hard_prune_curves(list(results.values()), out / f"hard_prune_{ratio}_seed{seed}.png",
                                   f"Hard-prune accuracy per epoch, seed {seed}", model=args.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(markdown(rows, args))
    print(f"\n{len(rows)} rows in {time.perf_counter() - start:.0f} s; JSON and figures in {out}")
    return rows


def _fmt(values: list[float | None], pct: bool = True) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    scale = 100 if pct else 1
    mean = statistics.mean(vals) * scale
    reached = "" if len(vals) == len(values) else f" ({len(vals)}/{len(values)} seeds)"
    if len(vals) == 1:
        return (f"{mean:.2f}" if pct else f"{mean:g}") + reached
    return f"{mean:.2f} ± {statistics.stdev(vals) * scale:.2f}{reached}"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Rows averaged over seeds (mean ± std where seeds > 1)."""
    k = args.finetune_epochs
    head = ["model", "ratio", "compression", "dense %", *(f"{LABELS[m]} hard-prune %" for m in METHODS),
            *(f"{LABELS[m]} +{k} ep %" for m in METHODS), "SLR epochs to target", "ADMM epochs to target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ratio in dict.fromkeys(r["ratio"] for r in rows):
        group = [r for r in rows if r["ratio"] == ratio]
        cells = [group[0]["model"], f"{ratio:g}", f"{group[0]['compression']:.1f}x", _fmt([r["dense"] for r in group])]
        cells += [_fmt([r[f"{m}_hard"] for r in group]) for m in METHODS]
        cells += [_fmt([r[f"{m}_finetuned"] for r in group]) for m in METHODS]
        cells += [_fmt([r[f"{m}_epochs_to_target"] for r in group], pct=False) for m in METHODS[:2]]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nHard-prune accuracy after BatchNorm recalibration; 0-epoch magnitude = one-shot from the dense "
            f"model. SLR and ADMM: {args.epochs} epochs, lr {args.lr}, rho {args.rho} x{args.rho_growth}/epoch, "
            f"{args.form}; target = dense − {args.target_drop} points; '-' = not reached.")
    return "\n".join(lines) + note
