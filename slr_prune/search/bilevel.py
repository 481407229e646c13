"""`search()`: the first-order bilevel search of α through the pruned weights, with checkpoints.

Each step (Liu et al.'s first-order DARTS): one architecture step on a batch of the search's
validation half — Adam on α, the loss through the pruned candidates' projected weights — then
one weight step on a batch of its training half — SGD on the network weights, the loss plus
`penalty` · Σ ½‖W − Π_S(W)‖² over the pruned candidates.  The two halves are a seeded split of
the task's training set, so the task's own validation data stays unseen until the end.  Every
epoch reseeds from (seed, epoch), records the softmax(α) snapshot and the genotype, and writes
an atomic checkpoint; `resume=True` continues it exactly, or refuses when the settings differ.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..artifact import Artifact, load_artifact, save_artifact
from ..engine.trainer import check_same_settings, check_seed, resolve_device, seed_everything
from ..sets import ConstraintSet
from ..task import Task
from .genotype import Genotype
from .ops import pruned_modules
from .space import DEFAULT_OPS, SearchNetwork

__all__ = ["SearchConfig", "SearchResult", "search", "task_classes"]


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
           checkpoint: str | Path | None = None, resume: bool = False,
           settings: dict[str, Any] | None = None) -> tuple[SearchNetwork, SearchResult]:
    """Search cells for `task` (a Task with a map-style training set) with the pruned candidates
    on `sparsity`; returns the supernet and the result (genotype, per-epoch α and metrics)."""
    from tqdm.auto import tqdm

    config = config or SearchConfig()
    start = time.perf_counter()
    device = resolve_device(config.device)
    x0 = task.example_input()
    torch.manual_seed(config.seed)
    net = SearchNetwork(sparsity, config.channels, config.layers, config.steps,
                        num_classes=task_classes(task), in_channels=x0.shape[1], ops=config.ops,
                        prune_all=config.prune_all).to(device)
    weights = net.weights()
    w_opt = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)
    a_opt = torch.optim.Adam(net.alphas(), lr=config.arch_lr, betas=(0.5, 0.999),
                             weight_decay=config.arch_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(1, config.epochs), eta_min=config.lr / 50)
    fingerprint = {**config.fingerprint(), "sparsity": repr(sparsity), **(settings or {})}
    history: list[dict[str, Any]] = []
    epoch = 0
    if resume and checkpoint and Path(checkpoint).is_file():
        saved = load_artifact(checkpoint, map_location=device)
        check_same_settings(saved.settings, fingerprint, checkpoint)
        net.load_state_dict(saved.state_dict)
        state = saved.phase or {}
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        sched.load_state_dict(state["sched"])
        history, epoch = list(state["history"]), int(state["epoch"])
    train_half, val_half = _halves(task, config.seed)
    penalized = list(pruned_modules(net).values())
    while epoch < config.epochs:
        seed_everything(config.seed * 1000 + epoch)
        loaders = [DataLoader(h, config.batch_size, shuffle=True, drop_last=len(h) > config.batch_size,
                              generator=torch.Generator().manual_seed(config.seed * 1000 + epoch + k))
                   for k, h in enumerate((train_half, val_half))]
        net.train()
        sums = {"train_loss": 0.0, "val_loss": 0.0, "val_correct": 0, "val_seen": 0}
        steps = 0
        bar = tqdm(zip(*loaders, strict=False), total=min(map(len, loaders)), leave=False,
                   desc=f"search {epoch + 1}/{config.epochs}", disable=not config.progress)
        for (xt, yt), (xv, yv) in bar:
            xt, yt, xv, yv = xt.to(device), yt.to(device), xv.to(device), yv.to(device)
            a_opt.zero_grad(set_to_none=True)
            logits = net(xv)
            val_loss = F.cross_entropy(logits, yv)
            val_loss.backward()
            a_opt.step()
            w_opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xt), yt)
            reg = sum(m.penalty() for m in penalized) if penalized and config.penalty else 0.0
            (loss + config.penalty * reg).backward()
            nn.utils.clip_grad_norm_(weights, 5.0)
            for a in net.alphas():
                a.grad = None  # α moves only on the validation half
            w_opt.step()
            steps += 1
            sums["train_loss"] += float(loss.detach())
            sums["val_loss"] += float(val_loss.detach())
            sums["val_correct"] += int((logits.argmax(1) == yv).sum())
            sums["val_seen"] += len(yv)
        sched.step()
        epoch += 1
        genotype = net.genotype()
        history.append({
            "epoch": epoch, "train_loss": sums["train_loss"] / max(1, steps),
            "search_val_loss": sums["val_loss"] / max(1, steps),
            "search_val_accuracy": sums["val_correct"] / max(1, sums["val_seen"]),
            "alpha_normal": F.softmax(net.alpha_normal, -1).tolist(),
            "alpha_reduce": F.softmax(net.alpha_reduce, -1).tolist(),
            "genotype": genotype.to_dict()})
        if checkpoint:
            save_artifact(Artifact.of(net, phase={"epoch": epoch, "w_opt": w_opt.state_dict(),
                                                  "a_opt": a_opt.state_dict(), "sched": sched.state_dict(),
                                                  "history": history},
                                      provenance={"settings": fingerprint}), checkpoint)
        if config.progress:
            tqdm.write(f"search {epoch}/{config.epochs}  loss {history[-1]['train_loss']:.4f}  "
                       f"search-val accuracy {100 * history[-1]['search_val_accuracy']:.2f}%")
    return net, SearchResult(net.genotype(), history, time.perf_counter() - start)


def task_classes(task: Task) -> int:
    """The task's class count (its dataset info, else the output width of its model)."""
    info = getattr(task, "info", None)
    if isinstance(info, dict) and "num_classes" in info:
        return int(info["num_classes"])
    with torch.no_grad():
        return int(task.build_model()(task.example_input()).shape[-1])
