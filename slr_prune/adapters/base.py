"""`DatasetTask`: a Task over two map-style datasets with plain DataLoaders."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from ..task import Task

__all__ = ["Task", "DatasetTask"]


class DatasetTask(Task):
    """A task over two map-style datasets (`train_set`, `val_set`) with plain DataLoaders.

    Subclasses set `train_set`, `val_set`, `batch_size`, `eval_batch_size` and `workers`.
    """

    train_set: Any
    val_set: Any
    batch_size: int
    eval_batch_size: int
    workers: int

    def train_dataset(self) -> Any:
        return self.train_set

    def train_loader(self, sampler: Any = None) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=self.workers, drop_last=len(self.train_set) > self.batch_size)

    def val_loader(self) -> DataLoader:
        return DataLoader(self.val_set, self.eval_batch_size, num_workers=self.workers)

    probe_set: Any = None

    def hold_out_probe(self, n: int, seed: int = 0) -> None:
        """Move `n` seeded training examples out of the training batches into the probe set, so the
        probe loss of SLR's conditions is measured on data the W-step never fits."""
        from torch.utils.data import Subset

        if not (isinstance(n, int) and 0 < n < len(self.train_set)):
            raise ValueError(f"probe_holdout must be an integer in [1, {len(self.train_set) - 1}], got {n!r}")
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(seed)).tolist()
        full = self.train_set
        self.probe_set, self.train_set = Subset(full, order[:n]), Subset(full, order[n:])

    def probe_loader(self) -> DataLoader:
        # Training data in a fixed order (a fixed sample of the objective SLR minimises), or the
        # held-out probe set when there is one.
        data = self.probe_set if self.probe_set is not None else self.train_set
        return DataLoader(data, self.batch_size, shuffle=False, num_workers=self.workers)

    def calibration_loader(self) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=False, num_workers=self.workers)
