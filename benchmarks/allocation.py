"""Per-layer budgets at one overall unstructured ratio: `prune --method layerwise` under each allocation.

ResNet-20 on the shipped digits (the dense models of benchmarks/solver_study.py, one per seed), zero
epochs, the layer-wise reconstruction with its defaults; per allocation rule the test accuracy
without and with BatchNorm recalibration, the seconds of the whole prune and, for `curves`, of its
error database.  One JSON line per (seed, rule) is appended to --out as it finishes, so a partial
run keeps what it measured; a summary table is printed at the end.

    python benchmarks/allocation.py --seeds 2 --out runs/allocation/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from solver_study import StudyTask, dense_checkpoint  # noqa: E402

from slr_prune import PruneSpec  # noqa: E402
from slr_prune.engine import TrainConfig, prune  # noqa: E402
from slr_prune.engine.allocation import ALLOCATIONS  # noqa: E402


def run_one(args: argparse.Namespace, seed: int, rule: str) -> dict:
    task = StudyTask(args.model, args.val_fraction, args.batch_size, seed)
    model = task.build_model()
    model.load_state_dict(torch.load(dense_checkpoint(args, seed), weights_only=True))
    start = time.perf_counter()
    result = prune(model, task, PruneSpec.uniform(args.ratio), "layerwise", allocation=rule,
                   train=TrainConfig(epochs=0, device="cpu", progress=False, seed=seed), bn_batches=args.bn_batches)
    info = result.allocation["info"]
    return {"seed": seed, "rule": rule, "sparsity": result.sparsity, "test": result.hard_prune["accuracy"],
            "test_bn": result.best_hard_prune["accuracy"], "seconds": time.perf_counter() - start,
            "database_seconds": info.get("database_seconds"), "candidates": info.get("candidates"),
            "ratios": result.allocation["ratios"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--ratio", type=float, default=0.95)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rules", default=",".join(ALLOCATIONS.list()))
    p.add_argument("--dense-epochs", type=int, default=15, help="as the solver study")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--bn-batches", type=int, default=32)
    p.add_argument("--dense", default="runs/oneshot", help="folder of the solver study's dense models")
    p.add_argument("--out", default="runs/allocation/rows.jsonl")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):
        for rule in args.rules.split(","):
            row = run_one(argparse.Namespace(**{**vars(args), "out": args.dense}), seed, rule)
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed} {rule}: {100 * row['test_bn']:.1f}% (+ BN), {row['seconds']:.0f} s", flush=True)
    print("| allocation | test % (+ BN recal.) | test % (stale BN) | prune seconds | database seconds |")
    print("|---|---|---|---|---|")
    for rule in dict.fromkeys(r["rule"] for r in rows):
        mine = [r for r in rows if r["rule"] == rule]

        def fmt(key: str, scale: float = 100.0, rows_: list = mine) -> str:
            v = [scale * r[key] for r in rows_ if r[key] is not None]
            if not v:
                return "-"
            return f"{statistics.mean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")

        print(f"| {rule} | {fmt('test_bn')} | {fmt('test')} | {fmt('seconds', 1.0)} | {fmt('database_seconds', 1.0)} |")


if __name__ == "__main__":
    main()
