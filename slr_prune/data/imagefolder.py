"""ImageNet-style folders: root/train/<class>/*.JPEG|png and root/val/<class>/*, colour or grey.

The training augmentation is chosen by `augment` (`AUGMENTS`):

- "imagenet": random-resized crop (8-100% of the area) and horizontal flip; validation resizes
  to 256/224 of the size and centre-crops, the standard ImageNet recipe.  Meant for large
  natural images: at 28 px a crop from 8% of the area keeps a few pixels of a digit.
- "light": shift by up to 1/8 of the side (zero padding, random crop: 4 px at 32, CIFAR's
  recipe), no flip, validation the whole image.  A small shift keeps the label of nearly any
  image; a mirror does not (digits, letters, anything with handedness), so flips are left out.
- "none": training images as the validation ones.

The default (None) follows the input size: "imagenet" from `IMAGENET_MIN_SIZE` (128) px up,
"light" below.  Folders of greyscale images load as one channel, others as RGB.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

from torch.utils.data import Dataset

__all__ = ["image_folders", "default_augment", "Augment", "AUGMENTS", "IMAGENET_MIN_SIZE"]

Augment = Literal["none", "light", "imagenet"]
AUGMENTS: tuple[str, ...] = get_args(Augment)
IMAGENET_MIN_SIZE = 128
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.449,), (0.226,)  # the ImageNet statistics averaged over the channels
GREY_MODES = ("1", "L", "LA")


def default_augment(image_size: int) -> Augment:
    """The augmentation used when none is given: "imagenet" for large inputs, "light" for small."""
    return "imagenet" if image_size >= IMAGENET_MIN_SIZE else "light"


def image_folders(root: str | Path, image_size: int = 224,
                  augment: Augment | None = None) -> tuple[Dataset, Dataset]:
    """Train (augmented as `augment`, default by size) and val datasets of `root`'s folders.

    The images load in mode "L" (one channel) when the first image of every training class is
    greyscale, else as RGB (three channels); the channel count is the data's, not fixed.
    """
    from torchvision import datasets

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"image-folder dataset {str(root)!r} needs a {split}/ folder with "
                                    "one sub-folder per class")
    augment = augment or default_augment(image_size)
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTS)}")
    train, val = datasets.ImageFolder(root / "train"), datasets.ImageFolder(root / "val")
    if train.classes != val.classes:
        raise ValueError(f"{str(root)!r}: train/ and val/ have different class folders")
    mode = "L" if all(_mode(path) in GREY_MODES for path in _first_per_class(train.samples)) else "RGB"
    train_tf, val_tf = _transforms(augment, image_size, mode)
    for dataset, transform in ((train, train_tf), (val, val_tf)):
        dataset.loader, dataset.transform = partial(_load, mode=mode), transform
    return train, val


def _transforms(augment: Augment, size: int, mode: str) -> tuple[Any, Any]:
    """(train, val) transforms: the augmentation, then tensor conversion and normalisation."""
    from torchvision import transforms as T

    normalize = T.Normalize(*((GREY_MEAN, GREY_STD) if mode == "L" else (MEAN, STD)))
    if augment == "imagenet":
        train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        val = [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
    else:
        val = [T.Resize(size), T.CenterCrop(size)]
        train = [*val, T.RandomCrop(size, padding=max(1, size // 8))] if augment == "light" else val
    return tuple(T.Compose([*steps, T.ToTensor(), normalize]) for steps in (train, val))


def _first_per_class(samples: list[tuple[str, int]]) -> list[str]:
    first: dict[int, str] = {}
    for path, target in samples:
        first.setdefault(target, path)
    return list(first.values())


def _mode(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as img:  # reads the header only
            return img.mode
    except Exception as e:  # noqa: BLE001 - any decoder error means an unreadable file
        raise ValueError(f"image {path!r} cannot be read: {e}") from e


def _load(path: str, mode: str) -> Any:
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert(mode)
    except Exception as e:  # noqa: BLE001 - a corrupt or truncated file (any decoder error), named
        raise ValueError(f"image {path!r} cannot be read: {e}") from e
