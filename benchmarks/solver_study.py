#!/usr/bin/env python
"""The fair solver study: every method tuned with the same budget on validation, reported on test.

    python benchmarks/solver_study.py                          # the full protocol (about 1 h on 2 cores)
    python benchmarks/solver_study.py --seeds 2 --ratios 0.95 --budgets 10 --out runs/study_small

Protocol:
- per seed, one dense model trained on the train split minus a stratified validation split
  (`--val-fraction` of it); every method of that seed starts from it;
- every method has the same number of configurations (its own knobs); the one with the best mean
  validation hard-prune accuracy after BatchNorm recalibration is chosen per ratio and budget,
  and its test accuracy is reported (mean ± std over seeds); SLR's default is also reported untuned;
- the zero-epoch baseline (one-shot magnitude + BatchNorm recalibration) is a row of every table;
- paired per-seed differences (SLR default − each method) with a 95% t-interval;
- epochs to reach dense − 1 point (test, recalibrated) from the per-epoch curve of the chosen run.

Writes `results.jsonl` (one line per run; re-running skips finished runs), `study.json`,
`study.md` and figures under `--out`.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from slr_prune import PruneSpec
from slr_prune.adapters import ClassificationTask
from slr_prune.console import progress_bar
from slr_prune.engine import TrainConfig, Trainer, prune
from slr_prune.evaluate import BN_BATCHES
from slr_prune.solvers import SOLVERS

PRUNE_LR = 0.01
# (ρ at the start, ρ at the end) and (lr, share of the budget the ramp takes).  "full" is the first
# study's 4-point grids; "wide" adds the 2 points past each grid's edge that the first study chose
# (ρ_end 10 by ADMM, 100 by SLR; lr 0.03 by gradual magnitude), 6 configurations per method.
RHO_GRIDS = {"full": [(0.03, 30.0), (0.1, 10.0), (0.1, 30.0), (0.1, 100.0)]}
RHO_GRIDS["wide"] = RHO_GRIDS["full"] + [(0.1, 3.0), (0.1, 300.0)]
GMP_GRIDS = {"full": [(lr, end) for lr in (0.01, 0.03) for end in (0.3, 0.5)]}
GMP_GRIDS["wide"] = GMP_GRIDS["full"] + [(0.1, 0.3), (0.1, 0.5)]

DEFAULT_RHO = 0.1  # where the CLI's and the demo's ρ schedule starts; each solver config's `recommended()` ends it
GMP_DEFAULT = (0.01, 0.5)  # gradual magnitude without tuning: the prune lr, ramp over half the budget
SLR_DEFAULT: dict[str, Any] = {}  # filled from slr_prune's SLR defaults plus the study's ρ schedule


# ---- data: train / validation / test ---------------------------------------------------------------
class StudyTask(ClassificationTask):
    """Classification on train minus a validation split; `accuracy` is test, `val_accuracy` validation."""

    def __init__(self, model: str, val_fraction: float, batch_size: int, seed: int, probe_holdout: int = 0):
        super().__init__(model, "digits", batch_size=batch_size, seed=seed)
        from sklearn.model_selection import train_test_split

        labels = self.train_set.labels.numpy()
        tr, va = train_test_split(range(len(labels)), test_size=val_fraction, random_state=1000 + seed,
                                  stratify=labels)
        full = self.train_set
        self.test_set = self.val_set
        self.train_set = Subset(full, tr)
        self.holdout = copy.copy(full)
        self.holdout.augment = False
        self.holdout_set = Subset(self.holdout, va)
        if probe_holdout:  # SLR's probe batches from training examples the W-step never sees
            self.hold_out_probe(probe_holdout, seed)

    def evaluate(self, model, device):
        test = super().evaluate(model, device)
        saved, self.val_set = self.val_set, self.holdout_set
        try:
            val = super().evaluate(model, device)
        finally:
            self.val_set = saved
        return {**test, "val_accuracy": val["accuracy"]}


# ---- methods -----------------------------------------------------------------------------------------
def configs(method: str, grid: str = "full") -> list[dict[str, Any]]:
    """The tuning grid of `method` (the same number of configurations for every trained method);
    grid "default" is each method's one default configuration (no tuning)."""
    if method in ("admm", "slr"):
        points = [(DEFAULT_RHO, SOLVERS[method].options.RECOMMENDED_RHO_END)] if grid == "default" else RHO_GRIDS[grid]
        return [{"rho0": a, "rho_end": b} for a, b in points]
    if method == "gmp":
        return [{"lr": a, "ramp": b} for a, b in ([GMP_DEFAULT] if grid == "default" else GMP_GRIDS[grid])]
    if method == "slr_default":
        return [{"rho0": SLR_DEFAULT["rho0"], "rho_end": SLR_DEFAULT["rho_end"]}]
    if method == "zero":
        return [{}]
    raise ValueError(f"unknown method {method!r}")


def penalty_options(options: dict[str, Any], rho0: float, rho_end: float, task, epochs: int) -> dict[str, Any]:
    """Solver options with ρ growing geometrically from rho0 to rho_end over the run's updates;
    `ramp_share` (of those updates) becomes the Z-step ramp length."""
    opts = dict(options)
    share = opts.pop("ramp_share", 0.0)
    if share:
        every = opts.get("update_every", 0)
        per_epoch = max(1, len(task.train_loader()) // every) if every else 1
        opts["ramp"] = max(1, round(share * epochs * per_epoch))
    return {**opts, "rho": rho0, "rho_end": rho_end}


def slr_options(config: dict[str, Any], task, epochs: int) -> dict[str, Any]:
    """SLR's options for a run; `probe_holdout` in --slr is the task's, not the solver's."""
    options = {k: v for k, v in SLR_DEFAULT["options"].items() if k != "probe_holdout"}
    return penalty_options(options, config["rho0"], config["rho_end"], task, epochs)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or not) one method/config from the seed's dense model; the final and per-epoch metrics."""
    torch.set_num_threads(1)
    seed, ratio, epochs, method, config = job["seed"], job["ratio"], job["epochs"], job["method"], job["config"]
    holdout = SLR_DEFAULT["options"].get("probe_holdout", 0) if method in ("slr", "slr_default") else 0
    task = StudyTask(job["model"], job["val_fraction"], job["batch_size"], seed, probe_holdout=holdout)
    model = task.build_model()
    model.load_state_dict(torch.load(job["dense"], weights_only=True))
    spec = PruneSpec.uniform(ratio)
    common = dict(device="cpu", progress=False, seed=seed)
    start = time.perf_counter()
    if method == "zero":
        name, options, lr = "magnitude", {"schedule": "oneshot"}, PRUNE_LR
    elif method == "gmp":
        name, lr = "magnitude", config["lr"]
        options = {"schedule": "cubic", "steps": max(1, round(config["ramp"] * epochs))}
    elif method == "admm":
        name, lr = "admm", PRUNE_LR
        options = penalty_options(config.get("admm", {}), config["rho0"], config["rho_end"], task, epochs)
    else:  # slr, slr_default
        name, lr = "slr", PRUNE_LR
        options = slr_options(config, task, epochs)
    result = prune(model, task, spec, name, train=TrainConfig(epochs=epochs, lr=lr, **common),
                   solver_options=options, bn_batches=job["bn_batches"])
    final = {"hard": result.hard_prune, "hard_bn": result.hard_prune_bn}
    curve = [{"epoch": e["epoch"], "hard": e["hard_prune_accuracy"], "hard_bn": e.get("hard_prune_bn_accuracy")}
             for e in result.epochs]
    return {**{k: job[k] for k in ("seed", "ratio", "epochs", "method", "config", "model")},
            "test": final["hard"]["accuracy"], "val": final["hard"]["val_accuracy"],
            "test_bn": final["hard_bn"]["accuracy"], "val_bn": final["hard_bn"]["val_accuracy"],
            "curve": curve, "seconds": time.perf_counter() - start}


def run_key(run: dict[str, Any]) -> tuple:
    """What identifies a run (a job or its result row)."""
    return run["seed"], run["ratio"], run["epochs"], run["method"], json.dumps(run["config"], sort_keys=True)


def grid_twin(job: dict[str, Any]) -> tuple | None:
    """The key of the tuned-grid SLR run that computes exactly what this `slr_default` job does
    (the default ρ schedule is a grid point), so it runs once and is reported in both rows."""
    if job["method"] != "slr_default":
        return None
    return run_key({**job, "method": "slr"})


# ---- dense models ------------------------------------------------------------------------------------
def dense_checkpoint(args, seed: int) -> Path:
    path = Path(args.out) / "dense" / f"{args.model}_seed{seed}.pt"
    if not path.is_file():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the workers: the same dense model whatever the machine's thread count
        torch.manual_seed(seed)
        task = StudyTask(args.model, args.val_fraction, args.batch_size, seed)
        model = task.build_model()
        Trainer(task, model, TrainConfig(epochs=args.dense_epochs, lr=0.05, device="cpu", progress=False,
                                         seed=seed), desc="dense").fit()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        (path.with_suffix(".json")).write_text(json.dumps(task.evaluate(model, torch.device("cpu"))))
        torch.set_num_threads(threads)
    return path


# ---- analysis ----------------------------------------------------------------------------------------
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def mean_std(values: list[float]) -> str:
    v = [100 * x for x in values]
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def paired(a: list[float], b: list[float]) -> str:
    d = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    if len(d) < 2:
        return f"{d[0]:+.1f}"
    half = T95.get(len(d) - 1, 1.96) * statistics.stdev(d) / math.sqrt(len(d))
    m = statistics.mean(d)
    return f"{m:+.1f} [{m - half:+.1f}, {m + half:+.1f}]"


def epochs_to(curve: list[dict[str, Any]], target: float, key: str) -> int | None:
    return next((c["epoch"] for c in curve if c.get(key) is not None and c[key] >= target), None)


def analyse(rows: list[dict[str, Any]], args, dense: dict[int, float]) -> dict[str, Any]:
    """Choose each method's configuration on validation; test means, paired differences, epochs."""
    out: dict[str, Any] = {"cells": []}
    seeds = sorted({r["seed"] for r in rows})
    for ratio, epochs in itertools.product(args.ratios, args.budgets):
        cell = {"ratio": ratio, "epochs": epochs, "methods": {}}
        for method in args.methods:
            runs = [r for r in rows if r["method"] == method and r["ratio"] == ratio
                    and (r["epochs"] == epochs or method == "zero")]
            if not runs:
                continue
            by_config: dict[str, list[dict]] = {}
            for r in runs:
                by_config.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r)
            complete = {k: v for k, v in by_config.items() if len(v) == len(seeds)}
            if not complete:
                continue
            for key in ("val_bn", "val"):  # chosen with and without recalibration, each on its own score
                best = max(complete, key=lambda k, key=key: statistics.mean(r[key] for r in complete[k]))
                chosen = sorted(complete[best], key=lambda r: r["seed"])
                test_key = key.replace("val", "test")
                curve_key = "hard_bn" if key == "val_bn" else "hard"
                eps = [epochs_to(r["curve"], dense[r["seed"]] - 0.01, curve_key) for r in chosen]
                cell["methods"].setdefault(method, {})[test_key] = {
                    "config": json.loads(best), "test": [r[test_key] for r in chosen],
                    "epochs_to_target": eps, "seconds": statistics.mean(r["seconds"] for r in chosen)}
        out["cells"].append(cell)
    return out


NAMES = {"zero": "one-shot magnitude (0 epochs)", "gmp": "gradual magnitude (cubic)",
"admm": "ADMM (tuned)", "slr": "SLR (tuned)",
         "slr_default": "SLR (default, untuned)"}


def markdown(summary: dict[str, Any], args, dense: dict[int, float]) -> str:
    lines = [f"Dense test accuracy {mean_std(list(dense.values()))} ({len(dense)} seeds). "
             "Cells: test accuracy after hard pruning, mean ± std over seeds; '+bn' = after BatchNorm "
             f"recalibration ({args.bn_batches} batches). Paired: SLR default − method, mean [95% CI], points.", ""]
    for epochs in args.budgets:
        lines += [f"### {epochs}-epoch budget", "",
                  "| method | " + " | ".join(f"{r:g} | {r:g} +bn | paired +bn | ep→dense−1 +bn" for r in args.ratios)
                  + " |", "|---|" + "---|---|---|---|" * len(args.ratios)]
        for method in args.methods:
            cells = []
            for ratio in args.ratios:
                cell = next(c for c in summary["cells"] if c["ratio"] == ratio and c["epochs"] == epochs)
                m = cell["methods"].get(method)
                ref = cell["methods"].get("slr_default")
                if m is None:
                    cells += ["-"] * 4
                    continue
                eps = m["test_bn"]["epochs_to_target"]
                reached = [e for e in eps if e is not None]
                share = f"({len(reached)}/{len(eps)})"
                ep = "-" if method == "zero" else (
                    f"{statistics.mean(reached):.1f} {share}" if reached else f"never {share}")
                diff = paired(ref["test_bn"]["test"], m["test_bn"]["test"]) if ref and method != "slr_default" else ""
                cells += [mean_std(m["test"]["test"]), mean_std(m["test_bn"]["test"]), diff, ep]
            name = NAMES.get(method, method)
            if args.grid == "default":
                name = name.replace("(tuned)", "(default)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Chosen configurations (on validation, with recalibration):")
    for cell in summary["cells"]:
        chosen = {m: v["test_bn"]["config"] for m, v in cell["methods"].items() if v["test_bn"]["config"]}
        lines.append(f"- {cell['ratio']:g}, {cell['epochs']} epochs: {json.dumps(chosen)}")
    return "\n".join(lines)


def plot(summary: dict[str, Any], rows: list[dict[str, Any]], args, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = max(args.budgets)
    fig, axes = plt.subplots(1, len(args.ratios), figsize=(4.2 * len(args.ratios), 3.6), dpi=120, squeeze=False)
    for ax, ratio in zip(axes[0], args.ratios, strict=True):
        cell = next(c for c in summary["cells"] if c["ratio"] == ratio and c["epochs"] == budget)
        for method in ("slr_default", "slr", "admm", "gmp"):
            m = cell["methods"].get(method)
            if not m:
                continue
            config = m["test_bn"]["config"]
            runs = [r for r in rows if r["method"] == method and r["ratio"] == ratio and r["epochs"] == budget
                    and r["config"] == config]
            curves = [[c["hard_bn"] for c in r["curve"]] for r in runs]
            if curves and all(curves):
                mean = [100 * statistics.mean(v) for v in zip(*curves, strict=True)]
                ax.plot(range(1, len(mean) + 1), mean, label=NAMES[method])
        zero = cell["methods"].get("zero")
        if zero:
            ax.axhline(100 * statistics.mean(zero["test_bn"]["test"]), color="gray", ls="--", label=NAMES["zero"])
        ax.set_title(f"{ratio:.0%} unstructured, {budget} epochs")
        ax.set_xlabel("epoch")
        ax.set_ylabel("hard prune + BN recal. test acc. (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    for method in args.methods:
        pts = []
        for ratio in args.ratios:
            cell = next(c for c in summary["cells"] if c["ratio"] == ratio and c["epochs"] == budget)
            if method in cell["methods"]:
                pts.append((100 * ratio, 100 * statistics.mean(cell["methods"][method]["test_bn"]["test"])))
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=NAMES[method])
    ax.set_xlabel("sparsity of the pruned layers (%)")
    ax.set_ylabel("hard prune + BN recal. test acc. (%)")
    ax.set_title(f"{args.model} on digits, {budget}-epoch budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sparsity.png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits_cnn")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ratios", default="0.9,0.95,0.98")
    p.add_argument("--budgets", default="10,30", help="training-epoch budgets")
    p.add_argument("--methods", default="zero,gmp,admm,slr,slr_default")
    p.add_argument("--dense-epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--bn-batches", type=int, default=BN_BATCHES)
    p.add_argument("--grid", default="full", choices=["full", "wide", "default"],
                   help="full: tune every method on its 4-point grid; wide: on its 6-point grid; "
                        "default: each method's default configuration only")
    p.add_argument("--slr", default=None, help="JSON of SLR options to study instead of the default")
    p.add_argument("--slr-rho-end", type=float, default=SOLVERS["slr"].options.RECOMMENDED_RHO_END,
                   help="where the untuned SLR default's ρ schedule ends (default: the library's)")
    p.add_argument("--admm", default=None, help="JSON of extra ADMM options (e.g. the same ramp as SLR)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/solver_study")
    args = p.parse_args()
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    set_slr_default(args.slr, args.slr_rho_end)
    for m in args.methods:
        configs(m)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dense_paths = {s: dense_checkpoint(args, s) for s in range(args.seeds)}
    dense = {s: json.loads(p.with_suffix(".json").read_text())["accuracy"] for s, p in dense_paths.items()}
    jobs = []
    for seed, ratio, method in itertools.product(range(args.seeds), args.ratios, args.methods):
        for epochs in ([0] if method == "zero" else args.budgets):
            for config in configs(method, args.grid):
                if method.startswith("slr"):
                    config = {**config, "slr": SLR_DEFAULT["options"]}
                if method == "admm" and args.admm:
                    config = {**config, "admm": json.loads(args.admm)}
                jobs.append({"seed": seed, "ratio": ratio, "epochs": epochs, "method": method, "config": config,
                             "model": args.model, "val_fraction": args.val_fraction, "batch_size": args.batch_size,
                             "bn_batches": args.bn_batches, "dense": str(dense_paths[seed]), "slr": SLR_DEFAULT})
    done_file = out / "results.jsonl"
    rows = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.is_file() else []
    done = {run_key(r) for r in rows}
    keys = {run_key(j) for j in jobs}
    twins = {run_key(j): twin for j in jobs if (twin := grid_twin(j)) in keys}
    todo = [j for j in jobs if run_key(j) not in done and run_key(j) not in twins]
    print(f"{len(jobs)} runs, {len(todo)} to do, {len(twins)} shared with a grid run, {args.jobs} processes",
          file=sys.stderr)
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init_worker) as pool, done_file.open("a") as f:
        for row in progress_bar(pool.imap_unordered(_run_job, todo), total=len(todo), desc="study"):
            f.write(json.dumps(row) + "\n")
            f.flush()
            rows.append(row)
    by_key = {run_key(r): r for r in rows}
    for key, twin in twins.items():  # the untuned default's rows: the same computation as a grid run
        by_key.setdefault(key, {**by_key[twin], "method": key[3], "config": json.loads(key[4])})
    rows = [by_key[run_key(j)] for j in jobs if run_key(j) in by_key]
    summary = analyse(rows, args, dense)
    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}",
           "torch": torch.__version__, "python": platform.python_version(),
           "command": " ".join(sys.argv), "wall_seconds_this_call": round(time.perf_counter() - start)}
    (out / "study.json").write_text(json.dumps({"settings": {**vars(args), "slr_default": SLR_DEFAULT},
                                                "environment": env, "dense": dense, "summary": summary}, indent=1))
    table = markdown(summary, args, dense)
    (out / "study.md").write_text(table + "\n")
    plot(summary, rows, args, out)
    print(table)
    print(f"\n{len(rows)} runs; {env['wall_seconds_this_call']} s in this call; files in {out}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def set_slr_default(override: str | None, rho_end: float) -> None:
    """SLR's library defaults (the study's candidate) and the ρ schedule used untuned."""
    SLR_DEFAULT.clear()
    SLR_DEFAULT.update({"rho0": DEFAULT_RHO, "rho_end": rho_end,
                        "options": json.loads(override) if override else {}})


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    SLR_DEFAULT.clear()
    SLR_DEFAULT.update(job["slr"])
    return run_one(job)


if __name__ == "__main__":
    main()
