"""Readers of real on-disk dataset formats, and the shipped digits.

`classification_datasets(name, root)` returns (train, val, info) where info gives the number of
classes, the input size and channels (and for image folders the augmentation).  Nothing is ever
downloaded.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .cifar10 import CIFAR10Batches
from .digits import digits_split
from .imagefolder import AUGMENTS, Augment, default_augment, image_folders

__all__ = ["classification_datasets", "DATASETS", "AUGMENTS", "CIFAR10Batches", "digits_split", "image_folders"]

DATASETS = ("digits", "cifar10", "imagefolder")
FIXED_SIZE = {"digits": 8, "cifar10": 32}
"""Datasets whose images have one size, which no other --image-size can honour (no resizing)."""
MAX_IMAGE_SIZE = 4096
"""The largest side image folders are resized to (a 4096² RGB batch of 64 is already 12 GiB)."""


def check_settings(name: str, root: str | Path | None, image_size: int | None) -> None:
    """Refuse, before reading anything, a root the dataset does not read (the shipped digits) or
    lacks, and an image size it cannot honour; each error names the valid setting."""
    if name == "digits" and root is not None:
        raise ValueError(f"dataset 'digits' ships with the package and reads no --data (got {str(root)!r}); drop "
                         "--data, or choose --dataset cifar10 or imagefolder")
    if name != "digits" and root is None:
        raise ValueError(f"dataset {name!r} is read from disk: give its root folder (--data PATH)")
    fixed = FIXED_SIZE.get(name)
    if image_size is not None and fixed is not None and image_size != fixed:
        raise ValueError(f"dataset {name!r} has {fixed}x{fixed} images and is not resized: --image-size must be "
                         f"{fixed} (or left out), got {image_size}")
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"--image-size {image_size} is outside 1..{MAX_IMAGE_SIZE}, the sizes image folders "
                         "are resized to")


def classification_datasets(name: str, root: str | Path | None = None, image_size: int | None = None,
                            augment: Augment | None = None) -> tuple[Dataset, Dataset, dict]:
    """`augment` (one of `AUGMENTS`, default by size) applies to image folders only; digits and
    CIFAR-10 keep their own recipes (one-pixel shifts; crop and flip)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if augment is not None and name != "imagefolder":
        raise ValueError(f"augment applies to the imagefolder dataset only, not {name!r}")
    check_settings(name, root, image_size)
    if name == "digits":
        train, val = digits_split()
        return train, val, {"num_classes": 10, "image_size": 8, "in_channels": 1}
    if name == "cifar10":
        train, val = CIFAR10Batches(root, train=True, augment=True), CIFAR10Batches(root, train=False)
        return train, val, {"num_classes": 10, "image_size": 32, "in_channels": 3}
    size = image_size or 224
    augment = augment or default_augment(size)
    train, val = image_folders(root, size, augment)
    return train, val, {"num_classes": len(train.classes), "image_size": size,
                        "in_channels": int(val[0][0].shape[0]), "augment": augment}
