"""Console manners: no progress-bar frames in a log, one line per epoch in every case."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slr_prune.console import bars_wanted, progress_bar

ROOT = Path(__file__).parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_wanted(True)
    assert list(progress_bar(range(3), enabled=True, desc="x")) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""  # not a terminal: no frames at all
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert bars_wanted(True) and not bars_wanted(False)
    list(progress_bar(range(3), enabled=True, desc="x"))
    assert "\r" in sys.stderr.getvalue()


@pytest.mark.slow
def test_a_piped_training_run_writes_epoch_lines_and_no_frames(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "slr_prune.cli", "train", "--epochs", "1", "--device", "cpu",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout + proc.stderr
    assert "train 1/1  loss" in proc.stdout
