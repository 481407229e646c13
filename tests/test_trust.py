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
