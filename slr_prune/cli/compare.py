"""`slr-prune compare`: several methods from the same checkpoint under the same budget and epochs."""

from __future__ import annotations

import argparse

from ..solvers import SOLVERS
from .prune import add_common, run_methods

NAME = "compare"
HELP = "several methods from the same checkpoint under the same budget and epochs; table, report and figure"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, NAME)
    p.add_argument("--methods", default="slr,admm,magnitude,layerwise",
                   help=f"comma-separated methods from: {', '.join(SOLVERS.list())}")


def run(args: argparse.Namespace) -> None:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--methods is empty; choose from {', '.join(SOLVERS.list())}")
    run_methods(args, methods)
