"""`slr-prune finetune`: masked fine-tuning of a pruned checkpoint (its zeros stay zero)."""

from __future__ import annotations

import argparse

from ..task import task_name
from ..utils import state_digest
from .common import (
    check_out,
    is_structured,
    load_model,
    run_folder_args,
    task_args,
    train_args,
    train_config,
    write_run_files,
)

NAME = "finetune"
HELP = "masked fine-tuning of a pruned checkpoint (its zeros stay zero); writes finetuned.pt into the run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    p.add_argument("--checkpoint", required=True, help="a pruned checkpoint (pruned.pt of prune/compare)")
    train_args(p, epochs=5, lr=0.01)
    run_folder_args(p, "runs/finetune")


def run(args: argparse.Namespace) -> None:
    from ..engine import Trainer, save_atomic
    from ..masks import Masks, squash
    from ..structured.record import save_pruned

    out = check_out(args.out)
    task, model, checkpoint = load_model(args)
    source = state_digest(model)
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    masks = Masks(checkpoint["masks"]) if "masks" in checkpoint else Masks.from_model(model, names)
    masks.attach(model)
    state = out / "finetune.state.pt"
    config = train_config(args, checkpoint=str(state), resume=args.resume,
                          settings={"task": task.record(), "source_weights": source})
    history = Trainer(task, model, config, desc="finetune").fit()
    squash(model)
    metrics = task.evaluate(model, next(model.parameters()).device)
    if is_structured(checkpoint):  # a resized model: keep its structure record with the weights
        save_pruned(out / "finetuned.pt", model, {**checkpoint.get("extra", {}), "metrics": metrics})
    else:
        save_atomic({"model": model.state_dict(), "masks": masks.state_dict(), "task": task.record(),
                     "task_name": task_name(task), "metrics": metrics}, out / "finetuned.pt")
    if not args.keep_checkpoints:
        state.unlink(missing_ok=True)
    report = write_run_files(out, args, {"metrics": metrics, "history": history}, task=task.record(),
                             source_checkpoint=args.checkpoint)
    print(f"fine-tuned {task.metric}: {100 * metrics[task.metric]:.2f}%\ncheckpoint: {out / 'finetuned.pt'}\n"
          f"report: {report}")
