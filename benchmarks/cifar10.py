#!/usr/bin/env python
"""SLR vs ADMM on CIFAR-10 read from disk, in the layout of the SLR paper's CIFAR-10 table.

    python benchmarks/cifar10.py --data ~/data --model resnet18 --checkpoint runs/r18.pt \\
        --ratios 0.7,0.8,0.9 --epochs 100 --finetune-epochs 50

--data is the folder holding cifar-10-batches-py (nothing is downloaded).  Without --checkpoint
a dense model is trained first for --dense-epochs.
"""

import argparse

from paper_table import add_arguments, run

from slr_prune.adapters import ClassificationTask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CIFAR-10 root (holds cifar-10-batches-py)")
    add_arguments(p, model="resnet18", ratios="0.7,0.8,0.9", epochs=100, dense_epochs=200)
    args = p.parse_args()
    run(args, lambda seed: ClassificationTask(args.model, "cifar10", args.data, batch_size=args.batch_size,
                                              workers=args.workers, seed=seed), "cifar10")


if __name__ == "__main__":
    main()
