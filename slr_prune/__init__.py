"""slr_prune: constrained weight pruning for PyTorch (SLR, ADMM, magnitude).

The public names below load on first use (PEP 562), so `import slr_prune` and the command line's
first steps (its run-folder lock) do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_FROM = {
    ".adapters.loaders": ("LoaderTask",),
    ".bn": ("recalibrate_bn",),
    ".engine": ("PruneResult", "TrainConfig", "Trainer", "prune"),
    ".errors": ("SpecError", "StateError"),
    ".evaluate": ("hard_prune_metrics", "sparsity_sweep"),
    ".masks": ("Masks", "sparsity_report", "squash"),
    ".probe": ("probe_closure",),
    ".sets": ("NM", "Channel", "Column", "ConstraintSet", "Filter", "Pattern", "Projector", "Unstructured"),
    ".solvers": ("ADMM", "SLR", "SOLVERS", "ADMMConfig", "Magnitude", "MagnitudeConfig", "SLRConfig", "Solver",
                 "solver_config"),
    ".spec": ("PruneSpec", "Rule"),
}
_MODULE_OF = {name: module for module, names in _FROM.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'slr_prune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
