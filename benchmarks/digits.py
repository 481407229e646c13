#!/usr/bin/env python
"""SLR vs ADMM in the SLR paper's table layout on the shipped digits (runs anywhere, offline).

    python benchmarks/digits.py                       # ratios 0.8,0.9,0.95, one seed
    python benchmarks/digits.py --seeds 3 --rho-growth 1.5
"""

import argparse

from paper_table import add_arguments, run

from slr_prune.adapters import ClassificationTask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, model="digits_cnn", ratios="0.8,0.9,0.95", epochs=10, dense_epochs=15)
    p.set_defaults(workers=0, batch_size=64)
    args = p.parse_args()
    run(args, lambda seed: ClassificationTask(args.model, "digits", batch_size=args.batch_size, seed=seed), "digits")


if __name__ == "__main__":
    main()
