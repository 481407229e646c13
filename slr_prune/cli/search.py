"""`slr-prune search`: PR-DARTS search of pruning-aware cells, derive, train, prune, evaluate."""

from __future__ import annotations

import argparse
import sys

from ..solvers import SOLVERS, solver_config
from .common import (
    bn_args,
    check_out,
    make_spec,
    make_task,
    run_folder_args,
    solver_args,
    solver_options,
    spec_args,
    task_args,
    train_args,
    train_config,
    write_run_files,
)

NAME = "search"
HELP = ("PR-DARTS: search DARTS cells whose candidates include convolutions on the target sparsity set, derive "
        "the network, train it, prune it with a registered solver and evaluate without retraining")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..search import OPS, SearchConfig

    d = SearchConfig()
    task_args(p)
    spec_args(p)
    g = p.add_argument_group("architecture search")
    g.add_argument("--search-epochs", type=int, default=d.epochs, help="search epochs")
    g.add_argument("--channels", type=int, default=d.channels, help="initial channels of the cells")
    g.add_argument("--layers", type=int, default=d.layers, help="cells in the network (reductions at 1/3, 2/3)")
    g.add_argument("--steps", type=int, default=d.steps, help="intermediate nodes per cell")
    g.add_argument("--ops", default=",".join(d.ops),
                   help="candidate operations: " + "; ".join(f"{e.name}: {e.help}" for e in OPS.entries()))
    g.add_argument("--search-lr", type=float, default=d.lr, help="weight learning rate of the search (SGD)")
    g.add_argument("--arch-lr", type=float, default=d.arch_lr, help="architecture learning rate (Adam)")
    g.add_argument("--penalty", type=float, default=d.penalty,
                   help="weight of ½‖W − Π(W)‖² over the pruned candidates in the weight objective")
    g.add_argument("--prune-all", action="store_true",
                   help="every convolution of the cells is on the sparsity set during the search (as after pruning), "
                        "not only the pruned candidates")
    train_args(p, prefix="train-", epochs=15, lr=0.05, label="dense training of the derived network")
    train_args(p, epochs=10, lr=0.01, label="solver training")
    train_args(p, prefix="finetune-", epochs=1, lr=0.01, label="masked fine-tuning")
    p.add_argument("--method", default="slr", choices=SOLVERS.list(), help="solver that prunes the derived network")
    solver_args(p)
    bn_args(p)
    run_folder_args(p, "runs/search")


def run(args: argparse.Namespace) -> None:
    from ..engine.distributed import is_main
    from ..search import OPS, SearchConfig, search_prune

    out = check_out(args.out)
    config = SearchConfig(epochs=args.search_epochs, channels=args.channels, layers=args.layers, steps=args.steps,
                          ops=tuple(o.strip() for o in args.ops.split(",") if o.strip()), lr=args.search_lr,
                          arch_lr=args.arch_lr, penalty=args.penalty, prune_all=args.prune_all,
                          batch_size=args.batch_size, seed=args.seed, device=args.device,
                          progress=not args.no_progress)
    for name in config.ops:
        OPS.get(name)  # unknown operation names fail before the search
    task = make_task(args)
    if not hasattr(task, "train_dataset") or getattr(task, "info", None) is None:
        raise ValueError(f"--task {args.task}: the search needs a classification task (a map-style dataset)")
    spec = make_spec(args, task)
    options = solver_config(args.method, solver_options(args, args.method))  # checked before the search
    result = search_prune(task, spec, args.method, search_config=config, train=train_config(args, prefix="train_"),
                          prune_train=train_config(args), finetune=train_config(args, prefix="finetune_",
                                                                                 schedule="constant"),
                          solver_options=options, out_dir=out, resume=args.resume, bn_batches=args.bn_batches,
                          keep_checkpoints=args.keep_checkpoints)
    if not is_main():
        return
    r, m = result.pruned, task.metric
    print(f"genotype: {result.search.genotype.to_dict()}")
    print(f"derived network: {result.costs['dense']['params']:,} params, {result.costs['dense']['macs']:,} MACs; "
          f"dense {m} {100 * result.dense[m]:.2f}%")
    bn = r.hard_prune_bn[m] if r.hard_prune_bn else r.hard_prune[m]
    tuned = f", fine-tuned {100 * r.finetuned[m]:.2f}%" if r.finetuned else ""
    print(f"pruned ({args.method}, sparsity {100 * r.sparsity:.1f}%): hard-prune {100 * r.hard_prune[m]:.2f}%, "
          f"+ BN recal. {100 * bn:.2f}%{tuned}; {result.costs['pruned']['nonzero_params']:,} non-zero params, "
          f"{result.costs['pruned']['sparse_macs']:,} sparse MACs")
    report = write_run_files(out, args, result.to_dict(), task=task.record(), spec=spec.to_dict(),
                             search=config.fingerprint())
    print(f"run folder: {out}\n  genotype: {out / 'genotype.json'}\n  cells: {out / 'cells.png'}\n  pruned model: "
          f"{out / 'prune' / 'pruned.pt'}\n  report: {report}", file=sys.stdout)
