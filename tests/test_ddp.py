import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def run_two_processes(worker: str, out: Path) -> None:
    """`worker` (a file next to this one) under torchrun with 2 CPU processes, writing into `out`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(Path(__file__).with_name(worker)), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_keeps_solver_state_identical(tmp_path):
    run_two_processes("ddp_worker.py", tmp_path)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["world"] == b["world"] == 2
    assert a["batches"] == b["batches"] == 1347 // 2 // 64  # each rank sees half of the data
    for key in ("Z", "Lam", "W_prev", "Z_prev"):
        for name, t in a["solver"]["tensors"][key].items():
            assert torch.equal(t, b["solver"]["tensors"][key][name]), (key, name)
    assert a["solver"]["scalars"] == b["solver"]["scalars"]
    assert a["steps_per_epoch"] == 4  # SLR's default: 4 iterations per epoch, evenly spread
    assert a["solver"]["history"] == b["solver"]["history"] and len(a["solver"]["history"]) == 2 * 4
    # Parameters are identical; batch-norm running statistics are per rank by DDP's design during
    # training, and identical after a recalibration (rank 0's, broadcast), even from other batches.
    for name, t in a["params"].items():
        assert torch.equal(t, b["params"][name]), name
    for name, t in a["bn"].items():
        assert torch.equal(t, b["bn"][name]), name
    # every rank evaluated the same model each epoch (rank 0's BatchNorm statistics): same metrics
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["accuracy"] == rb["accuracy"] and ra["val_loss"] == rb["val_loss"]


@pytest.mark.slow
def test_two_process_layerwise_reconstruction_sums_h_and_agrees(tmp_path):
    """Each rank calibrates on its half of the batches, H is summed: both ranks solve the problem of
    all the batches (H as in one process, up to summation order) and end with identical weights."""
    run_two_processes("ddp_layerwise_worker.py", tmp_path)
    a, b = (torch.load(tmp_path / f"layerwise_rank{r}.pt", weights_only=True) for r in (0, 1))
    single = a["single"]
    assert a["inputs"] == b["inputs"] == single["inputs"]  # every rank counted all the batches' inputs
    assert torch.equal(a["H"], b["H"]) and torch.allclose(a["H"], a["single_H"], rtol=1e-10, atol=0)
    for name, t in a["params"].items():
        assert torch.equal(t, b["params"][name]), name
    first = next(iter(a["masks"]))  # the same problem: the same solution (later layers see rounding)
    assert torch.equal(a["masks"][first], single["masks"][first])
    assert torch.allclose(a["params"][first], single["params"][first], atol=1e-4)
    for name, m in a["masks"].items():
        assert torch.equal(m, b["masks"][name]) and int(m.sum()) == int(single["masks"][name].sum()), name
