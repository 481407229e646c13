"""Reports of pruning runs: a terminal/Markdown table, a JSON file and a PNG figure."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .engine.pruning import PruneResult
from .errors import SpecError
from .task import TASKS, Task

__all__ = ["results_table", "side_metrics", "write_json", "plot_hard_prune_curves", "hard_prune_figure",
           "describe_results", "allocation_figure", "plot_allocation"]


def side_metrics(task: Task | None = None) -> tuple[str, ...]:
    """The rates a table shows next to the metric: `task`'s `side_metrics`, or without a task those
    any registered task declares (results without them show none)."""
    if task is not None:
        return tuple(task.side_metrics)
    return tuple(dict.fromkeys(m for e in TASKS.entries() for m in getattr(e.builder, "side_metrics", ())))


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def results_table(results: Sequence[PruneResult], markdown: bool = False, task: Task | None = None) -> str:
    """One row per method: training epochs, dense, sparsity, hard-prune metric (no retraining) with
    the dense BatchNorm statistics and after recalibrating them, after fine-tuning; each metric
    followed by the `side_metrics(task)` the results have (FP and FN for lanes)."""
    if not results:
        return "(no results)"
    metric = results[0].metric
    side = [k for k in side_metrics(task) if k in results[0].dense]
    side_header = [f"{k.upper()} %" for k in side]

    def cells(values: dict[str, float] | None) -> list[str]:
        return [_pct(values.get(k) if values else None) for k in (metric, *side)]

    header = ["method", "epochs", f"dense {metric} %", *side_header, "sparsity %", f"hard-prune {metric} %",
              *side_header, "+ BN recal. %", *side_header, "fine-tune epochs", f"fine-tuned {metric} %",
              *side_header, "non-zeros (nominal)", "compressed file (x dense)", "seconds"]
    rows = []
    for r in results:
        name = r.method
        if r.projection is not None:  # a reconstructed final hard prune: the projection it replaced first
            stale, recal = r.projection["hard_prune"], r.projection["hard_prune_bn"]
            rows.append([f"{r.method}, projection", str(len(r.epochs)), *cells(r.dense), _pct(r.sparsity),
                         *cells(stale), *(cells(recal) if recal else ["no BN"] + ["-"] * len(side)),
                         "-", *cells(None), "-", "-", "-"])
            name = f"{r.method}, layer-wise {r.reconstruction['solver']}"
        rows.append([
            name, str(len(r.epochs)), *cells(r.dense), _pct(r.sparsity), *cells(r.hard_prune),
            *(cells(r.hard_prune_bn) if r.hard_prune_bn else ["no BN"] + ["-"] * len(side)),
            str(len(r.finetune)), *cells(r.finetuned),
            *_sizes(r.costs), f"{r.seconds:.1f}",
        ])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] +
                     [fmt.format(*row) for row in rows])


def _sizes(costs: dict[str, Any]) -> list[str]:
    """The nominal compression (parameters / non-zeros) and the measured compressed file against
    the dense checkpoint: the two figures side by side, so neither is mistaken for the other."""
    if not costs:
        return ["-", "-"]
    after, before = costs["after"], costs["before"]
    nominal = f"{100 / after['compression']:.1f}% ({after['compression']:.2f}x)"
    if "bytes" not in after:  # a report written before file sizes were measured
        return [nominal, "-"]
    size = after["bytes"]["compressed"]
    shown = f"{size / 1e6:.1f} MB" if size >= 1e7 else f"{size / 1e3:.1f} KB"
    return [nominal, f"{shown} ({size / before['bytes']['dense']:.3f}x)"]


def write_json(path: str | Path, data: Any) -> Path:
    from .atomic import write_text_atomic

    return write_text_atomic(json.dumps(data, indent=2, default=float), path)


def describe_results(results: Sequence[PruneResult], model: str | None = None) -> str:
    """What the results are: "model, 90% unstructured: slr, admm" (model, prune ratio, methods)."""
    budgets = list(dict.fromkeys(_budget(r) for r in results))
    methods = ", ".join(dict.fromkeys(r.method for r in results))
    head = ", ".join(x for x in (model, " / ".join(budgets)) if x)
    return f"{head}: {methods}" if head else methods


def _budget(result: PruneResult) -> str:
    """The spec's one form and ratio ("90% unstructured", "2:4", "80% filter global"), else the
    target sparsity (layer-wise ratios, allocations), else the sparsity reached."""
    kinds = {_rule_kind(dict(r)) for r in result.spec.get("rules", [])}
    if len(kinds) == 1:
        label, ratio, scope = kinds.pop()
        text = label if ratio is None else f"{100 * ratio:.4g}% {label}"
        return text + (" global" if scope == "global" else "")
    target = result.target_sparsity
    return f"{100 * target:.4g}% sparsity" if not math.isnan(target) else f"{100 * result.sparsity:.4g}% sparse"


def _rule_kind(rule: dict[str, Any]) -> tuple[str, float | None, str]:
    """(form label, ratio or None where the form fixes its density, scope) of a spec's rule."""
    from .spec import Rule

    try:
        parsed = Rule.from_dict(rule)
    except SpecError:  # a form no longer registered: its name as written
        return str(rule.get("form")), rule.get("ratio"), rule.get("scope", "layer")
    return parsed.make_set().label, parsed.ratio if parsed.has_ratio else None, parsed.scope


def hard_prune_figure(results: Sequence[PruneResult], title: str = "", model: str | None = None) -> Any:
    """The figure of `plot_hard_prune_curves` (a matplotlib Figure, not drawn on screen).

    The title's first line is `title` (default: what is plotted), the second names the model (when
    given), the prune ratio and the methods, taken from the results.  Epochs are whole numbers on
    the x axis; the y range spans the plotted values with a little margin, within [0, 100] %.
    """
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metric = results[0].metric if results else "metric"
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.subplots()
    colors = iter(rcParams["axes.prop_cycle"].by_key()["color"])
    values: list[float] = []
    for r in results:
        color = next(colors)
        for key, style, label in ((f"hard_prune_{r.metric}", ":", "hard-prune"),
                                  (f"hard_prune_bn_{r.metric}", "-", "hard-prune + BN recal.")):
            pts = [(e["epoch"], 100 * e[key]) for e in r.epochs if key in e]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, ls=style, color=color,
                        label=f"{r.method}: {label}")
                values += [y for _, y in pts]
        if not r.epochs:  # one-shot methods: the zero-epoch baseline, a line at the final value
            values.append(100 * r.best_hard_prune[r.metric])
            ax.axhline(values[-1], color=color, ls="--", lw=1,
                       label=f"{r.method}: 0 epochs" + (" + BN recal." if r.hard_prune_bn else ""))
    if results:
        values.append(100 * results[0].dense[metric])
        ax.axhline(values[-1], color="k", lw=1, ls=":", label="dense")
        lo, hi = min(values), max(values)
        margin = max(1.0, 0.08 * (hi - lo))
        ax.set_ylim(max(lo - margin, -1.0), min(hi + margin, 101.0))  # markers at 0 or 100 stay whole
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("solver training epoch")
    ax.set_ylabel(f"{metric} after hard pruning (%)")
    lines = (title or f"Hard-prune {metric} per solver epoch", describe_results(results, model))
    ax.set_title("\n".join(x for x in lines if x), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_hard_prune_curves(results: Sequence[PruneResult], path: str | Path, title: str = "",
                           model: str | None = None) -> Path:
    """Hard-prune metric (weights projected, no retraining) after each solver epoch, per method,
    saved as a PNG; `title` heads the derived title (see `hard_prune_figure`)."""
    from .atomic import write_atomic

    figure = hard_prune_figure(results, title, model)
    return write_atomic(lambda f: figure.savefig(f, format="png"), path)


def _allocated(results: Sequence[PruneResult]) -> list[PruneResult]:
    """The results whose allocation re-divided the budget among the layers."""
    from .engine.allocation import ALLOCATIONS

    return [r for r in results if r.allocation and r.allocation["rule"] in ALLOCATIONS
            and ALLOCATIONS.get(r.allocation["rule"]).traits["reallocates"]]


def allocation_figure(results: Sequence[PruneResult], model: str | None = None) -> Any:
    """Bars of the prune ratio per layer, one series per result with a non-uniform allocation
    (a matplotlib Figure, not drawn on screen)."""
    from matplotlib.figure import Figure

    shown = _allocated(results)
    layers = list(shown[0].allocation["ratios"]) if shown else []
    fig = Figure(figsize=(max(6.4, 0.35 * len(layers) + 2), 4.0), dpi=120)
    ax = fig.subplots()
    width = 0.8 / max(1, len(shown))
    for i, r in enumerate(shown):
        ratios = r.allocation["ratios"]
        ax.bar([x + i * width for x in range(len(layers))], [100 * ratios.get(n, 0.0) for n in layers], width,
               label=f"{r.method}: {r.allocation['rule']} ({100 * r.allocation['sparsity']:.3g}% overall)")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(layers))],
                  [n.removesuffix(".weight") for n in layers], rotation=90, fontsize=7)
    ax.set_ylabel("pruned (%)")
    ax.set_ylim(0, 100)
    ax.set_title("\n".join(x for x in ("Prune ratio per layer", describe_results(results, model)) if x), fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_kept_channels(counts: Mapping[str, int], sizes: Mapping[str, int], path: str | Path,
                       title: str) -> Path:
    """Bars of the kept share of every channel group of a structured prune, saved as a PNG."""
    from matplotlib.figure import Figure

    from .atomic import write_atomic

    groups = list(sizes)
    fig = Figure(figsize=(max(6.4, 0.35 * len(groups) + 2), 4.0), dpi=120)
    ax = fig.subplots()
    ax.bar(range(len(groups)), [100 * counts.get(g, sizes[g]) / sizes[g] for g in groups])
    ax.set_xticks(range(len(groups)), groups, rotation=90, fontsize=7)
    ax.set_ylabel("channels kept (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return write_atomic(lambda f: fig.savefig(f, format="png"), path)


def plot_allocation(results: Sequence[PruneResult], path: str | Path, model: str | None = None) -> Path | None:
    """`allocation_figure` saved as a PNG; None (nothing written) when no result re-allocated."""
    from .atomic import write_atomic

    if not _allocated(results):
        return None
    figure = allocation_figure(results, model)
    return write_atomic(lambda f: figure.savefig(f, format="png"), path)
