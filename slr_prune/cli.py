"""The `slr-prune` command: train, prune, evaluate, finetune, compare, describe, demo.

Every option can also come from a YAML file given with --config (keys are the long option names
with dashes or underscores); options on the command line win over the file.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

from .adapters import TASKS
from .errors import SpecError, StateError

EPILOG = """examples:
  slr-prune demo                                   # digits, SLR vs ADMM vs magnitude, under a minute on a CPU
  slr-prune train --model resnet18 --dataset cifar10 --data ~/data --epochs 200 --out runs/r18.pt
  slr-prune prune --checkpoint runs/r18.pt --method slr --ratio 0.9 --epochs 100 --out runs/r18-slr
  slr-prune prune --config configs/resnet18_cifar10_slr.yaml --data ~/data
  slr-prune compare --checkpoint runs/r18.pt --methods slr,admm,magnitude --ratio 0.9 --epochs 30
  slr-prune evaluate --checkpoint runs/r18-slr/pruned.pt
  slr-prune describe --model resnet50 --form 2:4 --ratio 0
  slr-prune structured --checkpoint runs/r56.pt --criterion chip --flops-target 0.5   # remove filters for real
"""


# ---- argument groups ------------------------------------------------------------------------
def _task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and data")
    g.add_argument("--task", default="classification", choices=sorted(TASKS),
                   help="model family (default: classification)")
    g.add_argument("--model", default=None, help="architecture name, e.g. digits_cnn, resnet18, resnet56 "
                   "(default: the checkpoint's, else digits_cnn)")
    g.add_argument("--dataset", default=None,
                   help="classification: digits (ships with the package), cifar10 or imagefolder (read from --data)")
    g.add_argument("--data", default=None, help="dataset root folder (never downloaded)")
    g.add_argument("--image-size", type=int, default=None, help="input size for imagefolder (default 224)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _train_args(p: argparse.ArgumentParser, prefix: str = "", epochs: int = 10, lr: float = 0.05,
                label: str = "training") -> None:
    g = p.add_argument_group(label)
    g.add_argument(f"--{prefix}epochs", type=int, default=epochs, help=f"{label} epochs (default {epochs})")
    g.add_argument(f"--{prefix}lr", type=float, default=lr, help=f"learning rate (default {lr})")
    if prefix:
        return
    g.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"],
                   help="LR schedule, stepped once per epoch")
    g.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")


def _spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to prune (a spec file, or --form with --ratio/--ratios)")
    g.add_argument("--spec", default=None, help="PruneSpec YAML/JSON file")
    g.add_argument("--form", default="unstructured",
                   help="unstructured, filter, channel, column, pattern or N:M such as 2:4")
    g.add_argument("--ratio", type=float, default=None, help="uniform prune ratio in [0, 1)")
    g.add_argument("--ratios", default=None, help="per-layer ratios: 'glob=ratio,glob=ratio'")
    g.add_argument("--global-budget", action="store_true",
                   help="one magnitude threshold across layers (unstructured)")
    g.add_argument("--exclude", action="append", default=[], help="parameter glob to keep dense (repeatable)")
    g.add_argument("--include-first", action="store_true", help="also prune the first conv/linear layer")
    g.add_argument("--include-last", action="store_true", help="also prune the last (classifier) layer")


def _solver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("solver (SLR defaults are the authors': rho 0.1, M 300, r 0.1, s0 0.01)")
    g.add_argument("--rho", type=float, default=0.1, help="quadratic penalty ρ (SLR and ADMM)")
    g.add_argument("--rho-growth", type=float, default=1.0, help="ρ ← ρ·growth after every update")
    g.add_argument("--rho-max", type=float, default=None, help="cap on ρ under --rho-growth")
    g.add_argument("--rho-end", type=float, default=None,
                   help="grow ρ geometrically from --rho to this value over the run; default 30 unless "
                        "--rho-growth or --rho-max is given")
    g.add_argument("--M", type=float, default=300.0, help="SLR step-size parameter M > 1")
    g.add_argument("--r", type=float, default=0.1, help="SLR step-size parameter 0 < r < 1")
    g.add_argument("--s0", type=float, default=0.01, help="SLR initial step size")
    g.add_argument("--step-scale", default="absolute", choices=["absolute", "rho"],
                   help="SLR: s is an absolute dual step, or counts in units of ρ")
    g.add_argument("--s-max", type=float, default=None, help="SLR: cap on the step size s")
    g.add_argument("--update-every", type=int, default=0,
                   help="SLR/ADMM: a multiplier update every N mini-batches (0: see --updates-per-epoch)")
    g.add_argument("--updates-per-epoch", type=int, default=None,
                   help="SLR/ADMM: multiplier updates spread over each epoch (default: the solver's, SLR 4, ADMM 1)")
    g.add_argument("--rho-balance", type=float, default=0.0,
                   help="SLR/ADMM: residual balancing of ρ with this ratio μ > 1 (0: off, use --rho-growth)")
    g.add_argument("--interval", type=int, default=1, help="ADMM: epochs between Z/U updates")
    g.add_argument("--schedule-magnitude", default="oneshot", choices=["oneshot", "cubic"],
                   help="magnitude: one-shot from the checkpoint, or gradual over --epochs")


def _bn_args(p: argparse.ArgumentParser) -> None:
    from .evaluate import BN_BATCHES

    p.add_argument("--bn-batches", type=int, default=BN_BATCHES,
                   help="training batches that re-estimate BatchNorm statistics after a hard prune; "
                        "both metrics are reported (0: no recalibration)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slr-prune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Prune PyTorch models by constrained optimisation: SLR (surrogate Lagrangian "
                    "relaxation), with ADMM and magnitude pruning as baselines. Start with "
                    "'slr-prune demo'.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", default=None, help="YAML file of option defaults")
        return p

    p = add("demo", "digits end to end: train a small CNN, prune it to 90%% with SLR, ADMM and "
                    "magnitude, evaluate without retraining and after one fine-tuning epoch")
    p.add_argument("--out", default="runs/demo", help="folder for report.json and hard_prune.png")
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = add("train", "train a dense baseline and save its checkpoint")
    _task_args(p)
    _train_args(p, epochs=30)
    p.add_argument("--out", default="runs/dense.pt", help="checkpoint to write")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")

    for name, help_ in (("prune", "prune a checkpoint with one method, evaluate without retraining, "
                                  "then masked fine-tuning"),
                        ("compare", "several methods from the same checkpoint under the same budget "
                                    "and epochs; table, JSON and figure")):
        p = add(name, help_)
        _task_args(p)
        p.add_argument("--checkpoint", default=None, help="dense checkpoint from 'slr-prune train'")
        if name == "prune":
            p.add_argument("--method", default="slr", choices=["slr", "admm", "magnitude"])
        else:
            p.add_argument("--methods", default="slr,admm,magnitude", help="comma-separated methods")
        _spec_args(p)
        _train_args(p, epochs=10, lr=0.01, label="SLR/ADMM training")
        _train_args(p, prefix="finetune-", epochs=1, lr=0.01, label="masked fine-tuning")
        _solver_args(p)
        _bn_args(p)
        p.add_argument("--out", default=f"runs/{name}", help="output folder")
        p.add_argument("--resume", action="store_true", help="continue a stopped run in --out")

    p = add("evaluate", "metric, sparsity per layer, params and MACs of a checkpoint")
    _task_args(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--sweep", default=None,
                   help="also hard-prune (magnitude, no retraining) at these ratios, e.g. 0.5,0.7,0.9")
    p.add_argument("--form", default="unstructured", help="sparsity form of the --sweep")
    _bn_args(p)

    p = add("finetune", "masked fine-tuning of a pruned checkpoint (its zeros stay zero)")
    _task_args(p)
    p.add_argument("--checkpoint", required=True)
    _train_args(p, epochs=5, lr=0.01)
    p.add_argument("--out", default="runs/finetuned.pt")
    p.add_argument("--resume", action="store_true")

    p = add("describe", "show which parameters a spec prunes, with counts")
    _task_args(p)
    _spec_args(p)

    from .structured.cli import add_parser as add_structured

    add_structured(sub)
    return parser


# ---- helpers ----------------------------------------------------------------------------------
def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv; when --config is given, its keys become defaults under the command line."""
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    import yaml

    path = Path(args.config)
    if not path.is_file():
        parser.error(f"--config {args.config!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        parser.error(f"--config {args.config!r} must hold a mapping of option: value")
    known = vars(args)
    defaults = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest == "spec" and isinstance(value, dict):
            defaults["spec_inline"] = value
            continue
        if dest not in known or dest in ("command", "config"):
            valid = sorted(k.replace("_", "-") for k in known if k not in ("command", "config"))
            parser.error(f"--config {args.config!r}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        defaults[dest] = value
    sub = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
    sub.set_defaults(**{k: v for k, v in defaults.items() if k != "spec_inline"})
    args = parser.parse_args(argv)
    args.spec_inline = defaults.get("spec_inline")
    return args


def make_spec(args: argparse.Namespace, task=None):
    """The spec from --spec, an inline config spec, or --ratio/--ratios/--form (plus the task's
    default exclusions, e.g. a detection head's output layers)."""
    from .spec import PruneSpec, Rule

    default_exclude = list(getattr(task, "default_exclude", ()))
    options = {"exclude": args.exclude + [g for g in default_exclude if g not in args.exclude],
               "include_first": args.include_first, "include_last": args.include_last}
    given = [x for x in ("spec", "ratio", "ratios") if getattr(args, x) is not None]
    inline = getattr(args, "spec_inline", None)
    if inline is not None and not given:
        return PruneSpec.from_dict(inline)
    if len(given) != 1:
        raise SpecError("give exactly one of --spec FILE, --ratio R or --ratios 'glob=R,...' "
                        f"(got {', '.join('--' + g for g in given) or 'none'})")
    if args.spec:
        return PruneSpec.load(args.spec)
    if args.ratios:
        rules = []
        for item in args.ratios.split(","):
            glob, sep, value = item.partition("=")
            if not sep:
                raise SpecError(f"--ratios item {item!r} is not glob=ratio")
            try:
                ratio = float(value)
            except ValueError as e:
                raise SpecError(f"--ratios item {item!r}: {value!r} is not a number") from e
            rules.append(Rule(glob.strip(), form=args.form, ratio=ratio))
        return PruneSpec(rules, **options)
    if args.global_budget:
        return PruneSpec.global_budget(args.ratio, **options)
    return PruneSpec.uniform(args.ratio, form=args.form, **options)


def make_task(args: argparse.Namespace, checkpoint: dict[str, Any] | None = None):
    """The task named by --task; options missing on the command line come from the checkpoint."""
    from .adapters import create_task

    saved = dict((checkpoint or {}).get("task", {}))  # every option the task recorded
    given = {"model": args.model, "dataset": args.dataset, "data": args.data, "image_size": args.image_size}
    options = {**saved, **{k: v for k, v in given.items() if v is not None}}
    return create_task(args.task, **{k: v for k, v in options.items() if v is not None},
                       batch_size=args.batch_size, workers=args.workers, seed=args.seed)


def train_config(args: argparse.Namespace, prefix: str = "", **overrides: Any):
    from .engine import TrainConfig

    get = vars(args).get
    options = dict(epochs=get(f"{prefix}epochs"), lr=get(f"{prefix}lr"), optimizer=get("optimizer", "sgd"),
                   momentum=get("momentum", 0.9), weight_decay=get("weight_decay", 5e-4),
                   schedule=get("schedule", "cosine"), amp=not get("no_amp", False), seed=args.seed,
                   device=args.device, progress=not args.no_progress)
    return TrainConfig(**{**options, **overrides})


def solver_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    if method == "magnitude":
        return {"schedule": args.schedule_magnitude}
    from .solvers.base import RHO_END

    rho_end = args.rho_end
    if rho_end is None and args.rho_growth == 1.0 and args.rho_max is None:
        rho_end = RHO_END
    common = {"rho": args.rho, "rho_growth": args.rho_growth, "rho_max": args.rho_max, "rho_end": rho_end,
              "rho_balance": args.rho_balance, "update_every": args.update_every}
    if args.updates_per_epoch is not None:
        common["updates_per_epoch"] = args.updates_per_epoch
    if method == "slr":
        return {**common, "M": args.M, "r": args.r, "s0": args.s0, "step_scale": args.step_scale,
                "s_max": args.s_max}
    return {**common, "interval": args.interval}


def load_model(args: argparse.Namespace, need_checkpoint: bool = True):
    from .engine import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint else None
    if checkpoint is None and need_checkpoint:
        raise FileNotFoundError("--checkpoint is required")
    task = make_task(args, checkpoint)
    model = task.build_model()
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
        except (KeyError, RuntimeError) as e:
            raise StateError(f"checkpoint {args.checkpoint!r} does not fit the task's model ({task.name}): "
                             f"{str(e).splitlines()[0]}") from e
    return task, model, checkpoint


# ---- commands ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> None:
    from .engine import Trainer, save_atomic

    task = make_task(args)
    model = task.build_model()
    config = train_config(args, checkpoint=str(Path(args.out).with_suffix(".state.pt")), resume=args.resume)
    history = Trainer(task, model, config).fit()
    metrics = task.evaluate(model, next(model.parameters()).device)
    save_atomic({"model": model.state_dict(), "task": task.record(), "metrics": metrics,
                 "history": history}, args.out)
    print(f"dense {task.metric}: {100 * metrics[task.metric]:.2f}%  → {args.out}")


def run_methods(args: argparse.Namespace, methods: list[str]):
    from .engine import prune

    task, model, checkpoint = load_model(args, need_checkpoint=False)
    if checkpoint is None:
        print("note: no --checkpoint given; pruning a randomly initialised model", file=sys.stderr)
    spec = make_spec(args, task)
    spec.resolve(model)  # fail before any training if the spec does not fit
    from .solvers import SOLVERS

    for method in methods:  # and if any method's options are invalid (building a solver leaves the model as is)
        SOLVERS[method](model, spec, **solver_options(args, method))
    dense = None
    results = []
    for method in methods:
        m = copy.deepcopy(model)
        result = prune(m, task, spec, method, train=train_config(args),
                       finetune=train_config(args, prefix="finetune_", schedule="constant"),
                       solver_options=solver_options(args, method),
                       out_dir=Path(args.out) / method if len(methods) > 1 else args.out,
                       resume=args.resume, dense_metrics=dense, bn_batches=args.bn_batches)
        dense = result.dense
        results.append(result)
    return task, spec, results


def report(results, out: str | Path, title: str) -> None:
    from .report import plot_hard_prune_curves, results_table, write_json

    print(results_table(results))
    json_path = write_json(Path(out) / "report.json", [r.to_dict() for r in results])
    png = plot_hard_prune_curves(results, Path(out) / "hard_prune.png", title)
    print(f"report: {json_path}\nfigure: {png}")


def cmd_prune(args: argparse.Namespace) -> None:
    _, _, results = run_methods(args, [args.method])
    report(results, args.out, f"{args.method} pruning")


def cmd_compare(args: argparse.Namespace) -> None:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from .solvers import SOLVERS

    unknown = [m for m in methods if m not in SOLVERS]
    if unknown or not methods:
        raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(SOLVERS)}")
    _, _, results = run_methods(args, methods)
    report(results, args.out, "SLR vs ADMM vs magnitude, same checkpoint, budget and epochs")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .engine import resolve_device
    from .evaluate import sparsity_sweep
    from .metrics import cost_summary

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
    print(f"params {costs['params']:,} (non-zero {costs['nonzero_params']:,}, {costs['compression']:.2f}x)"
          f"  MACs {costs['macs']:,} (sparse {costs['sparse_macs']:,})")
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if args.sweep:
        ratios = [float(r) for r in args.sweep.split(",")]
        print(f"hard-prune sweep ({args.form}, magnitude projection, no retraining):")
        for row in sparsity_sweep(task, model, ratios, form=args.form, device=device, bn_batches=args.bn_batches):
            bn = f"  after BatchNorm recalibration {100 * row['bn_' + task.metric]:.2f}%" \
                if f"bn_{task.metric}" in row else ""
            print(f"  ratio {row['ratio']:.3f}: {task.metric} {100 * row[task.metric]:.2f}%{bn}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .engine import Trainer, save_atomic
    from .masks import Masks, squash

    task, model, checkpoint = load_model(args)
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    masks = Masks(checkpoint["masks"]) if "masks" in checkpoint else Masks.from_model(model, names)
    masks.attach(model)
    config = train_config(args, checkpoint=str(Path(args.out).with_suffix(".state.pt")), resume=args.resume)
    Trainer(task, model, config, desc="finetune").fit()
    squash(model)
    metrics = task.evaluate(model, next(model.parameters()).device)
    save_atomic({"model": model.state_dict(), "masks": masks.state_dict(), "task": task.record(),
                 "metrics": metrics}, args.out)
    print(f"fine-tuned {task.metric}: {100 * metrics[task.metric]:.2f}%  → {args.out}")


def cmd_describe(args: argparse.Namespace) -> None:
    task = make_task(args)
    print(make_spec(args, task).describe(task.build_model()))


def cmd_structured(args: argparse.Namespace) -> None:
    from .structured.cli import run

    run(args)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out=args.out, ratio=args.ratio, device=args.device, progress=not args.no_progress)


COMMANDS = {"train": cmd_train, "prune": cmd_prune, "compare": cmd_compare, "evaluate": cmd_evaluate,
            "finetune": cmd_finetune, "describe": cmd_describe, "structured": cmd_structured, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = apply_config(parser, list(sys.argv[1:] if argv is None else argv))
    try:
        COMMANDS[args.command](args)
    except (SpecError, StateError, FileNotFoundError, ValueError, FloatingPointError) as e:
        print(f"slr-prune {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
