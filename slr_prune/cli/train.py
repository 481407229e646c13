"""`slr-prune train`: a dense baseline checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..task import task_name
from .common import check_out, make_task, run_folder_args, task_args, train_args, train_config, write_run_files
from .runfolder import DEFAULT_OUT

NAME = "train"
HELP = "train a dense baseline; writes dense.pt into the run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    train_args(p, epochs=30)
    run_folder_args(p, DEFAULT_OUT[NAME])


def run(args: argparse.Namespace) -> None:
    from ..artifact import Artifact, save_artifact
    from ..engine import Trainer

    if Path(args.out).suffix == ".pt":
        raise ValueError(f"--out {args.out!r} is a file name; --out names a run folder (dense.pt is written into it)")
    out = check_out(args.out)
    task = make_task(args)
    model = task.build_model()
    config = train_config(args, checkpoint=str(out / "train.state.pt"), resume=args.resume,
                          settings={"task": task.record(), "task_name": task_name(task)})
    history = Trainer(task, model, config).fit()
    if not args.keep_checkpoints:
        Path(config.checkpoint).unlink(missing_ok=True)
    metrics = task.evaluate(model, next(model.parameters()).device)
    save_artifact(Artifact.of(model, task, result={"metrics": metrics, "history": history}), out / "dense.pt")
    report = write_run_files(out, args, {"metrics": metrics, "history": history}, task=task.record())
    print(f"dense {task.metric}: {100 * metrics[task.metric]:.2f}%\ncheckpoint: {out / 'dense.pt'}\nreport: {report}")
