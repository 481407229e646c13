"""`slr-prune evaluate`: metric, per-layer sparsity, params and MACs of a checkpoint, and a sweep."""

from __future__ import annotations

import argparse

from .common import bn_args, load_model, task_args

NAME = "evaluate"
HELP = "metric, sparsity per layer, params and MACs of a checkpoint; optional hard-prune sweep"


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    p.add_argument("--checkpoint", required=True, help="a checkpoint from train, prune or finetune")
    p.add_argument("--sweep", default=None,
                   help="also hard-prune (magnitude, no retraining) at these ratios, e.g. 0.5,0.7,0.9")
    p.add_argument("--form", default=None,
                   help="sparsity form of the --sweep, one with a ratio (default: unstructured)")
    bn_args(p)


def _ratios(text: str) -> list[float]:
    try:
        return [float(r) for r in text.split(",")]
    except ValueError as e:
        raise ValueError(f"--sweep {text!r}: give comma-separated ratios such as 0.5,0.7,0.9") from e


def run(args: argparse.Namespace) -> None:
    from ..compressed import file_bytes
    from ..engine import resolve_device
    from ..evaluate import sparsity_sweep
    from ..metrics import cost_summary
    from ..sets import check_ratio
    from ..spec import FORMS, Rule, form_has_ratio

    ratios = _ratios(args.sweep) if args.sweep else []
    if "bn_batches" in getattr(args, "given", ()) and not ratios:
        raise ValueError("--bn-batches sets the recalibration of the --sweep; add --sweep RATIOS or drop it")
    if args.form is not None and not ratios:
        raise ValueError(f"--form {args.form} sets the form of --sweep; add --sweep RATIOS or drop --form")
    args.form = args.form or "unstructured"
    if ratios and not form_has_ratio(args.form):
        valid = ", ".join(f for f in FORMS.list() if form_has_ratio(f))
        raise ValueError(f"--form {args.form} fixes its own density, so the --sweep ratios {args.sweep} would all "
                         f"give the same model; sweep a form with a ratio ({valid})")
    Rule("*", form=args.form)  # an unknown form and a bad ratio fail before the model is evaluated
    for ratio in ratios:
        check_ratio(ratio, "--sweep")
    task, model, _ = load_model(args)
    device = resolve_device(args.device)
    model.to(device)
    metrics = task.evaluate(model, device)
    costs = cost_summary(model, task.example_input())
    print(f"{'layer':<40} {'params':>10} {'sparsity':>9} {'MACs':>14} {'sparse MACs':>14}")
    for row in costs["layers"]:
        sparsity = 1 - row["nonzero"] / row["params"]
        print(f"{row['name']:<40} {row['params']:>10,} {100 * sparsity:8.2f}% "
              f"{row['macs']:>14,} {row['sparse_macs']:>14,}")
    size = file_bytes(model)
    print(f"params {costs['params']:,} (non-zero {costs['nonzero_params']:,}, {costs['compression']:.2f}x nominal)"
          f"  MACs {costs['macs']:,} (sparse {costs['sparse_macs']:,})")
    print(f"bytes: dense checkpoint {size['dense']:,}, compressed file {size['compressed']:,} "
          f"({size['compressed'] / size['dense']:.3f}x; slr-prune export --format compressed)")
    print("  ".join(f"{k} {100 * v:.2f}%" if k == task.metric else f"{k} {v:.4f}" for k, v in metrics.items()))
    if ratios:
        print(f"hard-prune sweep ({args.form}, magnitude projection, no retraining):")
        for row in sparsity_sweep(task, model, ratios, form=args.form, device=device, bn_batches=args.bn_batches):
            bn = f"  after BatchNorm recalibration {100 * row['bn_' + task.metric]:.2f}%" \
                if f"bn_{task.metric}" in row else ""
            print(f"  ratio {row['ratio']:.3f}: {task.metric} {100 * row[task.metric]:.2f}%{bn}")
