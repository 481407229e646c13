#!/usr/bin/env python
"""Retrain-free pruning: layer-wise reconstruction (slr, admm, obs, magnitude ± least squares)
against one-shot magnitude, zero training epochs, and as the final hard prune after SLR, ADMM or
gradual-magnitude training.

    python benchmarks/oneshot.py                                   # digits CNN and ResNet-20, 5 seeds
    python benchmarks/oneshot.py --models digits_cnn --seeds 2 --out runs/oneshot_small
    python benchmarks/oneshot.py --resnet50                        # time and memory, ResNet-50 at 224 px

Protocol: the solver study's dense models (benchmarks/solver_study.py: train minus a stratified
validation split, same seeds, same epochs); every row starts from the same dense model of its
seed; accuracy on test, the best layer-wise variant chosen on validation; BatchNorm recalibrated
on `--bn-batches` training batches after the prune ("+ BN") and not ("stale BN"); calibration on
`--calibration-batches` seeded training batches.  Paired per-seed differences with 95% t-intervals.
Writes results.jsonl (re-running skips finished runs), oneshot.json, oneshot.md and figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from slr_prune import PruneSpec
from slr_prune.console import progress_bar
from slr_prune.engine import TrainConfig, prune
from slr_prune.evaluate import BN_BATCHES
from slr_prune.layerwise import CALIBRATION_BATCHES, Reconstruction

sys.path.insert(0, str(Path(__file__).parent))
from solver_study import T95, StudyTask, cpu_name, dense_checkpoint, mean_std  # noqa: E402

# (label, method, solver options); the one-shot magnitude projection is the baseline row
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "magnitude": ("magnitude", {}),
    "magnitude + lstsq": ("layerwise", {"layer_solver": "magnitude", "calibration_bn": "running"}),
    "obs": ("layerwise", {"layer_solver": "obs", "refit": "none", "calibration_bn": "running"}),
    "obs + lstsq": ("layerwise", {"layer_solver": "obs", "calibration_bn": "running"}),
    "admm + lstsq": ("layerwise", {"layer_solver": "admm", "calibration_bn": "running"}),
    "slr": ("layerwise", {"layer_solver": "slr", "refit": "none", "calibration_bn": "running"}),
    "slr + lstsq": ("layerwise", {"layer_solver": "slr", "calibration_bn": "running"}),
    "admm + lstsq + batch-stat BN": ("layerwise", {"layer_solver": "admm", "calibration_bn": "batch"}),
    "slr + lstsq + batch-stat BN": ("layerwise", {"layer_solver": "slr", "calibration_bn": "batch"}),
}
LAYERWISE = [v for v in VARIANTS if v != "magnitude"]
# the training methods of the final-hard-prune use, each with its shipped (untuned) configuration as
# in benchmarks/solver_study.py: (solver, options, learning rate) for a run of `epochs`
TRAINED = {
    "slr": lambda epochs: ("slr", {"rho": 0.1, "rho_end": 100.0}, 0.01),
    "admm": lambda epochs: ("admm", {"rho": 0.1, "rho_end": 10.0}, 0.01),
    "gmp": lambda epochs: ("magnitude", {"schedule": "cubic", "steps": max(1, round(0.5 * epochs))}, 0.01),
}
SPARSITIES = ["0.5", "0.7", "0.8", "0.9", "0.95", "2:4", "channel 0.3", "channel 0.5"]


def make_spec(sparsity: str) -> PruneSpec:
    if ":" in sparsity:
        return PruneSpec.uniform(0.0, form=sparsity)
    if sparsity.startswith("channel"):
        return PruneSpec.uniform(float(sparsity.split()[1]), form="channel")
    return PruneSpec.uniform(float(sparsity))


def applies(variant: str, sparsity: str) -> bool:
    return not (variant.startswith("obs") and sparsity.startswith("channel"))  # OBS: unstructured and N:M


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One variant on one seed's dense model: zero epochs, or `job["epochs"]` of SLR then the variant."""
    torch.set_num_threads(1)
    task = StudyTask(job["model"], job["val_fraction"], job["batch_size"], job["seed"])
    model = task.build_model()
    model.load_state_dict(torch.load(job["dense"], weights_only=True))
    common = {"device": "cpu", "progress": False, "seed": job["seed"]}
    start = time.perf_counter()
    if job["epochs"]:  # the final hard prune of a training run: projection and reconstruction, one training
        method, options, lr = TRAINED[job["method"]](job["epochs"])
        recon = Reconstruction("slr", job["calibration_batches"])
        result = prune(model, task, make_spec(job["sparsity"]), method, solver_options=options,
                       train=TrainConfig(epochs=job["epochs"], lr=lr, **common), bn_batches=job["bn_batches"],
                       reconstruct=recon)
        proj = result.projection
        rows = {f"{job['method']}: projection": (proj["hard_prune"], proj["hard_prune_bn"]),
                f"{job['method']}: slr + lstsq": (result.hard_prune, result.hard_prune_bn)}
    else:
        method, options = VARIANTS[job["variant"]]
        if method == "layerwise":
            options = {**options, "calibration_batches": job["calibration_batches"]}
        result = prune(model, task, make_spec(job["sparsity"]), method, solver_options=options,
                       train=TrainConfig(epochs=0, **common), bn_batches=job["bn_batches"])
        rows = {job["variant"]: (result.hard_prune, result.hard_prune_bn)}
    seconds = time.perf_counter() - start
    out = []
    for variant, (stale, bn) in rows.items():
        out.append({**{k: job[k] for k in ("model", "seed", "sparsity", "epochs")}, "variant": variant,
                    "method": job.get("method"),
                    "test": stale["accuracy"], "val": stale["val_accuracy"], "test_bn": bn["accuracy"],
                    "val_bn": bn["val_accuracy"], "seconds": seconds,
                    "layer_error": statistics.mean(r["error"] for r in result.layerwise) if result.layerwise else None,
                    "layer_error_projection": statistics.mean(r["error_projection"] for r in result.layerwise)
                    if result.layerwise else None})
    return {"rows": out, "key": key(job)}


def key(job: dict[str, Any]) -> str:
    return json.dumps([job[k] for k in ("model", "seed", "sparsity", "epochs", "variant")])


def paired_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    d = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    m = statistics.mean(d)
    h = T95.get(len(d) - 1, 1.96) * statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return m, m - h, m + h


def analyse(rows: list[dict[str, Any]], models: list[str], seeds: int) -> tuple[str, dict[str, Any]]:
    """Markdown tables and a summary: test accuracy (± BN) per variant and sparsity, the best layer-wise
    variant per cell chosen on validation, and its paired gains over the baselines."""
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["epochs"], r["sparsity"], r["variant"]), {})[r["seed"]] = r
    lines, summary = [], {}
    for model in models:
        cells = [s for s in SPARSITIES if any((model, 0, s, v) in by for v in VARIANTS)]
        if not cells:
            continue
        for bn in (True, False):
            k = "test_bn" if bn else "test"
            lines += [f"\n### {model}, zero epochs, {'+ BN recalibration' if bn else 'stale BN statistics'} "
                      f"(test top-1 %, mean ± std over {seeds} seeds)\n",
                      "| variant | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
            for v in VARIANTS:
                vals = []
                for s in cells:
                    got = by.get((model, 0, s, v), {})
                    vals.append(mean_std([got[i][k] for i in sorted(got)]) if len(got) == seeds else "-")
                lines.append(f"| {v} | " + " | ".join(vals) + " |")
        lines += [f"\n### {model}: best layer-wise variant per cell (chosen on validation + BN), paired gains "
                  "on test + BN (points, 95% interval)\n",
                  "| sparsity | chosen | vs one-shot magnitude | vs obs + lstsq | vs dense | mean layer error "
                  "(projection → chosen) | seconds |", "|---|---|---|---|---|---|---|"]
        for s in cells:
            complete = [v for v in LAYERWISE if len(by.get((model, 0, s, v), {})) == seeds]
            if not complete or len(by.get((model, 0, s, "magnitude"), {})) != seeds:
                continue
            best = max(complete, key=lambda v: statistics.mean(r["val_bn"] for r in by[(model, 0, s, v)].values()))
            chosen = [by[(model, 0, s, best)][i] for i in range(seeds)]
            base = [by[(model, 0, s, "magnitude")][i] for i in range(seeds)]
            gain = paired_ci([r["test_bn"] for r in chosen], [r["test_bn"] for r in base])
            obs = by.get((model, 0, s, "obs + lstsq"), {})
            vs_obs = paired_ci([r["test_bn"] for r in chosen], [obs[i]["test_bn"] for i in range(seeds)]) \
                if len(obs) == seeds else None
            dense = [r["dense"] for r in chosen]
            vs_dense = paired_ci([r["test_bn"] for r in chosen], dense)
            err = (statistics.mean(r["layer_error_projection"] for r in chosen),
                   statistics.mean(r["layer_error"] for r in chosen))
            fmt = lambda t: "-" if t is None else f"{t[0]:+.1f} [{t[1]:+.1f}, {t[2]:+.1f}]"  # noqa: E731
            lines.append(f"| {s} | {best} | {fmt(gain)} | {fmt(vs_obs)} | {fmt(vs_dense)} | "
                         f"{err[0]:.3f} → {err[1]:.3f} | {statistics.mean(r['seconds'] for r in chosen):.1f} |")
            summary[f"{model} {s}"] = {"chosen": best, "gain_vs_magnitude": gain, "gain_vs_obs_lstsq": vs_obs,
                                       "vs_dense": vs_dense}
        finals = sorted({(t, e, s) for (m, e, s, v) in by if m == model and e > 0 for t in TRAINED
                         if (m, e, s, f"{t}: projection") in by})
        if finals:
            lines += [f"\n### {model}: final hard prune after training (test + BN, mean ± std over {seeds} "
                      "seeds; paired gain of the layer-wise reconstruction (slr + lstsq) over the projection)\n",
                      "| training | epochs | sparsity | projection | reconstruction | gain (95% interval) | "
                      "gain on validation |", "|---|---|---|---|---|---|---|"]
            for t, e, s in finals:
                a, b = by.get((model, e, s, f"{t}: projection"), {}), by.get((model, e, s, f"{t}: slr + lstsq"), {})
                if len(a) != seeds or len(b) != seeds:
                    continue
                pa, pb = [a[i] for i in range(seeds)], [b[i] for i in range(seeds)]
                g = paired_ci([r["test_bn"] for r in pb], [r["test_bn"] for r in pa])
                gv = paired_ci([r["val_bn"] for r in pb], [r["val_bn"] for r in pa])
                lines.append(f"| {t} | {e} | {s} | {mean_std([r['test_bn'] for r in pa])} | "
                             f"{mean_std([r['test_bn'] for r in pb])} | {g[0]:+.1f} [{g[1]:+.1f}, {g[2]:+.1f}] | "
                             f"{gv[0]:+.1f} [{gv[1]:+.1f}, {gv[2]:+.1f}] |")
                summary[f"{model} final {t} {e} {s}"] = {"gain": g, "gain_val": gv}
    return "\n".join(lines), summary


def plot(rows: list[dict[str, Any]], models: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [s for s in SPARSITIES if s[0].isdigit() and ":" not in s]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for v in VARIANTS:
            xs, ys, es = [], [], []
            for s in ratios:
                vals = [100 * r["test_bn"] for r in rows if r["model"] == model and r["epochs"] == 0
                        and r["sparsity"] == s and r["variant"] == v]
                if vals:
                    xs.append(100 * float(s))
                    ys.append(statistics.mean(vals))
                    es.append(statistics.stdev(vals) if len(vals) > 1 else 0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=v,
                            linestyle="--" if v == "magnitude" else "-")
        ax.set(title=f"{model} on digits, zero epochs, + BN recalibration", xlabel="unstructured sparsity %",
               ylabel="test top-1 %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "oneshot.png", dpi=120)


def resnet50_timing(args: argparse.Namespace) -> None:
    """One-shot 50% with each layer solver on torchvision ResNet-50 at 224 px, `--r50-images`
    calibration images of random data (timing does not depend on the values): time per layer,
    total and peak resident memory, in a fresh process per solver."""
    import subprocess

    path = Path(args.out) / "resnet50.json"
    results = json.loads(path.read_text())["results"] if path.is_file() else {}
    for solver in args.r50_solvers.split(","):
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import oneshot; "
                f"oneshot._r50_child({solver!r}, {args.r50_images}, {args.r50_batch}, {args.threads}, "
                f"{args.r50_precision!r})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r = results[f"{solver} {args.r50_precision}"] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"resnet50 {solver}: {r['seconds']:.0f} s total, {r['peak_rss_gb']:.2f} GB peak, slowest layer "
              f"{max(r['per_layer'], key=lambda x: x['seconds'])}", file=sys.stderr)
    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}", "threads": args.threads,
           "torch": torch.__version__, "command": " ".join(sys.argv)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "results": results}, indent=1))


def _r50_child(solver: str, images: int, batch: int, threads: int, precision: str) -> None:
    import torchvision

    from slr_prune.engine.reconstruct import reconstruct
    from slr_prune.task import Task

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    data = [torch.randn(batch, 3, 224, 224) for _ in range(images // batch)]

    class Calibration(Task):  # only what reconstruct() reads: the calibration batches and the forward pass
        build_model = train_loader = train_dataset = val_loader = loss = evaluate = example_input = None

        def calibration_batches(self, n: int, seed: int = 0):
            return iter(data[:n])

        def forward(self, m, b, device):
            return m(b)

    sets = PruneSpec.uniform(0.5).resolve(model)
    start = time.perf_counter()
    config = Reconstruction(solver, images // batch, precision=precision)
    _, records = reconstruct(model, Calibration(), sets, config, log=None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_gb": peak, "layers": len(records),
                      "per_layer": [{"layer": r["layer"], "seconds": round(r["seconds"], 2),
                                     "calibration_seconds": round(r["calibration_seconds"], 2)} for r in records]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="digits_cnn,resnet20")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--sparsities", default=",".join(SPARSITIES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--final", default=",".join(f"{t}:{e}:{r}" for t in TRAINED for e in (10, 30)
                                                for r in (0.9, 0.95, 0.98)),
                   help="method:epochs:ratio of training (slr, admm, gmp) before the final hard prune, compared "
                        "as projection vs reconstruction (digits CNN only; '' skips)")
    p.add_argument("--dense-epochs", type=int, default=15, help="as the solver study")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--bn-batches", type=int, default=BN_BATCHES)
    p.add_argument("--calibration-batches", type=int, default=CALIBRATION_BATCHES)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/oneshot")
    p.add_argument("--resnet50", action="store_true", help="only the ResNet-50 timing")
    p.add_argument("--r50-solvers", default="slr,magnitude")
    p.add_argument("--r50-images", type=int, default=128)
    p.add_argument("--r50-batch", type=int, default=16)
    p.add_argument("--r50-precision", default="float64", choices=["float64", "float32"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.resnet50:
        return resnet50_timing(args)
    models = [m for m in args.models.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = []
    for model in models:
        study = argparse.Namespace(model=model, val_fraction=args.val_fraction, batch_size=args.batch_size,
                                   dense_epochs=args.dense_epochs, out=str(out))
        for seed in range(args.seeds):
            dense = dense_checkpoint(study, seed)
            base = {"model": model, "seed": seed, "dense": str(dense), "val_fraction": args.val_fraction,
                    "batch_size": args.batch_size, "bn_batches": args.bn_batches,
                    "calibration_batches": args.calibration_batches,
                    "dense_accuracy": json.loads(dense.with_suffix(".json").read_text())["accuracy"]}
            for s, v in itertools.product(args.sparsities.split(","), args.variants.split(",")):
                if applies(v, s):
                    jobs.append({**base, "sparsity": s, "variant": v, "epochs": 0})
            if model == "digits_cnn":
                for item in filter(None, args.final.split(",")):
                    t, e, r = item.split(":")
                    jobs.append({**base, "sparsity": r, "variant": f"final {t}", "method": t, "epochs": int(e)})
    done_file = out / "results.jsonl"
    rows = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.is_file() else []
    done = {r["key"] for r in rows}
    todo = [j for j in jobs if key(j) not in done]
    print(f"{len(jobs)} runs, {len(todo)} to do, {args.jobs} processes", file=sys.stderr)
    dense_of = {(j["model"], j["seed"]): j["dense_accuracy"] for j in jobs}
    with mp.get_context("spawn").Pool(args.jobs, initializer=_init_worker) as pool, done_file.open("a") as f:
        for got in progress_bar(pool.imap_unordered(run_one, todo), total=len(todo), desc="oneshot"):
            for row in got["rows"]:
                f.write(json.dumps({**row, "key": got["key"]}) + "\n")
            f.flush()
            rows += [{**row, "key": got["key"]} for row in got["rows"]]
    for r in rows:
        r["dense"] = dense_of.get((r["model"], r["seed"]))
    rows = [r for r in rows if r["dense"] is not None]
    table, summary = analyse(rows, models, args.seeds)
    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}", "torch": torch.__version__,
           "python": platform.python_version(), "command": " ".join(sys.argv),
           "wall_seconds_this_call": round(time.perf_counter() - start)}
    dense = {f"{m} seed {s}": a for (m, s), a in dense_of.items()}
    (out / "oneshot.json").write_text(json.dumps({"settings": vars(args), "environment": env, "dense": dense,
                                                  "summary": summary}, indent=1))
    dense_line = "; ".join(f"{m}: {mean_std([a for (mm, _), a in dense_of.items() if mm == m])}" for m in models)
    text = f"Dense test top-1 % (mean ± std): {dense_line}\n{table}\n"
    (out / "oneshot.md").write_text(text)
    plot(rows, models, out)
    print(text)
    print(f"{len(rows)} rows; {env['wall_seconds_this_call']} s in this call; files in {out}")


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the per-layer lines of every run)


if __name__ == "__main__":
    main()
