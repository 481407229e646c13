"""`slr-prune prune`: one method on a checkpoint; what `compare` runs for each of its methods."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..config import flag_name
from ..engine.reconstruct import check_reconstruction
from ..errors import SpecError
from ..solvers import SOLVERS
from .common import (
    bn_args,
    check_cadences,
    check_out,
    check_unused_training,
    load_model,
    make_spec,
    method_configs,
    run_folder_args,
    solver_args,
    solver_options,
    spec_args,
    task_args,
    train_args,
    train_config,
    write_run_files,
)
from .options import add_entry_options, entry_options, unused_flags
from .runfolder import DEFAULT_OUT

__all__ = ["add_common", "run_methods"]


def add_common(p: argparse.ArgumentParser, name: str) -> None:
    task_args(p)
    p.add_argument("--checkpoint", default=None, help="dense checkpoint from 'slr-prune train' (else random init)")
    spec_args(p)
    train_args(p, epochs=10, lr=0.01, label="solver training")
    train_args(p, prefix="finetune-", epochs=1, lr=0.01, label="masked fine-tuning")
    solver_args(p)
    p.add_argument("--reconstruct", action="store_true",
                   help="make the final hard prune of a training method a layer-wise reconstruction (the "
                        "--layer-solver, --calibration-batches, --damping, --refit, --calibration-bn and "
                        "--precision options), reported beside the plain projection")
    allocation_args(p)
    bn_args(p)
    run_folder_args(p, DEFAULT_OUT[name])


def allocation_args(p: argparse.ArgumentParser) -> None:
    """--allocation (the rules of ALLOCATIONS) and the rules' options, generated from their dataclasses."""
    from ..engine.allocation import ALLOCATIONS

    g = p.add_argument_group("per-layer budgets (unstructured)")
    g.add_argument("--allocation", default="uniform", choices=ALLOCATIONS.list(),
                   help="how the --ratio budget is divided among the layers: " +
                        "; ".join(f"{e.name}: {e.help}" for e in ALLOCATIONS.entries()))
    add_entry_options(g, ALLOCATIONS.entries(), "allocation")


def allocation_settings(args: argparse.Namespace, model: Any, sets: Any, task: Any,
                        reconstruct: Any) -> tuple[str, Any]:
    """(rule, its options) from --allocation and its flags, checked against the spec's sets before
    any compute; a rule's flag given with another rule is refused rather than ignored."""
    from ..engine.allocation import ALLOCATIONS, check_allocation
    from ..layerwise import Reconstruction

    entry = ALLOCATIONS.get(args.allocation)
    unused = unused_flags(args, ALLOCATIONS.entries(), entry)
    if unused:
        users = [e.name for e in ALLOCATIONS.entries()
                 if any(flag_name(f) in unused for f in dataclasses.fields(e.options))]
        raise ValueError(f"{', '.join('--' + f for f in unused)} applies to --allocation {', '.join(users)}, not "
                         f"{args.allocation}: drop it or choose that allocation")
    if args.global_budget and entry.traits["reallocates"]:
        raise SpecError(f"--allocation {args.allocation} and --global-budget each divide the budget among the "
                        "layers; give one of them")
    _, options = check_allocation(args.allocation, entry_options(args, entry), sets, model,
                                  reconstruct or Reconstruction(), task)
    return args.allocation, options


def run_methods(args: argparse.Namespace, methods: list[str]) -> tuple[Any, Any, list[Any]]:
    """Prune copies of the checkpoint with each method; every option is checked before training."""
    from ..engine import prune

    entries = [SOLVERS.get(m) for m in methods]  # unknown names fail here
    check_out(args.out)
    task, model, checkpoint = load_model(args, need_checkpoint=False)
    if checkpoint is None:
        print("note: no --checkpoint given; pruning a randomly initialised model", file=sys.stderr)
    spec = make_spec(args, task)
    sets = spec.resolve(model)  # fail before any training if the spec does not fit
    reconstruct = reconstruction(args, methods)
    allocation, allocation_options = allocation_settings(args, model, sets, task, reconstruct)
    layerwise = frozenset(flag_name(f) for f in dataclasses.fields(SOLVERS.get("layerwise").options))
    configs = method_configs(args, methods, exempt=layerwise)  # checks values, and flags no method uses
    check_cadences(task, configs.values())
    check_unused_training(args, configs)
    for e in entries:  # and whether the spec suits each method (building a solver leaves the model as is)
        solver = e.build(model, spec, configs[e.name])
        if reconstruct is not None:
            check_reconstruction(model, solver.projector.sets, reconstruct)
    dense = None
    results = []
    out = Path(args.out)
    for method in methods:
        result = prune(copy.deepcopy(model), task, spec, method, train=train_config(args),
                       finetune=train_config(args, prefix="finetune_", schedule="constant"),
                       solver_options=configs[method], out_dir=out / method if len(methods) > 1 else out,
                       resume=args.resume, dense_metrics=dense, bn_batches=args.bn_batches,
                       keep_checkpoints=args.keep_checkpoints, reconstruct=reconstruct, allocation=allocation,
                       allocation_options=allocation_options)
        dense = result.dense
        results.append(result)
    from ..engine.distributed import is_main
    from ..report import plot_allocation, plot_hard_prune_curves, results_table

    if not is_main():  # under torchrun, rank 0 alone reports
        return task, spec, results
    print(results_table(results, task=task))
    if any(s.form in ("channel", "filter") for s in sets.values()):
        print("note: channel and filter zeros keep every tensor its size, so nothing runs faster; "
              "'slr-prune structured --criterion layerwise' solves the same reconstruction and removes the "
              "channels for real (docs/structured.md)")
    model_name = task.record().get("model", task.name)
    resolved = {name: dataclasses.asdict(config) for name, config in configs.items()}
    report = write_run_files(out, args, [r.to_dict() for r in results], task=task.record(), spec=spec.to_dict(),
                             solver_options=resolved, source_checkpoint=args.checkpoint,
                             allocation={"rule": allocation, "options": dataclasses.asdict(allocation_options)})
    png = plot_hard_prune_curves(results, out / "hard_prune.png", "hard-prune metric per solver epoch",
                                 model=model_name)
    pruned = [out / m / "pruned.pt" for m in methods] if len(methods) > 1 else [out / "pruned.pt"]
    budgets = plot_allocation(results, out / "allocation.png", model=model_name)
    print(f"run folder: {out}\n  pruned models: {', '.join(map(str, pruned))}\n  settings: {out / 'args.yaml'}\n"
          f"  report: {report}\n  figure: {png}" + (f"\n  per-layer ratios: {budgets}" if budgets else ""))
    return task, spec, results


def reconstruction(args: argparse.Namespace, methods: list[str]) -> Any:
    """The --reconstruct settings (from the layer-wise options), or None; layer-wise options that no
    method would use are refused rather than ignored."""
    layerwise = [m for m in methods if SOLVERS.get(m).options.needs_task]
    given = {k: v for k, v in solver_options(args, "layerwise").items() if v is not None}
    if args.reconstruct:
        if layerwise:
            raise ValueError(f"--reconstruct applies to training methods; {', '.join(layerwise)} already "
                             "reconstructs layer by layer: drop --reconstruct or that method")
        return SOLVERS.get("layerwise").options(**given).reconstruction()
    if given and not layerwise:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} set the layer-wise reconstruction: add --reconstruct, or use --method layerwise")
    return None


NAME = "prune"
HELP = ("prune a checkpoint with one method, evaluate without retraining (with and without BatchNorm "
        "recalibration), then masked fine-tuning")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, NAME)
    p.add_argument("--method", default="slr", choices=SOLVERS.list(),
                   help="; ".join(f"{e.name}: {e.help}" for e in SOLVERS.entries()))


def run(args: argparse.Namespace) -> None:
    run_methods(args, [args.method])
