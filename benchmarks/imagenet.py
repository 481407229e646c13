#!/usr/bin/env python
"""SLR vs ADMM on ImageNet-style folders (root/train, root/val), in the SLR paper's table layout.

    python benchmarks/imagenet.py --data /datasets/imagenet --model resnet50 \\
        --checkpoint runs/r50.pt --ratios 0.7,0.8 --epochs 30 --finetune-epochs 10

Nothing is downloaded: give a dense checkpoint trained with `slr-prune train` (torchvision's
pretrained weights can be loaded by the user into such a checkpoint offline).
"""

import argparse

from paper_table import add_arguments, run

from slr_prune.adapters import ClassificationTask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    p.add_argument("--image-size", type=int, default=224)
    add_arguments(p, model="resnet50", ratios="0.7,0.8", epochs=30, dense_epochs=90)
    p.set_defaults(batch_size=64, workers=8)
    args = p.parse_args()
    run(args, lambda seed: ClassificationTask(args.model, "imagefolder", args.data, batch_size=args.batch_size,
                                              image_size=args.image_size, workers=args.workers, seed=seed),
        "imagenet")


if __name__ == "__main__":
    main()
