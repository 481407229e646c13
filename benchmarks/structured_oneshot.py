#!/usr/bin/env python
"""Channel removal at zero epochs: every criterion with and without the repair, and the layerwise
criterion, on the digits ResNet-20 (and the digits CNN), 5 seeds.

    python benchmarks/structured_oneshot.py                          # ResNet-20, 5 seeds, 2x and 3x
    python benchmarks/structured_oneshot.py --seeds 2 --targets 0.5 --out runs/so_small

Protocol: the dense models of benchmarks/oneshot.py (train minus a stratified validation split,
same seeds, same epochs); every row starts from its seed's dense model; channels physically removed
through Torch-Pruning's graph at the uniform allocation with exact counts (--round-to 1, so rows
differ only in the criterion), or the error-curve allocation ("layerwise, curves"); "repair" is the
consumers' least-squares re-fit to the dense output on --calibration-batches training batches
before removal, then BatchNorm re-estimated on --bn-batches batches.  Torch-Pruning's MetaPruner
(its defaults) is the external row, with BatchNorm re-estimated too.  The layerwise criterion and
l1 + repair are then fine-tuned 1 and 5 epochs.  Latency: dense and pruned timed alternately in
one process (1 thread, median of --repeats), batch 1 and 64, once per target (every uniform row
has the same architecture).  Accuracy on test; paired per-seed differences with 95% t-intervals.
Writes results.jsonl (re-running skips finished rows), structured_oneshot.json / .md and a figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from slr_prune.console import progress_bar
from slr_prune.engine import TrainConfig
from slr_prune.engine.pipeline import LatencyOptions, measure_latency
from slr_prune.evaluate import BN_BATCHES, recalibrate_task_bn
from slr_prune.structured import structured_prune, torch_pruning_baseline
from slr_prune.structured.workflow import CALIBRATION_BATCHES

sys.path.insert(0, str(Path(__file__).parent))
from solver_study import StudyTask, cpu_name, dense_checkpoint, mean_std, paired  # noqa: E402

CRITERIA = ["l1", "l2", "nuclear", "chip", "lfe", "slr", "admm"]
NEW = "layerwise"


def rows_for(target: float, criteria: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(label, settings) of every row at one MACs target."""
    out = [(f"{c}", {"criterion": c, "repair": False}) for c in criteria]
    out += [(f"{c} + repair", {"criterion": c, "repair": True}) for c in criteria]
    out += [(NEW, {"criterion": NEW, "repair": True}), (f"{NEW}, curves", {"criterion": NEW, "repair": True,
                                                                         "allocation": "curves"}),
            ("torch-pruning + BN", {"criterion": "tp"})]
    return out


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One row on one seed's dense model; with `finetune`, the fine-tuned accuracy after 1 and 5 epochs."""
    torch.set_num_threads(1)
    task = StudyTask(job["model"], 0.2, 64, job["seed"])
    model = task.build_model()
    model.load_state_dict(torch.load(job["dense"], weights_only=True))
    s = job["settings"]
    start = time.perf_counter()
    if s["criterion"] == "tp":
        tp = torch_pruning_baseline(model, task.example_input(), flops_target=job["target"],
                                    ignored_layers=[n.removesuffix(".weight") for n in task.default_exclude])
        stale = task.evaluate(model, torch.device("cpu"))
        recalibrate_task_bn(task, model, torch.device("cpu"), job["bn_batches"], job["seed"])
        bn = task.evaluate(model, torch.device("cpu"))
        macs, params, tuned = tp["costs"]["macs_ratio"], tp["costs"]["params_ratio"], []
    else:
        finetune = TrainConfig(epochs=5, lr=0.01, device="cpu", progress=False, seed=job["seed"]) \
            if job["finetune"] else None
        r = structured_prune(model, task, criterion=s["criterion"], flops_target=job["target"], round_to=1,
                             allocation=s.get("allocation", "uniform"), repair=s["repair"], seed=job["seed"],
                             calibration_batches=job["calibration_batches"], bn_batches=job["bn_batches"],
                             finetune=finetune, device="cpu",
                             criterion_options={"train": TrainConfig(epochs=3, lr=0.01, device="cpu", progress=False,
                                                                     seed=job["seed"])}
                             if s["criterion"] in ("slr", "admm") else None)
        stale, bn = r.pruned, r.pruned_bn or r.pruned
        macs, params = r.costs["macs_ratio"], r.costs["params_ratio"]
        tuned = [e["accuracy"] for e in r.finetune]
    return {**{k: job[k] for k in ("model", "seed", "target", "label")}, "test": stale["accuracy"],
            "val": stale["val_accuracy"], "test_bn": bn["accuracy"], "val_bn": bn["val_accuracy"],
            "macs_ratio": macs, "params_ratio": params, "finetune": tuned, "seconds": time.perf_counter() - start}


def latency_rows(args: argparse.Namespace, model_name: str, dense_path: Path) -> list[dict[str, Any]]:
    """Dense vs the uniform-allocation pruned architecture at each target, batch 1 and 64."""
    torch.set_num_threads(args.threads)
    out = []
    for target in args.targets:
        task = StudyTask(model_name, 0.2, 64, 0)
        model = task.build_model()
        model.load_state_dict(torch.load(dense_path, weights_only=True))
        dense = copy.deepcopy(model)
        structured_prune(model, task, criterion="l1", flops_target=target, round_to=1, repair=False, device="cpu")
        for batch in (1, 64):
            lat = measure_latency(dense, model, task.example_input(),
                                  LatencyOptions(batch_size=batch, repeats=args.repeats, channels_last=False))
            out.append({"model": model_name, "target": target, "batch": batch, "threads": args.threads,
                        "dense_ms": lat["dense"]["median_ms"],
                        "pruned_ms": lat["pruned"]["median_ms"], "speedup": lat["speedup"]})
    return out


def analyse(rows: list[dict[str, Any]], latency: list[dict[str, Any]], dense: dict[str, list[float]]) -> str:
    lines = ["# Channel removal at zero epochs (digits, test accuracy %, mean ± std over seeds)", "",
             f"CPU: {cpu_name()}; accuracy after BatchNorm re-estimation unless a column says stale.", ""]
    for model in sorted({r["model"] for r in rows}):
        lines.append(f"## {model} (dense {mean_std(dense[model])})")
        for target in sorted({r["target"] for r in rows if r["model"] == model}, reverse=True):
            cell = [r for r in rows if r["model"] == model and r["target"] == target]
            by: dict[str, list[dict[str, Any]]] = {}
            for r in sorted(cell, key=lambda r: r["seed"]):
                by.setdefault(r["label"], []).append(r)
            lines += ["", f"### keep {target:.3f} of the MACs", "",
                      f"| row | MACs ↓ | params ↓ | stale BN | + BN | {NEW} − row (paired, 95%) | 1 ep | 5 ep | s |",
                      "|---|---|---|---|---|---|---|---|---|"]
            ref = {r["seed"]: r["test_bn"] for r in by.get(NEW, [])}
            for label, rs in by.items():
                seeds = [r["seed"] for r in rs]
                diff = paired([ref[s] for s in seeds], [r["test_bn"] for r in rs]) \
                    if label != NEW and all(s in ref for s in seeds) else ""
                ft = [r["finetune"] for r in rs if r["finetune"]]
                e1 = mean_std([f[0] for f in ft]) if ft else ""
                e5 = mean_std([f[-1] for f in ft]) if ft else ""
                repaired = rs[0]["label"].endswith(("repair", "BN")) or rs[0]["label"].startswith(NEW)
                lines.append(f"| {label} | {statistics.mean(r['macs_ratio'] for r in rs):.2f}× | "
                             f"{statistics.mean(r['params_ratio'] for r in rs):.2f}× | "
                             f"{mean_std([r['test'] for r in rs])} | "
                             f"{mean_std([r['test_bn'] for r in rs]) if repaired else '—'} | {diff} | {e1} | {e5} | "
                             f"{statistics.mean(r['seconds'] for r in rs):.1f} |")
        lat = [x for x in latency if x["model"] == model]
        if lat:
            lines += ["", f"Latency of the uniform architecture ({lat[0].get('threads', 1)} CPU thread(s), median of "
                      "repeats, dense and pruned alternated in one process):", "",
                      "| keep MACs | batch | dense ms | pruned ms | speed-up |", "|---|---|---|---|---|"]
            lines += [f"| {x['target']:.3f} | {x['batch']} | {x['dense_ms']:.2f} | {x['pruned_ms']:.2f} | "
                      f"{x['speedup']:.2f}× |" for x in lat]
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        cell = [r for r in rows if r["model"] == model]
        labels = list(dict.fromkeys(r["label"] for r in cell))
        targets = sorted({r["target"] for r in cell}, reverse=True)
        width = 0.8 / max(1, len(targets))
        for j, target in enumerate(targets):
            means = [statistics.mean([100 * r["test_bn"] for r in cell if r["label"] == lab and r["target"] == target]
                                     or [0.0]) for lab in labels]
            ax.bar([i + j * width for i in range(len(labels))], means, width, label=f"{1 / target:.1f}× fewer MACs")
        ax.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(labels))], labels, rotation=60,
                      ha="right", fontsize=7)
        ax.set_ylabel("test accuracy % (+ BN), zero epochs")
        ax.set_title(model)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet20")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--targets", type=lambda t: [float(x) for x in t.split(",")], default=[0.5, 1 / 3])
    p.add_argument("--criteria", default=",".join(CRITERIA))
    p.add_argument("--extra-targets", type=lambda t: [float(x) for x in t.split(",") if x], default=[2 / 3],
                   help="targets with only l1 ± repair, layerwise and Torch-Pruning")
    p.add_argument("--bn-batches", type=int, default=BN_BATCHES)
    p.add_argument("--calibration-batches", type=int, default=CALIBRATION_BATCHES)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the latency measurement")
    p.add_argument("--latency-only", action="store_true",
                   help="re-measure the latency (on an otherwise idle machine); rewrite the report from results.jsonl")
    p.add_argument("--out", default="runs/structured_oneshot")
    p.add_argument("--dense-out", default="runs/oneshot", help="where benchmarks/oneshot.py keeps the dense models")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, dense, dense_paths = [], {}, {}
    for model in args.models.split(","):
        dense[model] = []
        for seed in range(args.seeds):
            study = argparse.Namespace(model=model, val_fraction=0.2, batch_size=64, dense_epochs=15,
                                       out=args.dense_out)
            path = dense_checkpoint(study, seed)
            dense_paths[model] = dense_paths.get(model, path)
            dense[model].append(json.loads(path.with_suffix(".json").read_text())["accuracy"])
            for target in [*args.targets, *args.extra_targets]:
                crits = args.criteria.split(",") if target in args.targets else ["l1"]
                for label, settings in rows_for(target, crits):
                    if target not in args.targets and label not in ("l1", "l1 + repair", NEW, "torch-pruning + BN"):
                        continue
                    jobs.append({"model": model, "seed": seed, "target": target, "label": label, "dense": str(path),
                                 "settings": settings, "bn_batches": args.bn_batches,
                                 "calibration_batches": args.calibration_batches,
                                 "finetune": label in (NEW, "l1 + repair") and target in args.targets})
    done_file = out / "results.jsonl"
    rows = [json.loads(x) for x in done_file.read_text().splitlines()] if done_file.is_file() else []
    seen = {(r["model"], r["seed"], r["target"], r["label"]) for r in rows}
    todo = [j for j in jobs if (j["model"], j["seed"], j["target"], j["label"]) not in seen and not args.latency_only]
    with mp.get_context("spawn").Pool(args.jobs) as pool, done_file.open("a") as f:
        for got in progress_bar(pool.imap_unordered(run_one, todo), total=len(todo), desc="structured one-shot"):
            rows.append(got)
            f.write(json.dumps(got) + "\n")
            f.flush()
    latency = [x for m, path in dense_paths.items() for x in latency_rows(args, m, path)]
    text = analyse(rows, latency, dense)
    (out / "structured_oneshot.md").write_text(text)
    (out / "structured_oneshot.json").write_text(json.dumps({"rows": rows, "latency": latency, "dense": dense},
                                                            indent=1))
    plot(rows, out / "structured_oneshot.png")
    print(text)


if __name__ == "__main__":
    main()
