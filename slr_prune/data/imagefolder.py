"""ImageNet-style folders: root/train/<class>/*.JPEG and root/val/<class>/*.JPEG."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

__all__ = ["image_folders"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def image_folders(root: str | Path, image_size: int = 224) -> tuple[Dataset, Dataset]:
    """Train (random-resized crop, flip) and val (resize, centre crop) datasets."""
    from torchvision import datasets, transforms

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"image-folder dataset {str(root)!r} needs a {split}/ folder with "
                                    "one sub-folder per class")
    normalize = transforms.Normalize(MEAN, STD)
    train = datasets.ImageFolder(root / "train", transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize]))
    val = datasets.ImageFolder(root / "val", transforms.Compose([
        transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
        transforms.ToTensor(), normalize]))
    if train.classes != val.classes:
        raise ValueError(f"{str(root)!r}: train/ and val/ have different class folders")
    return train, val
