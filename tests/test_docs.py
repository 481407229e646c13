import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


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
