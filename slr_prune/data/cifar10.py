"""CIFAR-10 from its python batches on disk (cifar-10-batches-py), never downloaded.

The reader checks the structure of the files instead of torchvision's fixed checksums, so a
re-packed subset (or a test fixture) in the same format loads too.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CIFAR10Batches", "find_cifar10", "MEAN", "STD"]

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]


def find_cifar10(root: str | Path) -> Path:
    """The cifar-10-batches-py folder given it or its parent; a clear error otherwise."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"CIFAR-10 root {str(root)!r} does not exist; give the folder that "
                                "holds cifar-10-batches-py (extract cifar-10-python.tar.gz there)")
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
            return folder
    raise FileNotFoundError(f"{str(root)!r} holds no CIFAR-10 python batches (data_batch_1..5, "
                            "test_batch); expected them in it or in its cifar-10-batches-py folder")


# What a CIFAR python batch pickles: a dict of str/bytes/lists/ints and one numpy uint8 array.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),  # bytes under protocol 2
}


class BatchUnpickler(pickle.Unpickler):
    """Unpickles only the types a CIFAR batch holds; anything else (code) is refused, not run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds "
                                         "(refused: unpickling it could run code)")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {str(path)!r} is missing")
    try:
        with open(path, "rb") as f:
            entry = BatchUnpickler(f, encoding="latin1").load()
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
    except Exception as e:  # a wrong format shows up as any of several errors
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 python batch (a pickled dict with "
                         f"'data' N×3072 uint8 and 'labels'): {e}") from e
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{str(path)!r}: 'data' must be an N×3072 uint8 array, got "
                         f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    if len(data) == 0:
        raise ValueError(f"{str(path)!r} holds no images")
    if not isinstance(labels, list | tuple) or len(labels) != len(data):
        raise ValueError(f"{str(path)!r}: {len(data)} images but labels do not match")
    if not all(isinstance(t, int) and 0 <= t <= 9 for t in labels):
        raise ValueError(f"{str(path)!r}: labels must be integers in 0..9")
    return data.reshape(-1, 3, 32, 32), list(labels)


class CIFAR10Batches(Dataset):
    """CIFAR-10 train or test split as normalised (3, 32, 32) tensors; `augment` = crop + flip."""

    def __init__(self, root: str | Path, train: bool = True, augment: bool = False):
        folder = find_cifar10(root)
        parts = [_read_batch(folder / f) for f in (TRAIN_FILES if train else TEST_FILES)]
        self.data = torch.from_numpy(np.concatenate([d for d, _ in parts]))
        self.targets = torch.tensor([t for _, ts in parts for t in ts], dtype=torch.long)
        if self.targets.min() < 0 or self.targets.max() > 9:
            raise ValueError(f"CIFAR-10 labels in {str(folder)!r} must lie in 0..9")
        self.augment = augment
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.data[i].float().div(255)
        if self.augment:
            x = torch.nn.functional.pad(x, (4, 4, 4, 4))
            dy, dx = torch.randint(0, 9, (2,)).tolist()
            x = x[:, dy:dy + 32, dx:dx + 32]
            if torch.rand(()) < 0.5:
                x = x.flip(2)
        return (x - self.mean) / self.std, self.targets[i]
