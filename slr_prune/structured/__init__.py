"""Structured pruning: filter criteria, physical removal through Torch-Pruning, pruning records.

Nothing here imports torch-pruning or cvxpy at import time; they load inside the functions
that use them.
"""

from .criteria import (
    CHIP,
    CRITERIA,
    Calibration,
    Criterion,
    LinearFilterEnsemble,
    NuclearNorm,
    SolverCriterion,
    WeightNorm,
    chip_scores,
    make_criterion,
    nuclear_scores,
    tp_importance,
)
from .reconstruction import LayerwiseChannels, channel_error_curves, reconstruct_channels
from .record import apply_record, load_pruned, save_pruned, structure_record
from .surgery import ChannelGraph, ChannelGroup, CostModel, SiteMasker, plan_from_scores
from .workflow import StructuredResult, structured_prune, torch_pruning_baseline

__all__ = [
    "ChannelGraph", "ChannelGroup", "CostModel", "SiteMasker", "plan_from_scores", "Calibration", "Criterion",
    "WeightNorm", "NuclearNorm", "CHIP", "LinearFilterEnsemble", "SolverCriterion", "CRITERIA", "make_criterion",
    "chip_scores", "nuclear_scores", "tp_importance", "save_pruned", "load_pruned", "structure_record",
    "apply_record", "structured_prune", "torch_pruning_baseline", "StructuredResult", "LayerwiseChannels",
    "reconstruct_channels", "channel_error_curves",
]
