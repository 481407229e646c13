#!/usr/bin/env python
"""YOLOv3 / YOLOv3-tiny on COCO: the layout of the SLR paper's YOLOv3 table, scored by pycocotools.

For every prune ratio the same dense model is pruned with ADMM and with SLR (same spec, same
epochs, same ρ), and the table reports, per model and ratio:

    compression rate | mAP dense | mAP after hard pruning (ADMM, SLR) | mAP after retraining (ADMM, SLR)

once for mAP@0.5 and once for mAP@0.5:0.95, with the wall time of each run.  "Hard pruning" is
W ← Π_S(W) right after the solver phase, with no retraining; "retraining" is masked fine-tuning.
Compression is given over the pruned layers (1 / density of the pruned weights) and over all
weights of the model (parameters / non-zero parameters).

Real COCO (2014 or 2017) must be on disk in the ultralytics layout, described by a data yaml:
images/<split>/*.jpg with YOLO labels in labels/<split>/*.txt (ultralytics'
`ultralytics.data.converter.convert_coco` writes them from the instances JSON; nothing is
downloaded here).  Give the instances JSON with --val-json (or as `val_json:` in the yaml) to
score against the official annotations; otherwise the val labels are converted to COCO ground
truth.  Start from a trained detector (--model path/to/yolov3u.pt, or --dense-epochs to train one).

    # COCO 2014, trained YOLOv3-tiny, ratios of the paper's table
    python benchmarks/coco.py --data coco2014.yaml --val-json annotations/instances_val2014.json \\
        --model yolov3-tinyu.pt --ratios 0.5,0.75 --epochs 20 --finetune-epochs 10 --image-size 640 \\
        --batch-size 32 --device cuda --out runs/coco-yolov3-tiny

    # offline on a 2-core CPU: synthetic shapes, a dense model trained first (about 45 min)
    python benchmarks/coco.py --synthetic --synthetic-val-images 128 --model yolov3-tiny --image-size 128 \\
        --hyp '{"mosaic": 0}' --dense-epochs 40 --ratios 0.75,0.9 --epochs 8 --finetune-epochs 3 \\
        --rho 0.5 --rho-growth 1.5 --threads 1 --out runs/coco-synthetic
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default=None, help="data yaml of a COCO copy on disk (ultralytics layout)")
    g.add_argument("--val-json", default=None, help="COCO instances JSON of the val split (overrides the yaml's)")
    g.add_argument("--synthetic", action="store_true", help="use the generated shapes set instead of --data")
    g.add_argument("--synthetic-val-images", type=int, default=None,
                   help="val images of the synthetic set (default 32; the train images do not change)")
    g.add_argument("--model", default="yolov3-tiny", help="yolov3 | yolov3-tiny | an ultralytics .pt")
    g.add_argument("--dense-checkpoint", default=None, help="slr_prune checkpoint with a trained state_dict")
    g.add_argument("--image-size", type=int, default=640)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--val-images", type=int, default=None, help="score only the first N val images")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a small machine shared with other work)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--hyp", default="{}", help="ultralytics hyper-parameters as JSON, e.g. '{\"mosaic\": 0}'")
    g = p.add_argument_group("schedule")
    g.add_argument("--dense-epochs", type=int, default=0, help="train the dense model first (AdamW)")
    g.add_argument("--dense-lr", type=float, default=2e-3)
    g.add_argument("--ratios", default="0.5,0.75", help="comma-separated prune ratios of the pruned layers")
    g.add_argument("--methods", default="admm,slr,magnitude",
                   help="magnitude = one-shot, the zero-epoch baseline; layerwise = zero epochs, layer-wise "
                        "reconstruction")
    g.add_argument("--exclude-head", default="last", choices=["last", "head", "none"])
    g.add_argument("--epochs", type=int, default=10, help="SLR / ADMM training epochs")
    g.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the solver phase")
    g.add_argument("--finetune-epochs", type=int, default=5, help="masked retraining epochs")
    g.add_argument("--finetune-lr", type=float, default=0.005)
    g.add_argument("--rho", type=float, default=0.1)
    g.add_argument("--rho-growth", type=float, default=1.0, help="ρ ← ρ·growth after every Z update")
    g.add_argument("--rho-end", type=float, default=None, help="instead: ρ grows geometrically to this over the run")
    g.add_argument("--M", type=float, default=300.0)
    g.add_argument("--r", type=float, default=0.1)
    g.add_argument("--s0", type=float, default=0.01)
    g.add_argument("--interval", type=int, default=1, help="ADMM: epochs between Z/U updates")
    g.add_argument("--out", default="runs/coco", help="folder for report.json, report.md and the pruned .pt files")
    g.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.synthetic == (args.data is not None):
        p.error("give exactly one of --data (a COCO copy on disk) or --synthetic")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from slr_prune.adapters.yolo import YoloTask
    from slr_prune.artifact import load_artifact
    from slr_prune.engine import TrainConfig, Trainer, prune, resolve_device
    from slr_prune.export import export_ultralytics
    from slr_prune.metrics import cost_summary
    from slr_prune.solvers import SOLVERS
    from slr_prune.spec import PruneSpec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if args.val_json:
        data = _with_val_json(Path(args.data), Path(args.val_json), out)
    task = YoloTask(args.model, data=data, image_size=args.image_size, batch_size=args.batch_size,
                    workers=args.workers, seed=args.seed, exclude_head=args.exclude_head,
                    val_images=args.val_images, hyp=json.loads(args.hyp),
                    synthetic={"val_images": args.synthetic_val_images} if args.synthetic_val_images else None)
    device = resolve_device(args.device)
    progress = not args.no_progress
    model = task.build_model()
    start = time.perf_counter()
    if args.dense_checkpoint:
        load_artifact(args.dense_checkpoint).build(model)
    if args.dense_epochs:
        Trainer(task, model, TrainConfig(epochs=args.dense_epochs, lr=args.dense_lr, optimizer="adam",
                                         seed=args.seed, device=args.device, progress=progress), desc="dense").fit()
        export_ultralytics(model, out / "dense.pt", train_args={"imgsz": args.image_size})
    dense_seconds = time.perf_counter() - start
    model.to(device)
    dense = task.evaluate(model, device)
    print(f"dense: mAP@0.5 {100 * dense['map50']:.2f}  mAP@0.5:0.95 {100 * dense['map']:.2f}", flush=True)

    rows: list[dict[str, Any]] = []
    for ratio in [float(r) for r in args.ratios.split(",") if r.strip()]:
        spec = PruneSpec.uniform(ratio, exclude=task.default_exclude)
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            m = copy.deepcopy(model)
            options = {"rho": args.rho, "rho_growth": args.rho_growth, "rho_end": args.rho_end}
            options.update({"M": args.M, "r": args.r, "s0": args.s0} if method == "slr" else
                           {"interval": args.interval} if method == "admm" else {})
            if not SOLVERS.get(method).traits["penalty"]:  # magnitude, layerwise: their own defaults
                options = {}
            result = prune(m, task, spec, method,
                           train=TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device,
                                             progress=progress),
                           finetune=TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed,
                                                schedule="constant", device=args.device, progress=progress),
                           solver_options=options, dense_metrics=dense)
            costs = cost_summary(m, task.example_input())
            pt = export_ultralytics(m, out / f"{method}-{ratio:g}.pt", train_args={"imgsz": args.image_size},
                                    metadata={"method": method, "ratio": ratio})
            tuned = result.finetuned or result.hard_prune
            row = {"model": Path(args.model).stem, "method": method, "ratio": ratio, "sparsity": result.sparsity,
                   "compression_pruned": 1 / max(1e-12, 1 - result.sparsity),
                   "compression_model": costs["compression"], "dense": dense, "hard_prune": result.hard_prune,
                   "hard_prune_bn": result.hard_prune_bn,
                   "retrained": tuned, "epochs": result.epochs, "finetune": result.finetune,
                   "seconds": result.seconds, "file": str(pt)}
            rows.append(row)
            print(f"{method} ratio {ratio:g}: hard-prune mAP@0.5 {100 * result.hard_prune['map50']:.2f} "
                  f"(+ BN recal. {100 * result.best_hard_prune['map50']:.2f}), "
                  f"retrained {100 * tuned['map50']:.2f} ({result.seconds:.0f} s)", flush=True)

    report = {"rows": rows, "dense": dense, "dense_seconds": dense_seconds, "args": vars(args),
              "machine": {"platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads(),
                          "torch": torch.__version__}}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    table = tables(rows, dense)
    (out / "report.md").write_text(table + "\n")
    print(table)
    print(f"report: {out / 'report.json'}\ntable: {out / 'report.md'}")
    return 0


def tables(rows: list[dict[str, Any]], dense: dict[str, float]) -> str:
    """The paper's layout, one table per metric; a method missing from the run shows '-'."""
    methods = sorted({r["method"] for r in rows}, key=lambda m: {"admm": 0, "slr": 1}.get(m, 2))
    keys = sorted({(r["model"], r["ratio"]) for r in rows})
    parts = []
    for metric, label in (("map50", "mAP@0.5"), ("map", "mAP@0.5:0.95")):
        header = ["model", "prune ratio", "compression (pruned layers)", "compression (all weights)",
                  f"{label} dense"]
        header += [f"hard-prune {m.upper()}" for m in methods] + [f"+ BN recal. {m.upper()}" for m in methods]
        header += [f"retrained {m.upper()}" for m in methods]
        header += [f"seconds {m.upper()}" for m in methods]
        lines = [f"### {label} (%)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model, ratio in keys:
            by = {r["method"]: r for r in rows if r["model"] == model and r["ratio"] == ratio}
            any_row = next(iter(by.values()))
            cells = [model, f"{ratio:g}", f"{any_row['compression_pruned']:.2f}x",
                     f"{any_row['compression_model']:.2f}x", _pct(dense[metric])]
            cells += [_pct(by[m]["hard_prune"][metric]) if m in by else "-" for m in methods]
            cells += [_pct((by[m]["hard_prune_bn"] or by[m]["hard_prune"])[metric]) if m in by else "-"
                      for m in methods]
            cells += [_pct(by[m]["retrained"][metric]) if m in by else "-" for m in methods]
            cells += [f"{by[m]['seconds']:.0f}" if m in by else "-" for m in methods]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _with_val_json(data_yaml: Path, val_json: Path, out: Path) -> Path:
    """A copy of the data yaml with `val_json` set (absolute paths, so it can live in --out)."""
    import yaml

    from slr_prune.data.yolo import load_data_yaml

    parsed = load_data_yaml(data_yaml)  # validates the original first
    spec = yaml.safe_load(data_yaml.read_text())
    spec["path"] = str(parsed.root)
    spec["val_json"] = str(val_json.resolve())
    copy_path = out / f"{data_yaml.stem}-with-json.yaml"
    copy_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return copy_path


if __name__ == "__main__":
    sys.exit(main())
