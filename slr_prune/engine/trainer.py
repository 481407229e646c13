"""The training loop shared by dense training, SLR/ADMM training, masked fine-tuning and the search.

Per step: loss → backward → hooks' `after_backward` → optimizer step → hooks' `after_step`.  Per
epoch: the LR schedule (stepped once per epoch, with T_max in epochs), hooks' `epoch_end` (the
solver's `step(probe)` first, then the evaluation, then the caller's), an atomic checkpoint, then
hooks' `should_stop`.  A pruning solver is driven by `SolverHooks` (its gradient term, its
fix-up after each optimizer step and its `step()` cadence).  bf16 autocast and channels_last on
CUDA; DDP when launched by torchrun; each epoch reseeds from (seed, epoch) so a resumed run sees
the same data order and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..artifact import Artifact, load_artifact, save_artifact
from ..console import print_line, progress_bar
from ..errors import StateError
from ..probe import probe_closure
from ..solvers.base import Solver
from ..task import Task
from . import distributed as dist_utils

__all__ = ["TrainConfig", "Trainer", "Hooks", "SolverHooks", "Evaluation", "resolve_device", "seed_everything"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training phase (configs as data: YAML/CLI map onto these)."""

    epochs: int = 10
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    step_epochs: int = 30
    gamma: float = 0.1
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    device: str = "auto"
    checkpoint: str | None = None
    resume: bool = False
    progress: bool = True
    probe_batches: int = 4
    log_every: int = 20
    log_epochs: bool = False
    """Print one line per epoch (metric, hard-prune metric, distance, ρ), with or without progress bars."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What else shapes the run (spec, method, solver options, task, source weights); stored in the
    checkpoint with the fields above, and a resume with other values is refused."""

    RUN_ONLY = ("device", "checkpoint", "resume", "progress", "log_every", "log_epochs")
    """Fields that do not change what a run computes (a resume may change them)."""

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint of this phase records: every field that shapes the result."""
        d = {k: v for k, v in asdict(self).items() if k not in self.RUN_ONLY and k != "settings"}
        return {**d, **self.settings}

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be ≥ 0, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        check_seed(self.seed)
        if not self.momentum >= 0:
            raise ValueError(f"momentum must be ≥ 0, got {self.momentum}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay}")


def check_seed(seed: int) -> int:
    """Seeds are integers in [0, 2³²) (what NumPy, Python and torch all accept)."""
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return seed


def check_same_settings(saved: dict[str, Any] | None, current: dict[str, Any], path: str | Path) -> None:
    """Refuse to continue `path` unless it was written with exactly `current` settings."""
    if saved is None:
        raise StateError(f"--resume: {str(path)!r} records no settings (an older slr_prune wrote it); it cannot be "
                         "checked, so it is not continued: start in a new --out folder")
    diff = settings_diff(saved, current)
    if diff:
        raise StateError(f"--resume: {str(path)!r} was written with other settings ({'; '.join(diff)}); refusing to "
                         "mix two runs: resume with the same settings, or use a new --out folder")


def settings_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: saved → current' for every key whose value differs (nested dicts by dotted key)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(unset)"), current.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in settings_diff(a, b)]
        elif _plain(a) != _plain(b):
            out.append(f"{key}: {_short(a)} → {_short(b)}")
    return out


def _plain(value: Any) -> Any:
    return list(map(_plain, value)) if isinstance(value, list | tuple) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_device(name: str = "auto") -> torch.device:
    """auto (CUDA when available, else CPU), cpu, cuda or cuda:N; anything else is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(name)):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N (or mps)")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_line(record: dict[str, Any], metric: str, desc: str, epochs: int) -> str:
    """One epoch as a line: loss, the validation metric, the hard-prune metric (with BatchNorm
    recalibration), the distance to the sparse set and ρ, when the record has them."""
    parts = [f"{desc} {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}"]
    if metric in record:
        parts.append(f"{metric} {100 * record[metric]:.2f}%")
    if f"hard_prune_{metric}" in record:
        bn = record.get(f"hard_prune_bn_{metric}")
        parts.append(f"hard-prune {100 * record[f'hard_prune_{metric}']:.2f}%"
                     + (f" (BN recal. {100 * bn:.2f}%)" if bn is not None else ""))
    if "distance" in record:
        parts.append(f"distance {record['distance']:.4f}")
    rho = (record.get("solver") or {}).get("rho")
    if rho is not None:
        parts.append(f"ρ {rho:.3g}")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


class Hooks:
    """Extension points of `Trainer.fit` (no-op defaults: override what you need).

    Hooks run in list order; a trainer's own come first: its solver's, then the evaluation.
    """

    def fit_start(self, trainer: Trainer) -> None:
        """Before the checkpoint is resumed and the first epoch runs."""

    def after_backward(self, trainer: Trainer) -> None:
        """After `loss.backward()`, before the optimizer step (e.g. add a penalty gradient)."""

    def after_step(self, trainer: Trainer, step: int) -> None:
        """After the `step`-th optimizer step of the epoch (from 1), gradients already cleared."""

    def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, Any] | None:
        """After the epoch's LR step, before its checkpoint; returns entries for its record."""
        return None

    def should_stop(self, trainer: Trainer) -> bool:
        """After the epoch's checkpoint: True ends `fit()` early (raise to interrupt the run)."""
        return False


class SolverHooks(Hooks):
    """Drives a pruning solver: its gradient term, its post-step fix-up and its `step()` cadence."""

    def __init__(self, solver: Solver):
        self.solver = solver
        self.record: dict[str, Any] = {}
        self.probe: Callable[[], float] | None = None

    def fit_start(self, trainer: Trainer) -> None:
        self.solver.begin(trainer.config.epochs, len(trainer.task.train_loader(trainer.sampler)))
        self.probe = self._probe(trainer)

    def after_backward(self, trainer: Trainer) -> None:
        self.solver.add_penalty_grad_()

    def after_step(self, trainer: Trainer, step: int) -> None:
        self.solver.after_optimizer_step_()
        if self.solver.due(step):
            self.record = self.solver.step(self.probe)

    def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, Any]:
        if not self.solver.steps_within_epoch:
            self.record = self.solver.step(self.probe)
        return {"solver": self.record}

    @staticmethod
    def _probe(trainer: Trainer) -> Callable[[], float]:
        """The loss on fixed probe batches, averaged over ranks (SLR's surrogate conditions)."""
        task, model, device = trainer.task, trainer.model, trainer.device
        batches = task.probe_batches(trainer.config.probe_batches, seed=trainer.config.seed)
        closure = probe_closure(model, batches, batch_loss=lambda b: task.loss(model, b, device))
        return lambda: dist_utils.all_reduce_mean(closure(), device)


class Evaluation(Hooks):
    """The task's validation metrics in every epoch's record (rank 0's BatchNorm statistics under DDP)."""

    def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, float]:
        if trainer.distributed:
            dist_utils.broadcast_buffers(trainer.model)
        return trainer.task.evaluate(trainer.model, trainer.device)


class Trainer:
    """Runs `config.epochs` epochs of `task` on `model`, optionally driving a pruning `solver`.

    `hooks` run after the trainer's own (the solver's, then the evaluation): they add entries to
    each epoch's record (e.g. the hard-prune metric), act between steps or stop the run.
    """

    def __init__(self, task: Task, model: nn.Module, config: TrainConfig, solver: Solver | None = None,
                 hooks: Sequence[Hooks] = (), desc: str = "train"):
        self.task, self.config, self.solver, self.desc = task, config, solver, desc
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        if self.device.type == "cuda" and config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if solver is not None:
            solver.to(self.device)
        self.distributed = dist_utils.init_from_env(self.device)
        self.sampler = None
        self.net: nn.Module = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            from torch.utils.data.distributed import DistributedSampler

            self.sampler = DistributedSampler(task.train_dataset(), shuffle=True, seed=config.seed)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.hooks: list[Hooks] = [*self._own_hooks(), *hooks]
        self.history: list[dict[str, Any]] = []
        self.epoch = 0

    def _own_hooks(self) -> list[Hooks]:
        """The solver's hooks (when it has one) and the per-epoch evaluation."""
        return [*([SolverHooks(self.solver)] if self.solver is not None else []), Evaluation()]

    # ---- set-up -------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                               nesterov=c.nesterov and c.momentum > 0)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        c = self.config
        if c.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, c.epochs))
        if c.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, c.step_epochs, c.gamma)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)

    # ---- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The phase state a resume needs besides the model's weights."""
        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "solver": self.solver.state_dict() if self.solver is not None else None,
            "history": self.history,
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.solver is not None:
            if state.get("solver") is None:
                raise ValueError("the checkpoint holds no solver state; it is not from a pruning run")
            self.solver.load_state_dict(state["solver"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])

    def _maybe_resume(self) -> None:
        c = self.config
        if c.resume and c.checkpoint and Path(c.checkpoint).is_file():
            saved = load_artifact(c.checkpoint, map_location=self.device)
            check_same_settings(saved.settings, c.fingerprint(), c.checkpoint)
            if saved.phase is None:
                raise StateError(f"--resume: {c.checkpoint!r} holds no training phase state; it is not a "
                                 "phase checkpoint")
            self.model.load_state_dict(saved.state_dict)
            self.load_state_dict(saved.phase)

    def _save(self) -> None:
        if self.config.checkpoint and dist_utils.is_main():
            save_artifact(Artifact.of(self.model, self.task, phase=self.state_dict(),
                                      provenance={"settings": self.config.fingerprint()}), self.config.checkpoint)

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train until `config.epochs`; returns one record per epoch (resumed ones included)."""
        for hook in self.hooks:
            hook.fit_start(self)
        self._maybe_resume()
        while self.epoch < self.config.epochs:
            seed_everything(self.config.seed * 1000 + self.epoch)
            if self.sampler is not None:
                self.sampler.set_epoch(self.epoch)
            start = time.perf_counter()
            train_loss = self._train_epoch()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.epoch += 1
            record: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss, "lr": lr}
            for hook in self.hooks:
                record.update(hook.epoch_end(self, record) or {})
            record["seconds"] = time.perf_counter() - start
            self.history.append(record)
            self._save()
            if self.config.log_epochs and dist_utils.is_main():
                print_line(epoch_line(record, self.task.metric, self.desc, self.config.epochs))
            if any([hook.should_stop(self) for hook in self.hooks]):  # every hook is asked
                break
        return self.history

    def _batches(self) -> tuple[Iterable[Any], int]:
        """One epoch's training batches and their number."""
        loader = self.task.train_loader(self.sampler)
        return loader, len(loader)

    def _step(self, batch: Any) -> Tensor:
        """One optimizer step on `batch`; returns its (detached) training loss."""
        use_amp = self.config.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = self.task.loss(self.net, batch, self.device)
        loss.backward()
        for hook in self.hooks:
            hook.after_backward(self)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _train_epoch(self) -> float:
        c = self.config
        self.net.train()
        batches, n = self._batches()
        total, steps = torch.zeros((), device=self.device), 0
        bar = progress_bar(batches, total=n, desc=f"{self.desc} {self.epoch + 1}/{c.epochs}", leave=False,
                           enabled=c.progress and dist_utils.is_main())
        for batch in bar:
            loss = self._step(batch)
            total += loss.float()
            steps += 1
            for hook in self.hooks:
                hook.after_step(self, steps)
            if steps % c.log_every == 0:
                self._check_finite(float(loss), steps)
                bar.set_postfix(loss=f"{float(total) / steps:.4f}")
        mean = float(total) / max(1, steps)
        self._check_finite(mean, steps)
        return mean

    def _check_finite(self, value: float, step: int) -> None:
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training loss became {value} in epoch {self.epoch + 1} by step {step}; lower the "
                "learning rate (or rho), or check the data")
