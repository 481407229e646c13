"""`LoaderTask`: your own model and data as a ready Task, from a model and two loaders.

The convention, one for every piece: batches are `(input, target)` pairs, the model maps `input`
to `output`, and both the loss and the metric are functions of `(output, target)` on one batch,
so `torch.nn.CrossEntropyLoss()` or `F.mse_loss` plug in as they are.  The metric of the
validation set is the per-batch metric averaged over examples (exact for means such as accuracy
or squared error); higher must be better (reports print it as a percentage).  Probe and
calibration batches come from the training set in a seeded order, so every run sees the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..task import Task
from ..utils import model_mode

__all__ = ["LoaderTask", "top1_accuracy"]

BatchFn = Callable[[Any, Any], Any]
"""A loss or metric: `(output, target) -> Tensor | float`, over one batch."""


def top1_accuracy(output: Tensor, target: Tensor) -> Tensor:
    """The fraction of rows whose largest logit is the target class."""
    return (output.argmax(1) == target).float().mean()


class LoaderTask(Task):
    """A Task built from `model` (a module, or a factory returning one), `train` and `val` (each a
    DataLoader, or a map-style Dataset batched by `batch_size`), `loss(output, target)` (default
    cross-entropy), `metric(output, target)` (default top-1 accuracy) named `metric_name`, and an
    optional `example_input` (default: the first validation input), for FLOPs counting.

    A module is copied once here, so `build_model()` gives its architecture with the weights it
    had when the task was made (pass a factory to avoid the copy).  `record()` describes the task
    in JSON but cannot rebuild it: CLI commands that reload a checkpoint (`--checkpoint`, `export`)
    need a task registered with `slr_prune.task.register_task`.
    """

    def __init__(self, model: nn.Module | Callable[[], nn.Module], train: DataLoader | Dataset,
                 val: DataLoader | Dataset, *, loss: BatchFn | None = None, metric: BatchFn | None = None,
                 metric_name: str | None = None, example_input: Tensor | None = None,
                 batch_size: int | None = None, name: str = "custom"):
        if not (isinstance(model, nn.Module) or callable(model)):
            raise TypeError(f"model must be an nn.Module or a function returning one, got {type(model).__name__}")
        for label, fn in (("loss", loss), ("metric", metric)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{label} must be a function of (output, target), got {type(fn).__name__}")
        if example_input is not None and not isinstance(example_input, Tensor):
            raise TypeError(f"example_input must be a Tensor with a batch dimension, "
                            f"got {type(example_input).__name__}")
        self._template = copy.deepcopy(model) if isinstance(model, nn.Module) else None
        self._factory = None if isinstance(model, nn.Module) else model
        self._train = _as_loader(train, batch_size, "train", shuffle=True)
        self._val = _as_loader(val, batch_size, "val", shuffle=False)
        self._loss = loss if loss is not None else F.cross_entropy
        self._metric = metric if metric is not None else top1_accuracy
        self.metric = _metric_name(metric, metric_name)
        self.name = name
        self._example = example_input

    # ---- the model --------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        model = copy.deepcopy(self._template) if self._factory is None else self._factory()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the model factory returned a {type(model).__name__}, not an nn.Module")
        return model

    def example_input(self, batch_size: int = 1) -> Tensor:
        if self._example is None:
            with torch.random.fork_rng(devices=[]):  # a shuffling loader leaves the global RNG as it was
                self._example = _split(next(iter(self._val)))[0][:1].detach().cpu()
        x = self._example[:1]
        return x.repeat(batch_size, *([1] * (x.dim() - 1)))

    # ---- data -------------------------------------------------------------------------------
    def train_dataset(self) -> Any:
        return self._train.dataset

    def train_loader(self, sampler: Any = None) -> DataLoader:
        """The given training loader; with a `sampler` (DDP) the same loader over that sampler."""
        if sampler is None:
            return self._train
        return _rebatched(self._train, sampler=sampler)

    def val_loader(self) -> DataLoader:
        return self._val

    def probe_loader(self) -> DataLoader:
        # The training set in its stored order: a fixed sample of the objective SLR minimises.
        return _rebatched(self._train, shuffle=False)

    # ---- loss and metric --------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Any:
        return model(_to(_split(batch)[0], device))

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        x, y = _split(batch)
        return self._loss(model(_to(x, device)), _to(y, device))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """The metric and the loss over the validation set, each the example-weighted batch mean."""
        metric = loss = 0.0
        total = 0
        with model_mode(model, train=False):
            for batch in self._val:
                x, y = _split(batch)
                out, y = model(_to(x, device)), _to(y, device)
                n = len(y)
                metric += n * float(self._metric(out, y))
                loss += n * float(self._loss(out.float(), y))
                total += n
        if total == 0:
            raise ValueError("the validation loader yielded no examples")
        return {self.metric: metric / total, "val_loss": loss / total}

    def record(self) -> dict[str, Any]:
        """What the task is, as JSON (for reports and resume checks; it cannot rebuild the task)."""
        return {"class": "LoaderTask", "name": self.name, "metric": self.metric, "loss": _fn_name(self._loss, "loss"),
                "model": _fn_name(self._factory, "") or type(self._template).__name__,
                "train_examples": len(self._train.dataset), "val_examples": len(self._val.dataset),
                "train_batch_size": self._train.batch_size}


def _as_loader(data: Any, batch_size: int | None, label: str, shuffle: bool) -> DataLoader:
    """`data` if it is a DataLoader over a map-style dataset, else a DataLoader over the dataset `data`."""
    if isinstance(data, DataLoader):
        loader = data
    elif isinstance(data, Dataset):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"{label} is a dataset: give batch_size (an integer ≥ 1), got {batch_size!r}")
        loader = DataLoader(data, batch_size, shuffle=shuffle)
    else:
        raise TypeError(f"{label} must be a DataLoader or a map-style Dataset, got {type(data).__name__}")
    if isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
        raise ValueError(f"the {label} loader must batch a map-style dataset with a batch_size (no "
                         "IterableDataset or batch_sampler): probe, calibration and DDP batches re-batch it")
    return loader


def _rebatched(loader: DataLoader, **options: Any) -> DataLoader:
    """A loader over the same dataset with the same batching and workers, ordered by `options`."""
    return DataLoader(loader.dataset, loader.batch_size, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      **options)


def _split(batch: Any) -> tuple[Any, Any]:
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise TypeError(f"LoaderTask batches are (input, target) pairs, got a {type(batch).__name__}"
                        + (f" of {len(batch)}" if isinstance(batch, tuple | list) else "")
                        + "; for other batches write a Task subclass (slr_prune.task.Task)")
    return batch[0], batch[1]


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, Tensor) else value


def _metric_name(metric: BatchFn | None, name: str | None) -> str:
    """`name`, else "accuracy" for the default metric, else the function's name."""
    if name is None:
        name = "accuracy" if metric is None else _fn_name(metric, "metric")
    if not (isinstance(name, str) and name and name != "val_loss"):
        raise ValueError(f"metric_name must be a non-empty string other than 'val_loss', got {name!r}")
    return name


def _fn_name(fn: Any, default: str) -> str:
    """A callable's name when it has a readable one (not a lambda), else `default`."""
    name = getattr(fn, "__name__", None) or (type(fn).__name__ if isinstance(fn, nn.Module) else None)
    return name if name and name.isidentifier() else default
