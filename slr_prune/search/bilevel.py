"""`search()`: the first-order bilevel search of α through the pruned weights, with checkpoints.

Each step (Liu et al.'s first-order DARTS): one architecture step on a batch of the search's
validation half — Adam on α, the task's loss through the pruned candidates' projected weights —
then one weight step on a batch of its training half — SGD on the network weights, the task's
loss plus `penalty` · Σ ½‖W − Π_S(W)‖² over the pruned candidates.  The two halves are a seeded
split of the task's training set, so the task's own validation data stays unseen until the end.
The search runs on the Trainer (`BilevelTrainer`), so every epoch reseeds from (seed, epoch),
records the softmax(α) snapshot and the genotype, and writes an atomic checkpoint as every
training phase does; `resume=True` continues it exactly, or refuses when the settings differ.
Any task's loss works: nothing here assumes classification.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from ..console import print_line
from ..engine.distributed import is_main
from ..engine.trainer import Hooks, TrainConfig, Trainer, check_seed
from ..sets import ConstraintSet
from ..task import Task
from .genotype import Genotype
from .ops import pruned_modules
from .space import DEFAULT_OPS, SearchNetwork

__all__ = ["SearchConfig", "SearchResult", "search", "task_classes", "BilevelTrainer"]


@dataclass
class SearchConfig:
    """Hyper-parameters of the search (configs as data)."""

    epochs: int = 10
    channels: int = 8
    layers: int = 3
    steps: int = 3
    ops: tuple[str, ...] = DEFAULT_OPS
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    penalty: float = 1e-3
    prune_all: bool = False
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "channels", "layers", "steps", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= (0 if name == "epochs" else 1)):
                raise ValueError(f"search {name} must be a positive integer, got {value!r}")
        for name in ("lr", "arch_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"search {name} must be positive, got {getattr(self, name)!r}")
        if not self.penalty >= 0:
            raise ValueError(f"search penalty must be ≥ 0, got {self.penalty!r}")
        check_seed(self.seed)
        self.ops = tuple(self.ops)

    def fingerprint(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if k not in ("device", "progress")}


@dataclass
class SearchResult:
    genotype: Genotype
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "epochs": self.epochs, "seconds": self.seconds}


def _halves(task: Task, seed: int) -> tuple[Subset, Subset]:
    data = task.train_dataset()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    half = len(order) // 2
    if half < 1:
        raise ValueError("the search needs at least 2 training examples (half for weights, half for α)")
    return Subset(data, order[:half]), Subset(data, order[half:])


def search(task: Task, sparsity: ConstraintSet, config: SearchConfig | None = None, *,
           checkpoint: str | Path | None = None, resume: bool = False, settings: dict[str, Any] | None = None,
           hooks: Sequence[Hooks] = ()) -> tuple[SearchNetwork, SearchResult]:
    """Search cells for `task` (a Task with a map-style training set, any loss) with the pruned
    candidates on `sparsity`; returns the supernet and the result (genotype, per-epoch α and
    losses).  `hooks` join the search's Trainer."""
    config = config or SearchConfig()
    start = time.perf_counter()
    x0 = task.example_input()
    torch.manual_seed(config.seed)
    net = SearchNetwork(sparsity, config.channels, config.layers, config.steps,
                        num_classes=task_classes(task), in_channels=x0.shape[1], ops=config.ops,
                        prune_all=config.prune_all)
    fingerprint = {**config.fingerprint(), "sparsity": repr(sparsity), **(settings or {})}
    train = TrainConfig(epochs=config.epochs, lr=config.lr, momentum=config.momentum, nesterov=False,
                        weight_decay=config.weight_decay, amp=False, channels_last=False, seed=config.seed,
                        device=config.device, checkpoint=str(checkpoint) if checkpoint else None, resume=resume,
                        progress=config.progress, settings=fingerprint)
    history = BilevelTrainer(task, net, config, train, hooks).fit()
    epochs = [{k: v for k, v in record.items() if k != "seconds"} for record in history]  # reproducible records
    return net, SearchResult(net.genotype(), epochs, time.perf_counter() - start)


class BilevelTrainer(Trainer):
    """The search on the shared training loop (seeding, resume, settings check, checkpoints).

    Each step: an architecture step (Adam on α, the task's loss on a batch of the search's
    validation half), then the Trainer's weight step (SGD on the weights, the task's loss on a
    batch of the training half, plus `SearchPenalty`'s gradient).  Its checkpoint adds the
    architecture optimizer to the Trainer's.
    """

    def __init__(self, task: Task, net: SearchNetwork, search: SearchConfig, train: TrainConfig,
                 hooks: Sequence[Hooks] = ()):
        self.search = search
        super().__init__(task, net, train, hooks=hooks, desc="search")
        self.arch_optimizer = torch.optim.Adam(net.alphas(), lr=search.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=search.arch_weight_decay)
        self.halves = _halves(task, search.seed)
        self.collate = task.train_loader().collate_fn

    def _own_hooks(self) -> list[Hooks]:
        self.record = SearchRecord()
        return [SearchPenalty(self.model, self.search.penalty), self.record]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.search
        return torch.optim.SGD(self.model.weights(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, self.search.epochs),
                                                          eta_min=self.search.lr / 50)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "arch_optimizer": self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])

    def _batches(self) -> tuple[Iterable[Any], int]:
        """(training-half batch, validation-half batch) pairs, shuffled under (seed, epoch)."""
        c = self.search
        loaders = [DataLoader(h, c.batch_size, shuffle=True, drop_last=len(h) > c.batch_size, collate_fn=self.collate,
                              generator=torch.Generator().manual_seed(c.seed * 1000 + self.epoch + k))
                   for k, h in enumerate(self.halves)]
        return zip(*loaders, strict=False), min(map(len, loaders))

    def _step(self, batch: Any) -> Tensor:
        train, val = batch
        self.arch_optimizer.zero_grad(set_to_none=True)
        val_loss = self.task.loss(self.net, val, self.device)
        val_loss.backward()
        self.arch_optimizer.step()
        self.record.add(val_loss.detach())
        self.optimizer.zero_grad(set_to_none=True)  # the α step's gradients on the weights
        return super()._step(train)


class SearchPenalty(Hooks):
    """The weight step's extras: `penalty` · Σ ½‖W − Π_S(W)‖² over the pruned candidates, gradient
    clipping at norm 5, and no α update (α moves only on the validation half)."""

    def __init__(self, net: SearchNetwork, penalty: float):
        self.net, self.penalty = net, penalty
        self.pruned = list(pruned_modules(net).values())

    def after_backward(self, trainer: Trainer) -> None:
        if self.pruned and self.penalty:
            (self.penalty * sum(m.penalty() for m in self.pruned)).backward()
        nn.utils.clip_grad_norm_(self.net.weights(), 5.0)
        for a in self.net.alphas():
            a.grad = None


class SearchRecord(Hooks):
    """Each epoch's search-validation loss, softmax(α) snapshot and genotype (instead of the task's metric)."""

    def __init__(self) -> None:
        self.val_loss, self.val_steps = 0.0, 0

    def add(self, val_loss: Tensor) -> None:
        self.val_loss += float(val_loss)
        self.val_steps += 1

    def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, Any]:
        net = trainer.model
        out = {"search_val_loss": self.val_loss / max(1, self.val_steps),
               "alpha_normal": F.softmax(net.alpha_normal, -1).tolist(),
               "alpha_reduce": F.softmax(net.alpha_reduce, -1).tolist(),
               "genotype": net.genotype().to_dict()}
        self.val_loss, self.val_steps = 0.0, 0
        if is_main():  # with or without progress bars
            print_line(f"search {record['epoch']}/{trainer.config.epochs}  loss {record['train_loss']:.4f}  "
                       f"search-val loss {out['search_val_loss']:.4f}")
        return out


def task_classes(task: Task) -> int:
    """The task's class count (its dataset info, else the output width of its model)."""
    info = getattr(task, "info", None)
    if isinstance(info, dict) and "num_classes" in info:
        return int(info["num_classes"])
    with torch.no_grad():
        return int(task.build_model()(task.example_input()).shape[-1])
