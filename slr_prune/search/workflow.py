"""`search_prune()`: search → derive → train the derived network → prune it with any solver."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..engine import Hooks, PruneResult, TrainConfig, Trainer, prune
from ..metrics import cost_summary
from ..spec import PruneSpec
from ..task import Task
from .bilevel import SearchConfig, SearchResult, search, task_classes
from .genotype import Genotype, plot_genotype
from .space import DerivedNetwork

__all__ = ["SearchPruneResult", "search_prune", "derived_network"]


@dataclass
class SearchPruneResult:
    search: SearchResult
    dense: dict[str, float]
    pruned: PruneResult
    costs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"search": self.search.to_dict(), "dense": self.dense, "pruned": self.pruned.to_dict(),
                "costs": self.costs}


def derived_network(genotype: Genotype, task: Task, config: SearchConfig) -> nn.Module:
    """The discrete network of `genotype` for `task`'s inputs and classes (plain layers)."""
    x = task.example_input()
    return DerivedNetwork(genotype, config.channels, config.layers, task_classes(task), x.shape[1])


def search_prune(task: Task, spec: PruneSpec, method: str = "slr", *, search_config: SearchConfig | None = None,
                 train: TrainConfig | None = None, prune_train: TrainConfig | None = None,
                 finetune: TrainConfig | None = None, solver_options: Any = None,
                 out_dir: str | Path | None = None, resume: bool = False, hooks: Sequence[Hooks] = (),
                 **prune_options: Any) -> SearchPruneResult:
    """Search cells whose pruned candidates sit on the spec's first rule's set, derive the
    network, train it dense (`train`), then prune it with `method` under `spec` (the `prune()`
    workflow with `prune_train` and `finetune`); writes genotype.json and cells.png to `out_dir`.
    `hooks` join every phase's Trainer (search, dense training, pruning, fine-tuning)."""
    config = search_config or SearchConfig()
    sparsity = spec.rules[0].make_set()
    out = Path(out_dir) if out_dir is not None else None
    _, found = search(task, sparsity, config, checkpoint=out / "search.pt" if out else None, resume=resume,
                      settings={"spec": spec.to_dict()}, hooks=hooks)
    if out is not None:
        found.genotype.save(out / "genotype.json")
        plot_genotype(found.genotype, out / "cells.png")
    model = derived_network(found.genotype, task, config)
    train = train or TrainConfig(epochs=10, lr=0.05)
    Trainer(task, model, replace(train, checkpoint=str(out / "train.pt") if out else None, resume=resume,
                                 settings={"genotype": found.genotype.to_dict()}), hooks=hooks, desc="derived").fit()
    dense = task.evaluate(model, next(model.parameters()).device)
    dense_model = copy.deepcopy(model)
    result = prune(model, task, spec, method, train=prune_train, finetune=finetune, solver_options=solver_options,
                   out_dir=out / "prune" if out else None, resume=resume, dense_metrics=dense, hooks=hooks,
                   **prune_options)
    x = task.example_input()
    costs = {"dense": _costs(cost_summary(dense_model, x)), "pruned": _costs(cost_summary(model, x))}
    return SearchPruneResult(found, dense, result, costs)


def _costs(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("params", "nonzero_params", "macs", "sparse_macs")}
