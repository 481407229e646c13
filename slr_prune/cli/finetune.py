"""`slr-prune finetune`: masked fine-tuning of a pruned checkpoint (its zeros stay zero)."""

from __future__ import annotations

import argparse

from ..utils import state_digest
from .common import (
    check_out,
    load_model,
    run_folder_args,
    task_args,
    train_args,
    train_config,
    write_run_files,
)
from .runfolder import DEFAULT_OUT

NAME = "finetune"
HELP = "masked fine-tuning of a pruned checkpoint (its zeros stay zero); writes finetuned.pt into the run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    p.add_argument("--checkpoint", required=True, help="a pruned checkpoint (pruned.pt of prune/compare)")
    train_args(p, epochs=5, lr=0.01)
    run_folder_args(p, DEFAULT_OUT[NAME])


def run(args: argparse.Namespace) -> None:
    from ..artifact import Artifact, save_artifact
    from ..engine import Trainer
    from ..masks import Masks, check_mask_sparsity, check_masks, squash

    out = check_out(args.out)
    task, model, artifact = load_model(args)
    source = state_digest(model)
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    if artifact.masks is not None:
        check_masks(artifact.masks, model, f"checkpoint {args.checkpoint!r}")
        check_mask_sparsity(artifact.masks, (artifact.result or {}).get("sparsity"), f"checkpoint {args.checkpoint!r}")
    masks = Masks(artifact.masks) if artifact.masks is not None else Masks.from_model(model, names)
    masks.attach(model)
    state = out / "finetune.state.pt"
    config = train_config(args, checkpoint=str(state), resume=args.resume,
                          settings={"task": task.record(), "source_weights": source})
    history = Trainer(task, model, config, desc="finetune").fit()
    squash(model)
    metrics = task.evaluate(model, next(model.parameters()).device)
    save_artifact(Artifact.of(model, task, masks=masks.state_dict(), result={**(artifact.result or {}),
                                                                             "metrics": metrics}),
                  out / "finetuned.pt")
    if not args.keep_checkpoints:
        state.unlink(missing_ok=True)
    report = write_run_files(out, args, {"metrics": metrics, "history": history}, task=task.record(),
                             source_checkpoint=args.checkpoint)
    print(f"fine-tuned {task.metric}: {100 * metrics[task.metric]:.2f}%\ncheckpoint: {out / 'finetuned.pt'}\n"
          f"report: {report}")
