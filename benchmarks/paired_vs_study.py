#!/usr/bin/env python
"""Paired comparison of solver_study runs of SLR variants with a main study sharing its dense models.

    python benchmarks/paired_vs_study.py docs/results/solver_study docs/results/slr_guards/holdout ...

For each variant folder (a `solver_study.py --methods zero,slr_default --slr JSON` run): its SLR
default against the main study's SLR default and validation-tuned ADMM, per budget and ratio,
mean ± std and paired per-seed differences with a 95% t-interval; it also checks that the dense
models are shared (identical zero-epoch rows).  Prints Markdown.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def rows_of(folder: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "results.jsonl").read_text().splitlines()]


def per_seed(rows: list[dict], method: str, ratio: float, epochs: int) -> dict[int, float]:
    return {r["seed"]: r["test_bn"] for r in rows if r["method"] == method and r["ratio"] == ratio
            and r["epochs"] == epochs}


def tuned(rows: list[dict], method: str, ratio: float, epochs: int) -> dict[int, float]:
    """Per-seed test accuracy of the configuration with the best mean validation accuracy."""
    configs: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] == method and r["ratio"] == ratio and r["epochs"] == epochs:
            configs.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r)
    best = max(configs.values(), key=lambda rs: statistics.mean(r["val_bn"] for r in rs))
    return {r["seed"]: r["test_bn"] for r in best}


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def paired(a: dict[int, float], b: dict[int, float]) -> str:
    d = [a[s] - b[s] for s in a if s in b]
    mean = statistics.mean(d)
    half = T95.get(len(d), 2.0) * statistics.stdev(d) / math.sqrt(len(d))
    return f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"


def main() -> None:
    base = rows_of(sys.argv[1])
    zero = {(r["seed"], r["ratio"]): r["test_bn"] for r in base if r["method"] == "zero"}
    lines = []
    for folder in sys.argv[2:]:
        rows = rows_of(folder)
        shared = all(abs(zero[(r["seed"], r["ratio"])] - r["test_bn"]) < 1e-12 for r in rows if r["method"] == "zero")
        lines += [f"### {Path(folder).name} (dense models identical to the main study's: {shared})",
                  "| budget | ratio | variant (SLR default + it) | SLR default | ADMM tuned | variant − SLR default "
                  "| variant − ADMM tuned |", "|---|---|---|---|---|---|---|"]
        for epochs in sorted({r["epochs"] for r in rows if r["method"] == "slr_default"}):
            for ratio in sorted({r["ratio"] for r in rows if r["method"] == "slr_default"}):
                v = per_seed(rows, "slr_default", ratio, epochs)
                d, a = per_seed(base, "slr_default", ratio, epochs), tuned(base, "admm", ratio, epochs)
                lines.append(f"| {epochs} | {ratio} | {spread(list(v.values()))} | {spread(list(d.values()))} | "
                             f"{spread(list(a.values()))} | {paired(v, d)} | {paired(v, a)} |")
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
