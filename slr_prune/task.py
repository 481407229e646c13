"""The Task interface: what the solver loop needs from a model family.

A task owns the data, the loss and the metric; the trainer and the pruning workflow know nothing
else about the model.  Batches travel as whatever the task's loaders yield; the task moves them
to a device and computes the loss or the metric.  Tasks register by name in `TASKS`
(slr_prune.adapters holds the built-in ones); the core, the engine and the evaluator depend on
this interface only, never on an adapter.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .registry import Registry

__all__ = ["Task", "TASKS", "register_task", "create_task", "task_name"]

TASKS: Registry[Task] = Registry("task")
"""Model families by name; every builder takes the common keyword arguments (model, dataset,
data, batch_size, image_size, workers, seed), ignoring what does not apply."""
register_task = TASKS.register


def create_task(name: str, **options: Any) -> Task:
    """Build the task registered as `name` with the common keyword arguments."""
    return TASKS.get(name).build(**options)


def task_name(task: Task) -> str | None:
    """The registered name of `task`'s class (stored in checkpoints next to `task.record()`)."""
    return next((e.name for e in TASKS.entries() if type(task) is e.builder), None)


class Task(ABC):
    """A model family with its data, loss and metric (higher `metric` is better)."""

    name: str = "task"
    metric: str = "metric"
    side_metrics: tuple[str, ...] = ()
    """Rates `evaluate()` also returns that reports show next to `metric`, as percentages."""
    default_exclude: tuple[str, ...] = ()

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model of the task's architecture."""

    @abstractmethod
    def train_loader(self, sampler: Any = None) -> DataLoader:
        """Training batches; `sampler` (e.g. DistributedSampler) replaces shuffling when given."""

    @abstractmethod
    def train_dataset(self) -> Any:
        """The training dataset (for distributed samplers)."""

    @abstractmethod
    def val_loader(self) -> DataLoader:
        """Held-out batches for the metric."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        """The training loss of `model` on one batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Metrics on the validation data; includes the key `self.metric`."""

    @abstractmethod
    def example_input(self, batch_size: int = 1) -> Tensor:
        """An input tensor of the right shape (for FLOPs counting and latency)."""

    def record(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this task (stored in checkpoints)."""
        return {}

    def probe_batches(self, n: int, seed: int = 0) -> list[Any]:
        """The first n training batches in a fixed order, for SLR's surrogate conditions.

        Drawn under their own seed, so random augmentations give the same batches in every run.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return list(itertools.islice(iter(self.probe_loader()), n))

    def probe_loader(self) -> DataLoader:
        return self.val_loader()

    def calibration_loader(self) -> DataLoader:
        """Where BatchNorm recalibration draws its batches from (the probe data unless overridden)."""
        return self.probe_loader()

    def calibration_batches(self, n: int, seed: int = 0) -> Iterator[Any]:
        """n training batches in a seeded random order, for BatchNorm recalibration (bn.py).

        Shuffled, so a class-sorted dataset still gives every class; drawn lazily under their
        own seed, so every call (and every rank) sees the same images.
        """
        base = self.calibration_loader()
        loader = DataLoader(base.dataset, base.batch_size, shuffle=True, num_workers=base.num_workers,
                            collate_fn=base.collate_fn, generator=torch.Generator().manual_seed(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield from itertools.islice(iter(loader), n)

    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Any:
        """Run `model` on one batch (output unused: BatchNorm recalibration needs only the pass)."""
        return self.loss(model, batch, device)
