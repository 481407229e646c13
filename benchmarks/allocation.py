#!/usr/bin/env python
"""Per-layer budgets at one overall unstructured ratio: `prune --method layerwise` under each
allocation, each layer solver and each reconstruction target, zero epochs, 5 seeds.

    python benchmarks/allocation.py                                        # 90/95/98 %, slr and admm
    python benchmarks/allocation.py --ratios 0.5,0.7,0.8 --layer-solvers slr
    python benchmarks/allocation.py --targets current --rules uniform,lamp  # the target's effect

Protocol: the dense ResNet-20 models of benchmarks/oneshot.py (digits, train minus a stratified
validation split, one per seed); every row starts from its seed's dense model and runs the
layer-wise reconstruction with its defaults except the named layer solver and target; test
accuracy without and with BatchNorm recalibration (32 batches), validation accuracy beside it,
seconds of the whole prune and, for `curves`, of its error database.  Paired per-seed differences
against uniform and against global magnitude with 95% t-intervals.  results.jsonl is appended as
rows finish (re-running skips them); allocation.md / allocation.json and a figure of the per-layer
ratios are written at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from solver_study import T95, StudyTask, cpu_name, dense_checkpoint, mean_std  # noqa: E402

from slr_prune import PruneSpec  # noqa: E402
from slr_prune.console import progress_bar  # noqa: E402
from slr_prune.engine import TrainConfig, prune  # noqa: E402
from slr_prune.engine.allocation import ALLOCATIONS  # noqa: E402

KEY = ("seed", "ratio", "rule", "layer_solver", "target")


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    task = StudyTask(job["model"], 0.2, 64, job["seed"])
    model = task.build_model()
    model.load_state_dict(torch.load(job["dense"], weights_only=True))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-layer lines of every run
        result = prune(model, task, PruneSpec.uniform(job["ratio"]), "layerwise", allocation=job["rule"],
                       solver_options={"layer_solver": job["layer_solver"], "target": job["target"]},
                       train=TrainConfig(epochs=0, device="cpu", progress=False, seed=job["seed"]),
                       bn_batches=job["bn_batches"])
    info = result.allocation["info"]
    best = result.best_hard_prune
    return {**{k: job[k] for k in ("model", *KEY)}, "sparsity": result.sparsity,
            "test": result.hard_prune["accuracy"], "test_bn": best["accuracy"], "val_bn": best["val_accuracy"],
            "seconds": time.perf_counter() - start, "database_seconds": info.get("database_seconds"),
            "ratios": result.allocation["ratios"]}


def paired_ci(a: list[float], b: list[float]) -> str:
    d = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    if len(d) < 2:
        return f"{d[0]:+.1f}" if d else ""
    m, half = statistics.mean(d), T95.get(len(d) - 1, 1.96) * statistics.stdev(d) / math.sqrt(len(d))
    return f"{m:+.1f} [{m - half:+.1f}, {m + half:+.1f}]"


def analyse(rows: list[dict[str, Any]], dense: list[float]) -> str:
    lines = ["# Per-layer budgets at zero epochs (ResNet-20, digits; test top-1 %, mean ± std over seeds)", "",
             f"CPU: {cpu_name()}, 1 thread per run; dense {mean_std(dense)}.  Paired differences are per seed, "
             "with 95% t-intervals.", ""]
    cells = sorted({(r["ratio"], r["layer_solver"], r["target"]) for r in rows})
    for ratio, solver, target in cells:
        cell = [r for r in rows if (r["ratio"], r["layer_solver"], r["target"]) == (ratio, solver, target)]
        by: dict[str, dict[int, dict[str, Any]]] = {}
        for r in cell:
            by.setdefault(r["rule"], {})[r["seed"]] = r
        lines += [f"## {100 * ratio:g}% unstructured, layer solver {solver}, target {target}", "",
                  "| allocation | + BN | stale BN | val + BN | − uniform | − global | s | database s |",
                  "|---|---|---|---|---|---|---|---|"]
        for rule, rs in by.items():
            seeds = sorted(rs)

            def vs(other: str, seeds: list[int] = seeds, rs: dict = rs, by: dict = by, rule: str = rule) -> str:
                ref = by.get(other, {})
                common = [s for s in seeds if s in ref]
                if other == rule or not common:
                    return ""
                return paired_ci([rs[s]["test_bn"] for s in common], [ref[s]["test_bn"] for s in common])

            db = [rs[s]["database_seconds"] for s in seeds if rs[s]["database_seconds"] is not None]
            lines.append(f"| {rule} | {mean_std([rs[s]['test_bn'] for s in seeds])} | "
                         f"{mean_std([rs[s]['test'] for s in seeds])} | {mean_std([rs[s]['val_bn'] for s in seeds])} | "
                         f"{vs('uniform')} | {vs('global')} | {statistics.mean(rs[s]['seconds'] for s in seeds):.1f} | "
                         f"{f'{statistics.mean(db):.1f}' if db else ''} |")
        lines.append("")
    return "\n".join(lines)


def plot_ratios(rows: list[dict[str, Any]], out: Path, ratio: float = 0.95) -> None:
    """Per-layer ratios of each rule at `ratio` (seed 0, slr, the first target present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if r["ratio"] == ratio and r["seed"] == 0 and r["layer_solver"] == "slr"]
    if not chosen:
        return
    target = chosen[0]["target"]
    chosen = [r for r in chosen if r["target"] == target]
    layers = list(chosen[0]["ratios"])
    fig, ax = plt.subplots(figsize=(10, 4))
    for r in chosen:
        ax.plot(range(len(layers)), [100 * r["ratios"][n] for n in layers], marker="o", label=r["rule"])
    ax.set_xticks(range(len(layers)), [n.removesuffix(".weight") for n in layers], rotation=70, fontsize=7)
    ax.set_ylabel("pruned % of the layer")
    ax.set_title(f"ResNet-20, {100 * ratio:g}% overall, seed 0 (target {target})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--ratios", default="0.9,0.95,0.98")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rules", default=",".join(ALLOCATIONS.list()))
    p.add_argument("--layer-solvers", default="slr,admm")
    p.add_argument("--targets", default="dense")
    p.add_argument("--bn-batches", type=int, default=32)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--dense", default="runs/oneshot", help="folder of the solver study's dense models")
    p.add_argument("--out", default="runs/allocation")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dense, jobs = [], []
    for seed in range(args.seeds):
        study = argparse.Namespace(model=args.model, val_fraction=0.2, batch_size=64, dense_epochs=15, out=args.dense)
        path = dense_checkpoint(study, seed)
        dense.append(json.loads(path.with_suffix(".json").read_text())["accuracy"])
        for ratio in map(float, args.ratios.split(",")):
            for solver in args.layer_solvers.split(","):
                for target in args.targets.split(","):
                    for rule in args.rules.split(","):
                        jobs.append({"model": args.model, "seed": seed, "ratio": ratio, "rule": rule,
                                     "layer_solver": solver, "target": target, "dense": str(path),
                                     "bn_batches": args.bn_batches})
    done = out / "results.jsonl"
    rows = [json.loads(x) for x in done.read_text().splitlines()] if done.is_file() else []
    seen = {tuple(r[k] for k in KEY) for r in rows}
    todo = [j for j in jobs if tuple(j[k] for k in KEY) not in seen]
    with mp.get_context("spawn").Pool(args.jobs) as pool, done.open("a") as f:
        for got in progress_bar(pool.imap_unordered(run_one, todo), total=len(todo), desc="allocation"):
            rows.append(got)
            f.write(json.dumps(got) + "\n")
            f.flush()
    text = analyse(rows, dense)
    (out / "allocation.md").write_text(text)
    (out / "allocation.json").write_text(json.dumps({"rows": rows, "dense": dense}, indent=1))
    plot_ratios(rows, out / "allocation_ratios.png")
    print(text)


if __name__ == "__main__":
    main()
