"""`slr-prune demo`: digits end to end (slr_prune.demo)."""

from __future__ import annotations

import argparse

from .runfolder import DEFAULT_OUT

NAME = "demo"
HELP = ("digits end to end: train a small CNN, prune it to 90% with SLR, ADMM, one-shot magnitude and "
        "zero-epoch layer-wise reconstruction, evaluate without retraining and after one fine-tuning epoch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT[NAME], help="run folder for report.json and hard_prune.png")
    p.add_argument("--ratio", type=float, default=0.9, help="prune ratio of the conv weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars (drawn only on a terminal; epoch lines still print)")


def run(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    run_demo(out=args.out, ratio=args.ratio, device=args.device, progress=not args.no_progress)
