"""The compressed file (slr_prune/compressed.py, export/compressed.py): really smaller, exact on
reload, read by every command."""

from __future__ import annotations

import io
import re

import pytest
import torch
from fixtures import assert_flips_are_caught

from slr_prune.artifact import load_artifact
from slr_prune.cli import main
from slr_prune.compressed import compressed_bytes, decode, dense_bytes, encode, write_compressed
from slr_prune.export import load_compressed
from slr_prune.models import create_model
from slr_prune.sets import NM, Unstructured


def pruned_resnet20(form) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", 10, 32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and (form.form != "nm" or p.shape[1] % form.m == 0):
                p.mul_(form.mask(p))
    return model


@pytest.mark.parametrize("form,dtype,bound", [(Unstructured(0.9), "float32", 0.15),
                                              (Unstructured(0.9), "float16", 0.08), (NM(2, 4), "float32", 0.6)])
def test_the_file_is_really_smaller(form, dtype, bound):
    """The issue's bounds, against the dense float32 state dict as torch.save writes it."""
    model = pruned_resnet20(form)
    ratio = compressed_bytes(model.state_dict(), dtype) / dense_bytes(model.state_dict())
    print(f"{form.label} {dtype}: {ratio:.4f}x")
    assert ratio <= bound


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_decoding_gives_back_the_state_dict(dtype):
    state = pruned_resnet20(Unstructured(0.8)).state_dict()
    back = decode(*encode(state, dtype))
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        expected = t.to(getattr(torch, dtype)).to(t.dtype) if t.is_floating_point() else t
        assert torch.equal(back[name], expected), name


def test_export_reloads_exactly_and_every_command_reads_it(tmp_path, capsys):
    d, p = tmp_path / "d", tmp_path / "p"
    assert main(["train", "--epochs", "1", "--no-progress", "--out", str(d)]) == 0
    assert main(["prune", "--checkpoint", str(d / "dense.pt"), "--method", "magnitude", "--ratio", "0.9",
                 "--finetune-epochs", "0", "--no-progress", "--out", str(p)]) == 0
    for dtype in ("float32", "float16"):
        assert main(["export", "--checkpoint", str(p / "pruned.pt"), "--format", "compressed", "--dtype", dtype,
                     "--out", str(tmp_path / "x"), "--name", dtype]) == 0
        out = capsys.readouterr().out
        assert "— match" in out and "x the dense model's state dict" in out
    path = tmp_path / "x" / "float32.safetensors"
    model = load_compressed(path)  # the task recorded in the file builds the model
    pruned = load_artifact(p / "pruned.pt").build(create_model("digits_cnn", 10, 8, 1))
    for name, t in pruned.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    assert main(["evaluate", "--checkpoint", str(path)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["finetune", "--checkpoint", str(path), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "ft")]) == 0
    tuned = load_artifact(tmp_path / "ft" / "finetuned.pt")
    for name, t in pruned.state_dict().items():
        if t.dim() > 1:
            assert torch.all(tuned.state_dict[name][t == 0] == 0), name  # its zeros stayed zero
    assert main(["export", "--checkpoint", str(p / "pruned.pt"), "--format", "onnx", "--dtype", "float16",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--dtype applies to --format compressed" in capsys.readouterr().err


def test_a_damaged_compressed_file_is_named(tmp_path):
    model = pruned_resnet20(Unstructured(0.9))
    path = write_compressed(tmp_path / "m.safetensors", model.state_dict())
    size = len(path.read_bytes())
    header = int.from_bytes(path.read_bytes()[:8], "little") + 8
    assert_flips_are_caught(path, (header, header + (size - header) // 2, size - 1), "damaged compressed file")
    assert set(load_artifact(path).state_dict) == set(model.state_dict())


def test_the_report_gives_nominal_and_measured_sizes(tmp_path, capsys):
    assert main(["prune", "--method", "magnitude", "--ratio", "0.9", "--epochs", "0", "--finetune-epochs", "0",
                 "--no-progress", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "non-zeros (nominal)" in out and "compressed file (x dense)" in out
    row = next(line for line in out.splitlines() if line.startswith("magnitude"))
    assert re.search(r"\d+\.\d% \(\d+\.\d\dx\) +\d+\.\d KB \(0\.1\d\dx\)", row), row
    costs = load_artifact(tmp_path / "p" / "pruned.pt").result["costs"]
    buffer = io.BytesIO()
    torch.save({k: v for k, v in create_model("digits_cnn", 10, 8, 1).state_dict().items()}, buffer)
    assert costs["before"]["bytes"]["dense"] == buffer.tell()  # measured: torch.save of the dense weights
    assert costs["after"]["bytes"]["compressed"] < 0.2 * costs["before"]["bytes"]["dense"]
