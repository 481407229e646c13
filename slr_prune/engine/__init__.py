"""Training engine: the loop, DDP glue and the one-call pruning workflow."""

from ..artifact import Artifact, load_artifact, save_artifact
from .pruning import PruneResult, prune
from .trainer import Hooks, SolverHooks, TrainConfig, Trainer, resolve_device

__all__ = ["Trainer", "TrainConfig", "Hooks", "SolverHooks", "resolve_device", "Artifact", "save_artifact",
           "load_artifact", "prune", "PruneResult"]
