"""scikit-learn's digits (1,797 8×8 grey images, 10 classes): the shipped default dataset."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["Digits", "digits_split"]

MEAN, STD = 4.88, 6.02  # of the pixel values (0..16) over the whole set


class Digits(Dataset):
    """Images as (1, 8, 8) float tensors, normalised; `augment` shifts by up to one pixel."""

    def __init__(self, images: Tensor, labels: Tensor, augment: bool = False):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.images[i]
        if self.augment:
            dy, dx = torch.randint(-1, 2, (2,)).tolist()
            x = torch.roll(torch.nn.functional.pad(x, (1, 1, 1, 1)), (dy, dx), (1, 2))[:, 1:9, 1:9]
        return x, self.labels[i]


def digits_split(test_fraction: float = 0.25, seed: int = 0, augment: bool = True) -> tuple[Digits, Digits]:
    """A fixed stratified train/test split of the digits (the same for every run with `seed`)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) - MEAN) / STD
    labels = torch.tensor(bunch.target, dtype=torch.long)
    tr, te = train_test_split(range(len(labels)), test_size=test_fraction, random_state=seed,
                              stratify=bunch.target)
    return Digits(images[tr], labels[tr], augment), Digits(images[te], labels[te])
