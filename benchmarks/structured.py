#!/usr/bin/env python
"""Structured pruning benchmark in the layout of the papers' CIFAR-10 tables.

For each model (default ResNet-56 and ResNet-110, the CIFAR ResNets of CHIP and energy-aware
pruning) and each criterion (l1, l2, nuclear, chip, lfe, slr, admm) plus Torch-Pruning's own
group-magnitude pruning as the external baseline, all at the same FLOPs target:

    dense accuracy → prune (physically) → accuracy without retraining → fine-tune → accuracy,
    params and FLOPs reduction, wall time

Every method starts from the same dense checkpoint (trained here once, cached in --out) and gets
the same fine-tuning (epochs, LR, cosine schedule).  slr and admm additionally train
--solver-epochs under filter constraints before the hard prune: that is the method, and the table
says so.  Our criteria use uniform allocation with exact channel counts (--round-to 1) unless told
otherwise, so the comparison isolates the criterion; Torch-Pruning runs with its defaults at the
uniform ratio that meets the same target.

Data: CIFAR-10 when --data points at a folder holding cifar-10-batches-py (never downloaded);
otherwise the shipped scikit-learn digits (8×8 grey, 1,347 train / 450 test images), which the
CIFAR ResNets accept unchanged.  Digits numbers show that the pipeline works and how the methods
rank at small scale; they are not CIFAR-10 numbers.

Examples::

    python benchmarks/structured.py                                   # digits, ResNet-56/110
    python benchmarks/structured.py --models resnet56 --dense-epochs 30 --finetune-epochs 10
    python benchmarks/structured.py --data ~/data --dense-epochs 160 --finetune-epochs 40 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slr_prune.adapters import ClassificationTask  # noqa: E402
from slr_prune.artifact import Artifact, load_artifact, save_artifact  # noqa: E402
from slr_prune.engine import TrainConfig, Trainer, resolve_device  # noqa: E402
from slr_prune.structured import CRITERIA, structured_prune, torch_pruning_baseline  # noqa: E402

ALL_CRITERIA = tuple(CRITERIA.list())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet56,resnet110")
    p.add_argument("--data", default=None, help="folder with cifar-10-batches-py; digits when absent")
    p.add_argument("--criteria", default=",".join(ALL_CRITERIA))
    p.add_argument("--no-baseline", action="store_true", help="skip Torch-Pruning's group-magnitude baseline")
    p.add_argument("--flops-target", type=float, default=0.5, help="fraction of dense MACs to keep")
    p.add_argument("--allocation", default="uniform", choices=["uniform", "convex"])
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--dense-epochs", type=int, default=20)
    p.add_argument("--dense-lr", type=float, default=0.05)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--solver-epochs", type=int, default=3, help="slr/admm training under filter constraints")
    p.add_argument("--solver-lr", type=float, default=0.01)
    p.add_argument("--calibration-batches", type=int, default=4)
    p.add_argument("--lfe-samples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_structured")
    return p.parse_args(argv)


def make_task(args: argparse.Namespace, model: str) -> ClassificationTask:
    if args.data and (Path(args.data).expanduser() / "cifar-10-batches-py").is_dir():
        return ClassificationTask(model=model, dataset="cifar10", data=Path(args.data).expanduser(),
                                  batch_size=args.batch_size, seed=args.seed)
    if args.data:
        print(f"note: no cifar-10-batches-py under {args.data!r}; using the shipped digits", file=sys.stderr)
    return ClassificationTask(model=model, dataset="digits", batch_size=args.batch_size, seed=args.seed)


def config(args: argparse.Namespace, epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, schedule="cosine", device=args.device, progress=False, seed=args.seed)


def dense_model(args: argparse.Namespace, task: ClassificationTask, out: Path) -> tuple[torch.nn.Module, dict]:
    """Train the dense baseline once; later runs reuse the cached checkpoint."""
    path = out / f"{task.name}-dense-e{args.dense_epochs}-s{args.seed}.pt"
    model = task.build_model()
    if path.is_file():
        load_artifact(path).build(model)
        return model, {"cached": str(path)}
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    Trainer(task, model, config(args, args.dense_epochs, args.dense_lr), desc="dense").fit()
    save_artifact(Artifact.of(model, task), path)
    return model, {"trained_seconds": time.perf_counter() - t0, "path": str(path)}


def run_ours(args: argparse.Namespace, task: ClassificationTask, dense: torch.nn.Module, criterion: str) -> dict:
    model = copy.deepcopy(dense)
    options: dict[str, Any] = {}
    entry = CRITERIA.get(criterion)
    if any(f.name == "samples" for f in dataclasses.fields(entry.options)):
        options = {"samples": args.lfe_samples}
    trains = bool(entry.traits.get("solver"))
    if trains:
        options = {"train": config(args, args.solver_epochs, args.solver_lr)}
    torch.manual_seed(args.seed)
    r = structured_prune(model, task, criterion=criterion, criterion_options=options, flops_target=args.flops_target,
                         allocation=args.allocation, round_to=args.round_to, ignored_layers=(),
                         calibration_batches=args.calibration_batches, device=args.device,
                         finetune=config(args, args.finetune_epochs, args.finetune_lr))
    metric = task.metric
    return {"method": criterion, "dense": r.dense[metric], "pruned": r.pruned[metric],
            "finetuned": r.finetuned[metric] if r.finetuned else r.pruned[metric],
            "params": r.costs["after"]["params"], "macs": r.costs["after"]["macs"],
            "params_before": r.costs["before"]["params"], "macs_before": r.costs["before"]["macs"],
            "seconds": r.seconds, "counts": r.counts,
            "note": f"+{args.solver_epochs} {criterion} epochs" if trains else ""}


def run_tp(args: argparse.Namespace, task: ClassificationTask, dense: torch.nn.Module) -> dict:
    model = copy.deepcopy(dense)
    device = resolve_device(args.device)
    model.to(device)
    metric = task.metric
    t0 = time.perf_counter()
    dense_metric = task.evaluate(model, device)[metric]
    b = torch_pruning_baseline(model, task.example_input(), flops_target=args.flops_target)
    prune_s = time.perf_counter() - t0
    pruned = task.evaluate(model, device)[metric]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    history = Trainer(task, model, config(args, args.finetune_epochs, args.finetune_lr), desc="finetune").fit() \
        if args.finetune_epochs > 0 else []
    return {"method": "torch-pruning (group L2)", "dense": dense_metric, "pruned": pruned,
            "finetuned": history[-1][metric] if history else pruned,
            "params": b["costs"]["after"]["params"], "macs": b["costs"]["after"]["macs"],
            "params_before": b["costs"]["before"]["params"], "macs_before": b["costs"]["before"]["macs"],
            "seconds": {"criterion": prune_s, "finetune": time.perf_counter() - t0},
            "note": f"its defaults, ratio {b['ratio']:.3f}"}


def table(rows: list[dict], dataset: str, args: argparse.Namespace) -> str:
    lines = [f"FLOPs target {args.flops_target:g} of dense MACs, {args.allocation} allocation, round_to "
             f"{args.round_to}; {dataset}; dense {args.dense_epochs} epochs, fine-tuning {args.finetune_epochs} "
             f"epochs (LR {args.finetune_lr}, cosine)", "",
             "| Model | Method | Dense acc | Pruned acc (no FT) | Acc after FT | Δ | Params ↓ | FLOPs ↓ | "
             "score+alloc s | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p_red = 1 - r["params"] / r["params_before"]
        f_red = 1 - r["macs"] / r["macs_before"]
        secs = r["seconds"].get("criterion", 0) + r["seconds"].get("allocation", 0)
        lines.append(f"| {r['model']} | {r['method']} | {100 * r['dense']:.2f} | {100 * r['pruned']:.2f} | "
                     f"{100 * r['finetuned']:.2f} | {100 * (r['finetuned'] - r['dense']):+.2f} | {100 * p_red:.1f}% | "
                     f"{100 * f_red:.1f}% | {secs:.1f} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    criteria = [c.strip() for c in args.criteria.split(",") if c.strip()]
    bad = [c for c in criteria if c not in ALL_CRITERIA]
    if bad:
        print(f"unknown criteria {bad}; choose from {', '.join(ALL_CRITERIA)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    dataset = "digits"
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        task = make_task(args, name)
        dataset = task.dataset_name
        dense, info = dense_model(args, task, out)
        print(f"{task.name}: dense model {info}", flush=True)
        for crit in criteria:
            row = {"model": name, **run_ours(args, task, dense, crit)}
            rows.append(row)
            print(f"  {crit:<8} pruned {100 * row['pruned']:.2f}  fine-tuned {100 * row['finetuned']:.2f}  "
                  f"MACs {row['macs'] / row['macs_before']:.3f}", flush=True)
        if not args.no_baseline:
            row = {"model": name, **run_tp(args, task, dense)}
            rows.append(row)
            print(f"  tp       pruned {100 * row['pruned']:.2f}  fine-tuned {100 * row['finetuned']:.2f}  "
                  f"MACs {row['macs'] / row['macs_before']:.3f}", flush=True)
    text = table(rows, dataset, args)
    print("\n" + text)
    (out / "structured.md").write_text(text + "\n")
    (out / "structured.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    print(f"\nwritten: {out / 'structured.md'}, {out / 'structured.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
