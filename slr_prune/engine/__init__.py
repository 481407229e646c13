"""Training engine: the loop, checkpoints, DDP glue and the one-call pruning workflow."""

from .checkpoint import load_checkpoint, save_atomic
from .pruning import PruneResult, prune
from .trainer import Hooks, SolverHooks, TrainConfig, Trainer, resolve_device

__all__ = ["Trainer", "TrainConfig", "Hooks", "SolverHooks", "resolve_device", "save_atomic", "load_checkpoint",
           "prune", "PruneResult"]
