"""`DatasetTask`: a Task over two map-style datasets with plain DataLoaders."""

from __future__ import annotations

from typing import Any

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

    def probe_loader(self) -> DataLoader:
        # Training data in a fixed order: a fixed sample of the objective SLR minimises.
        return DataLoader(self.train_set, self.batch_size, shuffle=False, num_workers=self.workers)
