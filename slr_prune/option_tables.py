"""Markdown tables of every registry's entries and their options: docs/options.md is this output.

The tables are read from the registries, so an entry added anywhere (a new file plus its import)
is documented with its options, defaults and help without another edit.  Regenerate the file with
``python -m slr_prune.option_tables > docs/options.md``; a test checks it equals what the
registries render now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from .registry import Registry
from .spec import type_name

__all__ = ["registries", "render_table", "render_all"]

HEADER = """# Registered entries and their options

Generated from the registries by `python -m slr_prune.option_tables > docs/options.md`; do not edit
by hand.  Each table lists a registry's entries, what each is, its options (type, default, help)
and the traits that differ from the registry's defaults.  Options with help are also command-line
flags (dashes for underscores); the others are set from Python or a config.  Adding an entry is
one new file plus its import in its package's `__init__` (see api.md).
"""


def registries() -> list[tuple[str, Registry, frozenset[str]]]:
    """(heading, registry, option names not shown) for every registry, importing what fills them."""
    from . import adapters, engine  # noqa: F401  (register the built-in tasks and the layerwise solver)
    from .engine.allocation import ALLOCATIONS
    from .export import EXPORTERS
    from .layerwise.solvers import LAYER_SOLVERS
    from .models import MODELS
    from .search.space import OPS
    from .sets import FORMS
    from .solvers import SOLVERS
    from .structured.criteria import CRITERIA
    from .task import TASKS

    none: frozenset[str] = frozenset()
    return [("Solvers (`--method`)", SOLVERS, none),
            ("Layer solvers (`--layer-solver`)", LAYER_SOLVERS, none),
            ("Per-layer budgets (`--allocation`)", ALLOCATIONS, none),
            ("Structured criteria (`--criterion`)", CRITERIA, none),
            ("Sparsity forms (`--form`; own parameters by `--form-option` or a rule's `options`)", FORMS,
             frozenset({"ratio", "scope", "budget"})),
            ("Tasks (`--task`; options by `--task-option`)", TASKS, none),
            ("Models (`--model`)", MODELS, none),
            ("Export formats (`--format`)", EXPORTERS, none),
            ("Search operations", OPS, none)]


def render_table(registry: Registry, hidden: Collection[str] = ()) -> str:
    """One markdown table: a row per entry with its help, its options and its non-default traits."""
    rows = ["| name | what | options | traits |", "|---|---|---|---|"]
    for entry in registry.entries():
        options = [_option(f) for f in dataclasses.fields(entry.options) if f.name not in hidden]
        traits = [f"`{k}`: {_short(v)}" for k, v in entry.traits.items() if registry.defaults.get(k) != v]
        cells = [f"`{entry.name}`", entry.help, "<br>".join(options) or "—", "<br>".join(traits) or "—"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def render_all() -> str:
    """docs/options.md: the header and one section per registry."""
    parts = [HEADER]
    for heading, registry, hidden in registries():
        parts.append(f"## {heading}\n\n{render_table(registry, hidden)}")
    return "\n".join(parts)


def _option(f: dataclasses.Field) -> str:
    default = "required" if f.default is dataclasses.MISSING else _short(f.default)
    help_ = f.metadata.get("help", "")
    return f"`{f.name}`: {type_name(f.type)} = {default}" + (f" — {help_}" if help_ else "")


def _short(value: Any, limit: int = 48) -> str:
    """A value as table text: classes by name, long values cut."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, tuple) and value and all(isinstance(v, type) for v in value):
        return ", ".join(v.__name__ for v in value)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    print(render_all(), end="")
