"""Genotype: the discrete architecture a search found, as data (JSON) and as a picture.

Derivation follows DARTS: for every intermediate node keep the two incoming edges whose best
operation has the largest softmax weight, each with that operation.  Every candidate here is a
real operation (there is no "zero" op to exclude), so the edge's best op is the argmax.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["Genotype", "plot_genotype"]


@dataclass(frozen=True)
class Genotype:
    """Per cell type, two (operation, input node) genes per intermediate node; node 0 and 1 are
    the cell's inputs (the outputs of the cells two and one back)."""

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]
    steps: int
    ops: tuple[str, ...] = field(default=())

    @classmethod
    def derive(cls, normal: Tensor, reduce: Tensor, ops: Sequence[str], steps: int) -> Genotype:
        """The genotype of softmax(α) weights (edges × ops) of the normal and reduction cells."""
        return cls(_parse(normal, ops, steps), _parse(reduce, ops, steps), steps, tuple(ops))

    def to_dict(self) -> dict[str, Any]:
        return {"normal": [list(g) for g in self.normal], "reduce": [list(g) for g in self.reduce],
                "steps": self.steps, "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genotype:
        try:
            genes = {k: tuple((str(op), int(src)) for op, src in d[k]) for k in ("normal", "reduce")}
            steps = int(d["steps"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a genotype (normal, reduce: [[op, input], ...], steps): {e}") from e
        for kind, g in genes.items():
            if len(g) != 2 * steps or any(not 0 <= src < 2 + i // 2 for i, (_, src) in enumerate(g)):
                raise ValueError(f"genotype {kind}: needs 2 genes per node, each from an earlier node")
        return cls(genes["normal"], genes["reduce"], steps, tuple(d.get("ops", ())))

    def save(self, path: str | Path) -> Path:
        from ..atomic import write_text_atomic

        return write_text_atomic(json.dumps(self.to_dict(), indent=1), path)

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"genotype file {str(path)!r} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as e:
            raise ValueError(f"{str(path)!r}: {e}") from e


def _parse(weights: Tensor, ops: Sequence[str], steps: int) -> tuple[tuple[str, int], ...]:
    genes: list[tuple[str, int]] = []
    start = 0
    for i in range(steps):
        n = 2 + i
        block = weights[start:start + n]
        best_w, best_op = block.max(dim=1)
        top = sorted(range(n), key=lambda j: (-float(best_w[j]), j))[:2]
        genes += [(ops[int(best_op[j])], j) for j in sorted(top)]
        start += n
    return tuple(genes)


def plot_genotype(genotype: Genotype, path: str | Path, title: str = "") -> Path:
    """The two cells as graphs (inputs c_{k-2}, c_{k-1} on the left, nodes, output), one PNG."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.use("Agg", force=False)
    fig = Figure(figsize=(12, 4.5))
    for ax, (kind, genes) in zip(fig.subplots(1, 2), (("normal cell", genotype.normal),
                                                      ("reduction cell", genotype.reduce)), strict=True):
        steps = genotype.steps
        pos = {0: (0.0, 0.85), 1: (0.0, 0.15)}
        pos.update({2 + i: (1.2 * (1 + i), 0.7 if i % 2 == 0 else 0.3) for i in range(steps)})
        out = (1.2 * (steps + 1), 0.5)
        for i in range(steps):
            for op, src in genes[2 * i:2 * i + 2]:
                (x0, y0), (x1, y1) = pos[src], pos[2 + i]
                color = "tab:red" if op.startswith("pruned") else "tab:blue" if "conv" in op else "tab:gray"
                ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": color, "lw": 1.5})
                ax.text(x0 + 0.6 * (x1 - x0), y0 + 0.6 * (y1 - y0), op, fontsize=7, color=color, ha="center",
                        bbox={"fc": "white", "ec": "none", "alpha": 0.8})
            ax.annotate("", out, pos[2 + i], arrowprops={"arrowstyle": "->", "color": "0.7", "lw": 0.8})
        for node, (x, y) in pos.items():
            label = {0: "c_{k-2}", 1: "c_{k-1}"}.get(node, str(node - 2))
            ax.text(x, y, label, ha="center", va="center", fontsize=9,
                    bbox={"boxstyle": "circle" if node > 1 else "round", "fc": "lightyellow", "ec": "0.3"})
        ax.text(*out, "c_k", ha="center", va="center", bbox={"boxstyle": "round", "fc": "lightgreen", "ec": "0.3"})
        ax.set_xlim(-0.5, 1.2 * (steps + 1) + 0.5)
        ax.set_ylim(0, 1)
        ax.set_axis_off()
        ax.set_title(kind)
    fig.suptitle(title or "derived cells (red: pruned convolutions, blue: dense convolutions, grey: parameter-free)")
    from ..atomic import write_atomic

    return write_atomic(lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), path)
