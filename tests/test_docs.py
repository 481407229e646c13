import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_the_api_example_runs(tmp_path):
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hard-pruned, no retraining" in proc.stdout and "'nonzero': 922" in proc.stdout  # 4608 − round(0.8·4608)


def test_import_is_light():
    heavy = ("ultralytics", "cvxpy", "pycocotools", "torch_pruning", "sklearn", "matplotlib", "torchvision")
    code = f"import sys, slr_prune; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    (code,) = _python_blocks(ROOT / "README.md")
    script = tmp_path / "readme.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hard-pruned" in proc.stdout and "+ BatchNorm recalibrated" in proc.stdout


def test_every_python_snippet_compiles():
    for path in DOCS:
        for i, code in enumerate(_python_blocks(path)):
            compile(code, f"{path.name} block {i}", "exec")


def _command_lines(text: str) -> list[str]:
    """Lines that start with `slr-prune ` (continuations joined, comments cut)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip().startswith("slr-prune ")]


def test_every_documented_command_line_parses():
    """Each `slr-prune` line in README and docs names real commands, options and choices."""
    import shlex

    from slr_prune.cli import build_parser

    parser = build_parser()
    checked = 0
    for path in DOCS:
        for line in _command_lines(path.read_text()):
            argv = [a for a in shlex.split(line.replace("~", "/home/user"))[1:] if a not in ("\\",)]
            try:
                args = parser.parse_args(argv)
            except SystemExit as e:
                raise AssertionError(f"{path.name}: {line!r} does not parse") from e
            assert not str(getattr(args, "out", "")).endswith(".pt"), f"{path.name}: --out names a folder: {line!r}"
            checked += 1
    assert checked >= 10


def _run_api_block(tmp_path, marker: str) -> subprocess.CompletedProcess:
    """Run the one python block of docs/api.md that contains `marker`; it must exit 0."""
    (code,) = [b for b in _python_blocks(ROOT / "docs" / "api.md") if marker in b]
    script = tmp_path / "block.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_the_registry_example_runs(tmp_path):
    proc = _run_api_block(tmp_path, "register_solver")
    assert proc.stdout.strip().endswith("True")


def test_every_registered_option_is_documented():
    """Each flag generated from a solver or criterion config appears in the docs' option tables."""
    import dataclasses

    import slr_prune.engine  # noqa: F401  (registers the layerwise solver)
    from slr_prune.config import flag_name
    from slr_prune.solvers import SOLVERS
    from slr_prune.structured.criteria import CRITERIA

    text = "\n".join(path.read_text() for path in DOCS)
    missing = [f"{registry.kind} {entry.name}: --{flag_name(f)}" for registry in (SOLVERS, CRITERIA)
               for entry in registry.entries() for f in dataclasses.fields(entry.options)
               if f.metadata.get("help") and f"`--{flag_name(f)}`" not in text]
    assert not missing, missing


@pytest.mark.slow
def test_the_own_model_example_runs(tmp_path):
    proc = _run_api_block(tmp_path, "LoaderTask(")
    assert "sparsity 0.800" in proc.stdout and "within_tenth: dense" in proc.stdout
    assert "slr 4/4  loss" in proc.stdout and "\r" not in proc.stdout + proc.stderr  # epoch lines, no bar frames
