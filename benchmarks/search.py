#!/usr/bin/env python
"""PR-DARTS on the shipped digits: the searched network against the hand-designed digits CNN,
both trained with the same recipe and pruned by the same solver to the same sparsity.

    python benchmarks/search.py --out runs/search_bench            # 3 seeds, 90%, about 10 min on 2 CPU cores
    python benchmarks/search.py --seeds 5 --ratio 0.95 --search-epochs 20

Per seed: search (first-order DARTS through the pruned candidates) on a seeded half/half split
of the training images, derive, train the derived network and the digits CNN dense with one
recipe, prune both with the solver, report accuracy on the held-out digits right after the hard
prune (with and without BatchNorm recalibration) and after masked fine-tuning, params, MACs and
the dense CPU latency (batch 1, interleaved).  Nothing is tuned per architecture.  The CIFAR-10
layout of the paper: `--dataset cifar10 --data ROOT --channels 16 --layers 8 --search-epochs 50`.
Results: results.jsonl (resumable, one line per seed and network) and table.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from slr_prune import PruneSpec
from slr_prune.adapters import ClassificationTask
from slr_prune.engine import TrainConfig, Trainer, prune
from slr_prune.metrics import cost_summary
from slr_prune.metrics.latency import compare_latency
from slr_prune.search import SearchConfig, derived_network, plot_genotype, search


def seeded(seed: int, build):
    """Build a network from its own seed, so no network's initialisation depends on another's."""
    torch.manual_seed(seed)
    return build()


def small_mobilenet_v2(task: ClassificationTask) -> torch.nn.Module:
    """torchvision's MobileNetV2 with a short inverted-residual setting for 8×8 inputs (stride 4
    overall); its 1280-channel last layer is fixed by torchvision, which keeps it above the others'
    parameter count."""
    import torchvision

    setting = [[1, 16, 1, 1], [4, 24, 2, 1], [4, 32, 2, 2], [4, 48, 2, 2]]
    model = torchvision.models.MobileNetV2(num_classes=task.info["num_classes"], inverted_residual_setting=setting)
    first = model.features[0][0]
    model.features[0][0] = torch.nn.Conv2d(task.example_input().shape[1], first.out_channels, 3, 1, 1, bias=False)
    return model


def run_seed(args: argparse.Namespace, seed: int, out: Path) -> list[dict]:
    task = ClassificationTask(args.model, args.dataset, args.data, batch_size=args.batch_size, seed=seed)
    spec = PruneSpec.uniform(args.ratio)
    config = SearchConfig(epochs=args.search_epochs, channels=args.channels, layers=args.layers, seed=seed,
                          prune_all=args.prune_all,
                          batch_size=args.batch_size, progress=False, device=args.device)
    start = time.perf_counter()
    _, found = search(task, spec.rules[0].make_set(), config)
    search_seconds = time.perf_counter() - start
    found.genotype.save(out / f"genotype_seed{seed}.json")
    plot_genotype(found.genotype, out / f"cells_seed{seed}.png", f"searched cells, seed {seed}")
    nets = {"searched": seeded(seed, lambda: derived_network(found.genotype, task, config)),
            args.model: seeded(seed, task.build_model)}
    if args.mobilenet:
        nets["mobilenet_v2_small"] = seeded(seed, lambda: small_mobilenet_v2(task))
    dense_models, rows = {}, []
    for name, model in nets.items():
        Trainer(task, model, TrainConfig(epochs=args.train_epochs, lr=args.train_lr, seed=seed, progress=False,
                                         device=args.device), desc=name).fit()
        dense_models[name] = copy.deepcopy(model).cpu().eval()
        x = task.example_input()
        costs = cost_summary(model, x)
        r = prune(model, task, spec, args.method, train=TrainConfig(epochs=args.epochs, lr=args.lr, seed=seed,
                                                                    progress=False, device=args.device),
                  finetune=TrainConfig(epochs=args.finetune_epochs, lr=args.lr, schedule="constant", seed=seed,
                                       progress=False, device=args.device))
        after = cost_summary(model, x)
        m = task.metric
        rows.append({"seed": seed, "network": name, "dense": r.dense[m], "hard_prune": r.hard_prune[m],
                     "hard_prune_bn": (r.hard_prune_bn or r.hard_prune)[m],
                     "finetuned": r.finetuned[m] if r.finetuned else None, "sparsity": r.sparsity,
                     "params": costs["params"], "macs": costs["macs"], "nonzero_params": after["nonzero_params"],
                     "sparse_macs": after["sparse_macs"], "search_seconds": search_seconds if name == "searched" else 0,
                     "search_seconds_per_epoch": search_seconds / max(1, args.search_epochs)})
    stats = compare_latency(dense_models, task.example_input(1), repeats=args.latency_repeats, warmup=3)
    for row in rows:
        row["latency_ms"] = stats[row["network"]].median_ms
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    def ms(values: list[float], pct: bool = True) -> str:
        k = 100 if pct else 1
        if len(values) < 2:
            return f"{k * values[0]:.1f}"
        return f"{k * statistics.mean(values):.1f} ± {k * statistics.stdev(values):.1f}"

    variant = ("every cell convolution pruned in the search" if args.prune_all
               else "only the pruned candidates pruned in the search")
    lines = [f"Digits ({variant}), {args.method} to {args.ratio:.0%} unstructured (stem and classifier dense), "
             f"{len({r['seed'] for r in rows})} seeds, mean ± std; accuracy on the held-out digits.", "",
             "| network | params | MACs | dense % | hard-prune % | + BN recal. % | fine-tuned % | "
             "non-zero params | sparse MACs | dense CPU latency ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["network"] for r in rows):
        rs = [r for r in rows if r["network"] == name]
        lines.append(f"| {name} | {rs[0]['params']:,}* | {rs[0]['macs']:,}* | {ms([r['dense'] for r in rs])} | "
                     f"{ms([r['hard_prune'] for r in rs])} | {ms([r['hard_prune_bn'] for r in rs])} | "
                     f"{ms([r['finetuned'] for r in rs if r['finetuned'] is not None])} | "
                     f"{statistics.mean(r['nonzero_params'] for r in rs):,.0f} | "
                     f"{statistics.mean(r['sparse_macs'] for r in rs):,.0f} | "
                     f"{ms([r['latency_ms'] for r in rs], pct=False)} |")
    searched = {r["seed"]: r for r in rows if r["network"] == "searched"}
    lines.append("")
    for name in dict.fromkeys(r["network"] for r in rows if r["network"] != "searched"):
        hand = {r["seed"]: r for r in rows if r["network"] == name}
        diffs = [searched[s]["hard_prune_bn"] - hand[s]["hard_prune_bn"] for s in searched if s in hand]
        if diffs:
            lines.append(f"searched − {name}, hard-prune + BN recal., paired over seeds: {ms(diffs)} points "
                         f"(per seed: {', '.join(f'{100 * d:+.1f}' for d in diffs)}).")
    per_epoch = [r["search_seconds_per_epoch"] for r in searched.values()]
    if per_epoch:
        lines.append(f"search time per epoch: {statistics.mean(per_epoch):.1f} s on this machine "
                     f"(CPU; absolute times are only comparable on one machine).")
    lines.append("* params and MACs of the first seed's network (the searched one differs per seed).")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/search_bench")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--method", default="slr")
    p.add_argument("--model", default="digits_cnn", help="the hand-designed network")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data", default=None)
    p.add_argument("--search-epochs", type=int, default=10)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--prune-all", action="store_true", help="every cell convolution on the set during the search")
    p.add_argument("--no-mobilenet", dest="mobilenet", action="store_false",
                   help="leave out the small MobileNetV2 (the second hand-designed network)")
    p.add_argument("--train-epochs", type=int, default=15)
    p.add_argument("--train-lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=10, help="solver epochs")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    done = {r["seed"] for r in rows}
    for seed in range(args.seeds):
        if seed in done:
            continue
        new = run_seed(args, seed, out)
        with results.open("a") as f:
            for row in new:
                f.write(json.dumps(row) + "\n")
        rows += new
        print(f"seed {seed}: " + "; ".join(f"{r['network']} {100 * r['hard_prune_bn']:.1f}%" for r in new), flush=True)
    text = table(rows, args)
    (out / "table.md").write_text(f"`{' '.join(sys.argv)}`\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
