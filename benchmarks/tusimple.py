#!/usr/bin/env python
"""UFLD on TuSimple: SLR against ADMM at the same sparsity and epochs, in the SLR paper's layout.

One dense UFLD (ResNet-18 or -34) is trained, or loaded with --checkpoint, then pruned from the
same weights by each method (unstructured, the same ratio for every conv/linear layer of the
backbone and the head; the stem, the last layer `pool` and the auxiliary branch stay dense).  Each
pruned model is scored with the official TuSimple metric right after hard pruning (no retraining)
and after masked fine-tuning.  The table has one row per method and sparsity: accuracy, FP and
FN without retraining, after BatchNorm recalibration, then after retraining, with the dense
model's row on top.

Real data: --data ROOT, the TuSimple root holding clips/, label_data_*.json (training) and
test_label.json (test ground truth); the reference setting is 288x800, Adam 4e-4, 100 epochs.
Offline: --synthetic writes a TuSimple-format synthetic dataset first (into --data if given,
else under --out) and runs the same path at a small size.  Dense training checkpoints every epoch
to --out/dense.state.pt and a rerun with the same --out resumes it (delete it to start afresh).

Examples::

    python benchmarks/tusimple.py --data ~/data/tusimple --checkpoint runs/ufld18.pt --ratios 0.5,0.7 \\
        --epochs 10 --finetune-epochs 5 --out runs/tusimple
    python benchmarks/tusimple.py --synthetic --image-size 64x160 --hidden 256 --dense-epochs 15 \\
        --epochs 4 --finetune-epochs 2 --ratios 0.7 --threads 2 --out runs/tusimple-synthetic
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from slr_prune.adapters.lane import LaneTask
from slr_prune.artifact import Artifact, load_artifact, save_artifact
from slr_prune.data.synthetic_lanes import write_synthetic_tusimple
from slr_prune.data.tusimple import write_json_lines
from slr_prune.engine import Hooks, TrainConfig, Trainer, prune, resolve_device
from slr_prune.solvers import SOLVERS
from slr_prune.spec import PruneSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default=None, help="TuSimple root (clips/, label_data_*.json, test_label.json)")
    g.add_argument("--synthetic", action="store_true", help="generate a synthetic TuSimple-format set first")
    g.add_argument("--synthetic-train", type=int, default=192)
    g.add_argument("--synthetic-test", type=int, default=48)
    g.add_argument("--model", default="ufld_resnet18", choices=["ufld_resnet18", "ufld_resnet34"])
    g.add_argument("--image-size", default=None, help="HxW, multiples of 32 (default 288x800; 64x160 synthetic)")
    g.add_argument("--griding-num", type=int, default=100)
    g.add_argument("--row-anchors", type=int, default=56)
    g.add_argument("--hidden", type=int, default=2048, help="width of the head's first linear layer")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--limit-train", type=int, default=None, help="use only the first N training labels")
    g.add_argument("--limit-val", type=int, default=None, help="score only the first N test labels")
    g.add_argument("--drop-empty", action="store_true",
                   help="leave empty lane slots out of the predictions (UFLD reports all slots)")
    g = p.add_argument_group("dense model")
    g.add_argument("--checkpoint", default=None, help="dense checkpoint ({'model': state_dict}); else train one")
    g.add_argument("--dense-epochs", type=int, default=100)
    g.add_argument("--dense-lr", type=float, default=4e-4, help="Adam, as the reference TuSimple config")
    g = p.add_argument_group("pruning")
    g.add_argument("--methods", default="slr,admm,magnitude",
                   help="comma-separated: slr, admm, magnitude (one-shot: the zero-epoch baseline), layerwise "
                        "(zero epochs, layer-wise reconstruction)")
    g.add_argument("--ratios", default="0.5", help="comma-separated prune ratios in [0, 1)")
    g.add_argument("--prune-aux", action="store_true", help="also prune the auxiliary segmentation branch")
    g.add_argument("--epochs", type=int, default=10, help="SLR/ADMM training epochs (the same for both)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate while pruning")
    g.add_argument("--finetune-epochs", type=int, default=5)
    g.add_argument("--finetune-lr", type=float, default=1e-4)
    g.add_argument("--rho", type=float, default=0.1)
    g.add_argument("--rho-growth", type=float, default=1.5, help="rho multiplied by this after every update")
    g.add_argument("--rho-end", type=float, default=None,
                   help="instead of --rho-growth: rho grows geometrically to this over the run")
    g.add_argument("--M", type=float, default=300.0)
    g.add_argument("--r", type=float, default=0.1)
    g.add_argument("--s0", type=float, default=0.01)
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="runs/tusimple")
    g.add_argument("--progress", action="store_true", help="show progress bars")
    return p.parse_args(argv)


def inference_compression(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the inference model (the auxiliary branch excluded)."""
    total = nonzero = 0
    for name, p in model.named_parameters():
        if not name.startswith("aux_"):
            total += p.numel()
            nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def lane_cells(metrics: dict[str, float] | None) -> list[str]:
    """Accuracy, FP and FN as percentages ("-" where not measured)."""
    return [pct((metrics or {}).get(k)) for k in ("accuracy", "fp", "fn")]


def table(dense: dict[str, float], rows: list[dict[str, Any]], model_name: str) -> str:
    """The Markdown table: accuracy, FP and FN after hard pruning, BN recalibration and retraining."""
    header = ["Method", "Sparsity %", "Compression", "Epochs (prune+retrain)", "Hard-prune Acc %", "FP %", "FN %",
              "+ BN recal. Acc %", "FP %", "FN %", "Retrained Acc %", "FP %", "FN %"]
    cells = [[f"{model_name} (dense)", "0", "1.00x", "-", *lane_cells(dense), *["-"] * 6]]
    for r in rows:
        cells.append([r["method"].upper(), pct(r["sparsity"]), f"{r['compression']:.2f}x",
                      f"{r['epochs']}+{r['finetune_epochs']}", *lane_cells(r["hard_prune"]),
                      *lane_cells(r.get("hard_prune_bn")), *lane_cells(r["finetuned"])])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = args.data
    image_size = args.image_size
    if args.synthetic:
        data = Path(data) if data else out / "synthetic-data"
        if not (data / "test_label.json").is_file():
            print(f"writing a synthetic TuSimple-format dataset ({args.synthetic_train} train / "
                  f"{args.synthetic_test} test images) to {data}", flush=True)
            write_synthetic_tusimple(data, args.synthetic_train, args.synthetic_test, seed=args.seed)
        image_size = image_size or "64x160"
    elif data is None:
        sys.exit("give --data TUSIMPLE_ROOT, or --synthetic for generated data")
    task = LaneTask(args.model, data=data, image_size=image_size, batch_size=args.batch_size, seed=args.seed,
                    griding_num=args.griding_num, num_row_anchors=args.row_anchors, hidden=args.hidden,
                    limit_train=args.limit_train, limit_val=args.limit_val, drop_empty=args.drop_empty)
    device = resolve_device(args.device)
    print(f"{task.name}: {len(task.train_set)} training / {len(task.val_set)} test images at "
          f"{task.image_size[0]}x{task.image_size[1]}, device {device}", flush=True)
    model = task.build_model()
    dense_history: list[dict[str, Any]] = []
    if args.checkpoint:
        load_artifact(args.checkpoint).build(model)
    else:
        print(f"training the dense model for {args.dense_epochs} epochs (Adam {args.dense_lr}, cosine) ...", flush=True)
        config = TrainConfig(epochs=args.dense_epochs, lr=args.dense_lr, optimizer="adam", weight_decay=1e-4,
                             schedule="cosine", device=args.device, seed=args.seed, progress=args.progress,
                             checkpoint=str(out / "dense.state.pt"), resume=True)
        class Show(Hooks):
            def fit_start(self, trainer: Trainer) -> None:
                self.since = time.perf_counter()

            def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
                seconds, self.since = time.perf_counter() - self.since, time.perf_counter()
                print(f"  epoch {record['epoch']}/{args.dense_epochs}: loss {record['train_loss']:.3f}  accuracy "
                      f"{pct(record['accuracy'])}%  FP {pct(record['fp'])}%  FN {pct(record['fn'])}%  "
                      f"({seconds:.0f} s)", flush=True)

        dense_history = Trainer(task, model, config, hooks=[Show()], desc="dense").fit()
        save_artifact(Artifact.of(model, task), out / "dense.pt")
    model.to(device)
    dense = task.evaluate(model, device)
    dense_seconds = time.perf_counter() - start
    print(f"dense: accuracy {pct(dense['accuracy'])}%  FP {pct(dense['fp'])}%  FN {pct(dense['fn'])}%  "
          f"({dense_seconds:.0f} s)", flush=True)

    exclude = [] if args.prune_aux else list(task.default_exclude)
    train = TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", weight_decay=0.0, schedule="cosine",
                        device=args.device, seed=args.seed, progress=args.progress)
    finetune = TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, optimizer="adam", weight_decay=0.0,
                           schedule="cosine", device=args.device, seed=args.seed, progress=args.progress)
    penalty = {"rho": args.rho, **({"rho_end": args.rho_end} if args.rho_end else {"rho_growth": args.rho_growth})}
    options = {"slr": {**penalty, "M": args.M, "r": args.r, "s0": args.s0}, "admm": penalty,
               "magnitude": {"schedule": "oneshot"}, "layerwise": {}}
    rows = []
    for ratio in (float(r) for r in args.ratios.split(",")):
        spec = PruneSpec.uniform(ratio, exclude=exclude)
        for method in (m.strip() for m in args.methods.split(",") if m.strip()):
            if method not in options:
                sys.exit(f"--methods: unknown {method!r}; choose {', '.join(options)}")
            print(f"{method} at {ratio:.0%} ...", flush=True)
            pruned = copy.deepcopy(model)
            result = prune(pruned, task, spec, method, train=train, finetune=finetune,
                           solver_options=options[method], dense_metrics=dense)
            total, nonzero = inference_compression(pruned)
            write_json_lines(out / f"{method}_{ratio:g}_predictions.json", task.predict(pruned, device))
            row = {"method": method, "ratio": ratio, "sparsity": result.sparsity,
                   "compression": total / max(1, nonzero), "params": total, "nonzero_params": nonzero,
                   "epochs": args.epochs if SOLVERS.get(method).traits["trains"] else 0,
                   "finetune_epochs": args.finetune_epochs,
                   "hard_prune": result.hard_prune, "hard_prune_bn": result.hard_prune_bn,
                   "finetuned": result.finetuned,
                   "per_epoch": result.epochs, "finetune_per_epoch": result.finetune, "seconds": result.seconds}
            rows.append(row)
            h = result.hard_prune
            print(f"  hard-prune accuracy {pct(h['accuracy'])}% (FP {pct(h['fp'])}, FN {pct(h['fn'])}); "
                  f"fine-tuned {pct((result.finetuned or {}).get('accuracy'))}%  ({result.seconds:.0f} s)", flush=True)

    text = table(dense, rows, f"UFLD {args.model.removeprefix('ufld_')}")
    seconds = time.perf_counter() - start
    report = {"settings": vars(args), "task": task.record(), "train_images": len(task.train_set),
              "test_images": len(task.val_set), "dense": dense, "dense_history": dense_history, "rows": rows,
              "seconds": seconds, "dense_seconds": dense_seconds,
              "host": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "device": str(device)}}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"total {seconds:.0f} s; report: {out / 'report.json'}; table: {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
