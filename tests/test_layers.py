"""The layer rule of docs/design.md, checked on every runtime import in slr_prune/ (function-level
ones included; annotations under `if TYPE_CHECKING:` are not imports at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "slr_prune"

LAYERS = [
    {"errors", "utils", "registry", "config", "atomic"},
    {"task", "sets", "spec", "masks", "bn", "probe", "evaluate", "structure", "artifact", "compressed", "allocate",
     "solvers", "layerwise", "models", "data", "metrics", "console"},
    {"engine", "adapters"},
    {"structured", "search"},
    {"export", "report", "demo", "option_tables"},
    {"cli"},
]
SIBLINGS = [{"engine", "adapters"}]
"""Units of one layer that must not import each other."""


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def _runtime_imports(tree: ast.AST) -> list[ast.ImportFrom]:
    """Relative imports, skipping the bodies of `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level and id(n) not in skipped]


def _targets(path: Path, node: ast.ImportFrom) -> list[str]:
    package = list(path.relative_to(PACKAGE).parts[:-1])
    base = package[: len(package) - (node.level - 1)]
    module = [m for m in (node.module or "").split(".") if m]
    return [(base + module)[0]] if base + module else [a.name for a in node.names]


def test_every_unit_is_placed():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    placed = set().union(*LAYERS)
    assert units <= placed, f"place these in docs/design.md and LAYERS: {sorted(units - placed)}"


def test_imports_point_one_way():
    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        if unit not in layer:
            continue
        for node in _runtime_imports(ast.parse(path.read_text())):
            for target in _targets(path, node):
                if target not in layer or target == unit:
                    continue
                sideways = any({unit, target} <= pair for pair in SIBLINGS)
                if layer[target] > layer[unit] or sideways:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {unit} → {target}")
    assert not wrong, "imports against the layers of docs/design.md:\n" + "\n".join(wrong)
