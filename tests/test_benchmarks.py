import json
import subprocess
import sys
from pathlib import Path

from fixtures import write_cifar10

ROOT = Path(__file__).parents[1]


def test_cifar10_benchmark_runs_on_the_real_format(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=16)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cifar10.py"), "--data", str(tmp_path / "data"),
           "--model", "resnet20", "--ratios", "0.8", "--epochs", "1", "--dense-epochs", "1",
           "--finetune-epochs", "1", "--workers", "0", "--no-progress", "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| resnet20 | 0.8 | 5.0x |" in proc.stdout
    rows = json.loads((tmp_path / "out" / "table.json").read_text())["rows"]
    assert {"slr_hard", "admm_hard", "slr_epochs_to_target"} <= set(rows[0])
