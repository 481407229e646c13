"""`slr-prune search`: PR-DARTS search of pruning-aware cells, derive, train, prune, evaluate."""

from __future__ import annotations

import argparse
import sys

from ..solvers import SOLVERS
from .common import (
    bn_args,
    check_cadences,
    check_out,
    make_spec,
    make_task,
    method_configs,
    run_folder_args,
    solver_args,
    spec_args,
    task_args,
    train_args,
    train_config,
    write_run_files,
)
from .options import add_config_flags, config_values
from .runfolder import DEFAULT_OUT

NAME = "search"
HELP = ("PR-DARTS: search DARTS cells whose candidates include convolutions on the target sparsity set, derive "
        "the network, train it, prune it with a registered solver and evaluate without retraining")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..search import OPS, SearchConfig

    task_args(p)
    spec_args(p)
    g = p.add_argument_group("architecture search")
    ops = "; ".join(f"{e.name}: {e.help}" for e in OPS.entries())
    add_config_flags(g, SearchConfig, help={"ops": f"candidate operations: {ops}"})
    train_args(p, prefix="train-", epochs=15, lr=0.05, label="dense training of the derived network")
    train_args(p, epochs=10, lr=0.01, label="solver training")
    train_args(p, prefix="finetune-", epochs=1, lr=0.01, label="masked fine-tuning")
    p.add_argument("--method", default="slr", choices=SOLVERS.list(), help="solver that prunes the derived network")
    solver_args(p)
    bn_args(p)
    run_folder_args(p, DEFAULT_OUT[NAME])


def run(args: argparse.Namespace) -> None:
    from ..engine.distributed import is_main
    from ..search import OPS, SearchConfig, search_prune

    out = check_out(args.out)
    config = SearchConfig(**config_values(args, SearchConfig), batch_size=args.batch_size, seed=args.seed,
                          device=args.device, progress=not args.no_progress)
    for name in config.ops:
        OPS.get(name)  # unknown operation names fail before the search
    task = make_task(args)
    spec = make_spec(args, task)
    options = method_configs(args, [args.method])[args.method]  # checked before the search
    check_cadences(task, [options])
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
