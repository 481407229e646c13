"""slr_prune: constrained weight pruning for PyTorch (SLR, ADMM, magnitude)."""

from .adapters.loaders import LoaderTask
from .bn import recalibrate_bn
from .engine import PruneResult, TrainConfig, Trainer, prune
from .errors import SpecError, StateError
from .evaluate import hard_prune_metrics, sparsity_sweep
from .masks import Masks, sparsity_report, squash
from .probe import probe_closure
from .sets import (
    NM,
    Channel,
    Column,
    ConstraintSet,
    Filter,
    Pattern,
    Projector,
    Unstructured,
)
from .solvers import ADMM, SLR, SOLVERS, ADMMConfig, Magnitude, MagnitudeConfig, SLRConfig, Solver, solver_config
from .spec import PruneSpec, Rule

__version__ = "0.1.0"

__all__ = [
    "PruneSpec", "Rule", "ConstraintSet", "Unstructured", "Filter", "Channel", "Column", "NM",
    "Pattern", "Projector", "SLR", "ADMM", "Magnitude", "Solver", "SOLVERS", "SLRConfig", "ADMMConfig",
    "MagnitudeConfig", "solver_config", "Masks", "squash",
    "sparsity_report", "probe_closure", "SpecError", "StateError", "prune", "PruneResult", "TrainConfig",
    "Trainer", "hard_prune_metrics", "sparsity_sweep", "recalibrate_bn", "LoaderTask",
]
