"""Runs you can trust: nothing loaded from a user's file runs code; bad input is one clear line."""

import os
import pickle

import numpy as np
import pytest
import torch
from fixtures import write_cifar10

from slr_prune.cli import main


class _Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_crafted_cifar_batch_does_not_run(capsys, tmp_path):
    root = write_cifar10(tmp_path / "c")
    marker = tmp_path / "ran"
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f)
    code, _, err = _run(capsys, "train", "--dataset", "cifar10", "--data", root, "--epochs", 1,
                        "--out", tmp_path / "r")
    assert code == 2 and not marker.exists()
    assert "data_batch_1' is not a CIFAR-10 python batch" in err and "posix.system" in err


def test_a_crafted_yolo_checkpoint_does_not_run(capsys, tmp_path):
    pytest.importorskip("ultralytics")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, evil)
    code, _, err = _run(capsys, "describe", "--task", "yolo", "--model", evil, "--ratio", 0.5)
    assert code == 2 and not marker.exists()
    assert "evil.pt' could not be read" in err and "--trust-checkpoint" in err


@pytest.mark.parametrize(("change", "message"), [
    ({"data": np.zeros((4, 3072), dtype=np.float32)}, "'data' must be an N×3072 uint8 array"),
    ({"data": np.zeros((0, 3072), dtype=np.uint8), "labels": []}, "holds no images"),
    ({"labels": [0, 1, 2, 12]}, "labels must be integers in 0..9"),
    ({"labels": [0, 1]}, "4 images but labels do not match"),
])
def test_bad_cifar_batches_name_the_file(capsys, tmp_path, change, message):
    root = write_cifar10(tmp_path / "c", per_batch=4)
    entry = {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3], **change}
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(entry, f)
    code, _, err = _run(capsys, "train", "--dataset", "cifar10", "--data", root, "--epochs", 1,
                        "--out", tmp_path / "r")
    assert code == 2 and "test_batch" in err and message in err


# ---- resume cannot mix runs ------------------------------------------------------------------
PRUNE = ["prune", "--method", "admm", "--ratio", "0.8", "--epochs", "2", "--finetune-epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense")
    assert main(["train", "--epochs", "1", "--no-progress", "--out", str(folder)]) == 0
    return folder / "dense.pt"


def test_resume_with_other_settings_refuses(capsys, tmp_path, dense):
    out = tmp_path / "p"
    assert main([*PRUNE, "--checkpoint", str(dense), "--out", str(out), "--keep-checkpoints"]) == 0
    (out / "pruned.pt").unlink()  # as if the run had stopped after the solver phase
    capsys.readouterr()
    for change, named in ((["--ratio", "0.5"], "spec.rules"), (["--epochs", "3"], "epochs: 2 → 3"),
                          (["--lr", "0.05"], "lr: 0.01 → 0.05"), (["--rho", "0.5"], "solver_options.rho: 0.1 → 0.5"),
                          (["--seed", "1"], "seed: 0 → 1")):
        argv = [*PRUNE, "--checkpoint", str(dense), "--out", str(out), "--resume", *change]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "was written with other settings" in err and named in err, (change, err)
    assert not (out / "pruned.pt").exists()  # nothing was written by the refused runs


def test_finished_run_resumed(capsys, tmp_path, dense):
    out = tmp_path / "p"
    assert main([*PRUNE, "--checkpoint", str(dense), "--out", str(out)]) == 0
    first = torch.load(out / "pruned.pt", weights_only=True)
    capsys.readouterr()
    assert main([*PRUNE, "--checkpoint", str(dense), "--out", str(out), "--resume"]) == 0
    assert "is a finished run with these settings" in capsys.readouterr().out
    again = torch.load(out / "pruned.pt", weights_only=True)
    assert all(torch.equal(first["state_dict"][k], again["state_dict"][k]) for k in first["state_dict"])
    assert main([*PRUNE, "--checkpoint", str(dense), "--out", str(out), "--resume", "--epochs", "3"]) == 2
    assert "train.epochs: 2 → 3" in capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["train", "--epochs", "1", "--seed", "3", "--no-progress", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main([*PRUNE, "--checkpoint", str(other / "dense.pt"), "--out", str(out), "--resume"]) == 2
    assert "source_weights" in capsys.readouterr().err  # another dense model


@pytest.mark.parametrize(("key", "value", "message"), [
    ("rho", -5.0, "rho = -5.0 is not a finite float ≥ 0"),
    ("rho", 0.0, "rho = 0.0 must be positive"),
    ("s", float("nan"), "s = nan is not a finite float"),
    ("k", 1.5, "k = 1.5 is not a finite int"),
    ("M", 0.5, "has scalars"),
])
def test_solver_state_scalars_are_checked(key, value, message):
    from slr_prune import SLR, PruneSpec, StateError

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    solver = SLR(model, PruneSpec.uniform(0.5))
    state = solver.state_dict()
    state["scalars"][key] = value
    with pytest.raises(StateError, match=message.replace("(", r"\(")):
        SLR(model, PruneSpec.uniform(0.5)).load_state_dict(state)


def test_checkpoints_get_the_normal_file_mode_and_orphans_go(tmp_path):
    from slr_prune.artifact import save_atomic

    orphan = tmp_path / ".model.pt.abc123"
    orphan.write_bytes(b"half a checkpoint from a killed write")
    old = os.umask(0o022)
    try:
        path = save_atomic({"x": torch.ones(2)}, tmp_path / "model.pt")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert not orphan.exists() and torch.load(path, weights_only=True)["x"].sum() == 2


# ---- faults: a killed run resumes to the same result -------------------------------------------
def _cli(argv):
    """The command line and environment (one OMP thread) of `slr-prune argv` in a subprocess."""
    import sys

    return [sys.executable, "-m", "slr_prune.cli", *argv], {**os.environ, "OMP_NUM_THREADS": "1"}


def _run_to_completion(argv):
    """Run `slr-prune argv` to the end, however long it takes; fail with its stderr if it fails."""
    import subprocess

    cmd, env = _cli(argv)
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert done.returncode == 0, f"slr-prune {' '.join(argv)} failed:\n{done.stderr[-4000:]}"


def _kill_when(argv, path, hang_guard=900):
    """Start `slr-prune argv`, SIGKILL it as soon as `path` exists; True if it was killed mid-run.

    False if the run ended before writing `path`.  `hang_guard` seconds only stop a run that
    hangs (the test then fails saying so); correctness never depends on the run's speed.
    """
    import signal
    import subprocess
    import time

    cmd, env = _cli(argv)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    start = time.monotonic()
    while proc.poll() is None and not path.exists():
        if time.monotonic() - start > hang_guard:
            proc.kill()
            proc.wait()
            pytest.fail(f"slr-prune wrote no {path.name} in {hang_guard} s: the run hangs")
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["admm.pt", "finetune.pt"])
def test_a_killed_run_resumes_bit_identical(tmp_path, dense, phase):
    argv = ["prune", "--checkpoint", str(dense), "--method", "admm", "--ratio", "0.8", "--epochs", "3",
            "--finetune-epochs", "3", "--no-progress", "--keep-checkpoints", "--device", "cpu"]
    _run_to_completion([*argv, "--out", str(tmp_path / "whole")])  # same threads as below
    run = tmp_path / "killed"
    assert _kill_when([*argv, "--out", str(run)], run / phase)
    orphan = run / f".{phase}.killedwrite"  # what a write killed half-way leaves behind
    orphan.write_bytes(b"\x00partial")
    assert not (run / "pruned.pt").exists()
    _run_to_completion([*argv, "--out", str(run), "--resume"])
    a = torch.load(tmp_path / "whole" / "pruned.pt", weights_only=True)
    b = torch.load(run / "pruned.pt", weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["result"]["finetune"][-1]["accuracy"] == b["result"]["finetune"][-1]["accuracy"]
    assert not orphan.exists()


@pytest.mark.parametrize("line", ["0 0.5 nan 0.2 0.2", "0 0.5 0.5 -0.2 0.2"])
def test_yolo_labels_with_nan_or_negative_sizes_name_the_file(tmp_path, line):
    pytest.importorskip("ultralytics")
    from yolo_fixtures import small_dataset

    from slr_prune.adapters.yolo import YoloTask

    data = small_dataset(tmp_path / "d")
    label = sorted((tmp_path / "d" / "labels" / "val").glob("*.txt"))[0]
    label.write_text(line + "\n")
    with pytest.raises(ValueError, match=label.name):
        YoloTask("yolov3-tiny", data=data, image_size=64, batch_size=8)
