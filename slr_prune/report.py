"""Reports of pruning runs: a terminal/Markdown table, a JSON file and a PNG figure."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine.pruning import PruneResult

__all__ = ["results_table", "write_json", "plot_hard_prune_curves"]


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def results_table(results: Sequence[PruneResult], markdown: bool = False) -> str:
    """One row per method: training epochs, dense, sparsity, hard-prune metric (no retraining) with
    the dense BatchNorm statistics and after recalibrating them, after fine-tuning."""
    if not results:
        return "(no results)"
    metric = results[0].metric
    header = ["method", "epochs", f"dense {metric} %", "sparsity %", f"hard-prune {metric} %",
              "+ BN recal. %", "fine-tune epochs", f"fine-tuned {metric} %", "compression", "seconds"]
    rows = []
    for r in results:
        tuned = r.finetuned
        rows.append([
            r.method, str(len(r.epochs)), _pct(r.dense[metric]), _pct(r.sparsity), _pct(r.hard_prune[metric]),
            _pct(r.hard_prune_bn[metric]) if r.hard_prune_bn else "no BN",
            str(len(r.finetune)), _pct(tuned[metric] if tuned else None),
            f"{r.costs['after']['compression']:.2f}x" if r.costs else "-", f"{r.seconds:.1f}",
        ])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] +
                     [fmt.format(*row) for row in rows])


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float))
    return path


def plot_hard_prune_curves(results: Sequence[PruneResult], path: str | Path, title: str = "") -> Path:
    """Hard-prune metric (weights projected, no retraining) after each solver epoch, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for r in results:
        color = next(colors)
        for key, style, label in ((f"hard_prune_{r.metric}", ":", "hard-prune"),
                                  (f"hard_prune_bn_{r.metric}", "-", "hard-prune + BN recal.")):
            pts = [(e["epoch"], 100 * e[key]) for e in r.epochs if key in e]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, ls=style, color=color,
                        label=f"{r.method}: {label}")
        if not r.epochs:  # one-shot methods: the zero-epoch baseline, a line at the final value
            ax.axhline(100 * r.best_hard_prune[r.metric], color=color, ls="--", lw=1,
                       label=f"{r.method}: 0 epochs" + (" + BN recal." if r.hard_prune_bn else ""))
    if results:
        ax.axhline(100 * results[0].dense[results[0].metric], color="k", lw=1, ls=":", label="dense")
    ax.set_xlabel("solver training epoch")
    ax.set_ylabel(f"{results[0].metric if results else 'metric'} after hard pruning (%)")
    ax.set_title(title or "Hard-prune accuracy during SLR / ADMM training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
