"""`slr-prune describe`: which parameters a spec prunes, with counts, before any compute."""

from __future__ import annotations

import argparse

from .common import make_spec, make_task, spec_args, task_args

NAME = "describe"
HELP = "show which parameters a spec prunes, with counts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    task_args(p)
    spec_args(p)


def run(args: argparse.Namespace) -> None:
    task = make_task(args)
    model = task.build_model()
    shape = tuple(task.example_input().shape[1:])
    classes = getattr(task, "info", {}).get("num_classes")
    print(f"model {task.record().get('model', task.name)} for input {shape}"
          + (f" and {classes} classes" if classes else "")
          + ("" if args.data or args.dataset else " (no --data/--dataset given: the task's default shape)"))
    print(make_spec(args, task).describe(model))
