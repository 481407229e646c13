import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import write_cifar10

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
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


@pytest.mark.slow
def test_solver_study_runs_end_to_end_and_reports_the_zero_epoch_baseline(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "solver_study.py"), "--seeds", "2", "--ratios", "0.9",
           "--budgets", "1", "--methods", "zero,admm,slr_default", "--grid", "default", "--dense-epochs", "1",
           "--jobs", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| one-shot magnitude (0 epochs) |" in proc.stdout and "| SLR (default, untuned) |" in proc.stdout
    summary = json.loads((tmp_path / "study.json").read_text())["summary"]["cells"][0]["methods"]
    assert set(summary) == {"zero", "admm", "slr_default"}
    assert len(summary["admm"]["test_bn"]["test"]) == 2  # one value per seed
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "study.md").is_file()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6  # 2 seeds × (zero + admm + slr_default); a rerun skips them
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks")
    assert proc.returncode == 0 and "0 to do" in proc.stderr


def test_tusimple_table_shows_fp_and_fn_at_every_stage():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tusimple_benchmark", ROOT / "benchmarks" / "tusimple.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lane = {"accuracy": 0.9, "fp": 0.25, "fn": 0.125}
    row = {"method": "slr", "sparsity": 0.7, "compression": 3.31, "epochs": 4, "finetune_epochs": 2,
           "hard_prune": lane, "hard_prune_bn": {**lane, "fp": 0.5}, "finetuned": None}
    header, _, dense, slr = bench.table(lane, [row], "UFLD resnet18").splitlines()
    assert header.count("FP % | FN %") == 3
    assert dense == "| UFLD resnet18 (dense) | 0 | 1.00x | - | 90.00 | 25.00 | 12.50 | - | - | - | - | - | - |"
    assert slr == "| SLR | 70.00 | 3.31x | 4+2 | 90.00 | 25.00 | 12.50 | 90.00 | 50.00 | 12.50 | - | - | - |"
