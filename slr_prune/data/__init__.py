"""Readers of real on-disk dataset formats, and the shipped digits.

`classification_datasets(name, root)` returns (train, val, info) where info gives the number of
classes, the input size and channels.  Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .cifar10 import CIFAR10Batches
from .digits import digits_split
from .imagefolder import image_folders

__all__ = ["classification_datasets", "DATASETS", "CIFAR10Batches", "digits_split", "image_folders"]

DATASETS = ("digits", "cifar10", "imagefolder")


def classification_datasets(name: str, root: str | Path | None = None,
                            image_size: int | None = None) -> tuple[Dataset, Dataset, dict]:
    if name == "digits":
        train, val = digits_split()
        return train, val, {"num_classes": 10, "image_size": 8, "in_channels": 1}
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} is read from disk: give its root folder (--data PATH)")
    if name == "cifar10":
        train, val = CIFAR10Batches(root, train=True, augment=True), CIFAR10Batches(root, train=False)
        return train, val, {"num_classes": 10, "image_size": 32, "in_channels": 3}
    size = image_size or 224
    train, val = image_folders(root, size)
    return train, val, {"num_classes": len(train.classes), "image_size": size, "in_channels": 3}
