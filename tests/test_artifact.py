"""The one file format (slr_prune/artifact.py): round trip, files of 0.1 and plain state dicts,
the integrity digest, and composition (structured removal → N:M → export) through it."""

from __future__ import annotations

import zipfile

import pytest
import torch
from fixtures import assert_flips_are_caught
from torch import nn

from slr_prune.artifact import FORMAT, Artifact, load_artifact, save_artifact
from slr_prune.cli import main
from slr_prune.errors import StateError
from slr_prune.models import create_model
from slr_prune.structure import structure_record


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_round_trip_is_plain_data_with_every_field(tmp_path):
    model = small()
    masks = {"0.weight": model[0].weight.detach() != 0}
    artifact = Artifact.of(model, masks=masks, phase={"epoch": 3, "history": [{"loss": 0.5}]},
                           provenance={"settings": {"ratio": 0.5}}, result={"accuracy": 0.9})
    path = save_artifact(artifact, tmp_path / "a.pt")
    payload = torch.load(path, weights_only=True)  # tensors and plain data only
    assert payload["format"] == FORMAT and len(payload["digest"]) == 64
    back = load_artifact(path)
    assert back.legacy is None and back.phase == {"epoch": 3, "history": [{"loss": 0.5}]}
    assert back.settings == {"ratio": 0.5} and back.result == {"accuracy": 0.9}
    assert all(torch.equal(back.state_dict[k], v) for k, v in model.state_dict().items())
    assert torch.equal(back.masks["0.weight"], masks["0.weight"])
    fresh = back.build(small())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_files_of_slr_prune_0_1_are_converted_on_read(tmp_path):
    model = small()
    state = model.state_dict()
    torch.save({"model": state, "task": {"model": "x"}, "task_name": "classification", "metrics": {"a": 1.0},
                "history": []}, tmp_path / "dense.pt")
    dense = load_artifact(tmp_path / "dense.pt")
    assert dense.legacy == "slr_prune 0.1" and dense.task_name == "classification"
    assert dense.task == {"model": "x"} and dense.result == {"metrics": {"a": 1.0}, "history": []}
    torch.save({"epoch": 2, "model": state, "optimizer": {"state": {}, "param_groups": []}, "settings": {"s": 1},
                "history": []}, tmp_path / "phase.pt")
    phase = load_artifact(tmp_path / "phase.pt")
    assert phase.phase["epoch"] == 2 and phase.settings == {"s": 1} and phase.result is None
    torch.save({"format": "slr_prune.structured/1", "state_dict": state, "record": structure_record(model),
                "extra": {"task_name": "classification", "task": {}, "result": {"r": 1}}}, tmp_path / "s.pt")
    old = load_artifact(tmp_path / "s.pt")
    assert old.structure == structure_record(model) and old.result == {"result": {"r": 1}}
    old.build(small())


@pytest.mark.parametrize("layout", ["plain", "nested_state_dict", "nested_model", "ddp"])
def test_plain_state_dicts_load(tmp_path, layout):
    state = small().state_dict()
    payload = {"plain": state, "nested_state_dict": {"state_dict": state, "epoch": 3},
               "nested_model": {"model": state, "optimizer": None},
               "ddp": {f"module.{k}": v for k, v in state.items()}}[layout]
    torch.save(payload, tmp_path / "w.pt")
    artifact = load_artifact(tmp_path / "w.pt")
    assert set(artifact.state_dict) == set(state) and artifact.structure is None
    artifact.build(small())


def test_a_mismatch_names_the_keys_and_foreign_files_are_refused(tmp_path):
    state = {k: v for k, v in small().state_dict().items() if k != "3.bias"}
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(StateError, match=r"1 missing keys: 3\.bias; 1 unexpected keys: head\.weight"):
        load_artifact(tmp_path / "w.pt").build(small())
    torch.save({"format": "slr_prune/9", "state_dict": {}}, tmp_path / "future.pt")
    with pytest.raises(StateError, match="format 'slr_prune/9'"):
        load_artifact(tmp_path / "future.pt")
    torch.save({"epochs": 3, "name": "x"}, tmp_path / "other.pt")
    with pytest.raises(StateError, match="neither a slr_prune file nor a state dict"):
        load_artifact(tmp_path / "other.pt")


def _tensor_records(path) -> list[tuple[int, int]]:
    """(offset, size) of every tensor's bytes in a torch.save zip file (stored uncompressed)."""
    out = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size:
                f.seek(info.header_offset + 26)
                name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
                out.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return out


def test_a_flipped_byte_in_any_tensor_is_detected(tmp_path):
    model = small()
    path = save_artifact(Artifact.of(model, masks={"0.weight": model[0].weight.detach() != 0},
                                     phase={"optimizer": {"m": torch.ones(5)}}), tmp_path / "a.pt")
    records = _tensor_records(path)
    assert len(records) == len(model.state_dict()) + 2
    offsets = sorted({at for offset, size in records for at in (offset, offset + size // 2, offset + size - 1)})
    assert_flips_are_caught(path, offsets, "failed its integrity check")
    load_artifact(path)


def test_structured_removal_then_n_m_then_export_compose(tmp_path, capsys):
    """Channels removed, then 2:4 on the smaller model, then an export: one artifact carries both."""
    s, p = tmp_path / "s", tmp_path / "p"
    assert main(["structured", "--model", "resnet20", "--criterion", "l1", "--flops-target", "0.5",
                 "--finetune-epochs", "0", "--no-latency", "--device", "cpu", "--out", str(s)]) == 0
    assert main(["prune", "--checkpoint", str(s / "pruned.pt"), "--method", "magnitude", "--form", "2:4",
                 "--finetune-epochs", "1", "--no-progress", "--bn-batches", "2", "--device", "cpu",
                 "--out", str(p)]) == 0
    capsys.readouterr()
    pruned = load_artifact(p / "pruned.pt")
    model = pruned.build(create_model("resnet20", 10, 8, 1))
    assert sum(t.numel() for t in model.parameters()) < 0.7 * sum(
        t.numel() for t in create_model("resnet20", 10, 8, 1).parameters())
    conv = model.layer1[0].conv1.weight.detach()
    assert conv.shape[0] < 16
    groups = conv.permute(0, 2, 3, 1).reshape(-1, 4)  # N:M groups run along the input channels
    assert int((groups != 0).sum(1).max()) <= 2 and pruned.masks
    code = main(["export", "--checkpoint", str(p / "pruned.pt"), "--format", "state_dict",
                 "--out", str(tmp_path / "x")])
    out = capsys.readouterr().out
    assert code == 0 and "exported structured model" in out and "— match" in out


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["torchvision", "timm_1000_classes", "ddp"])
def test_plain_state_dicts_prune_through_the_cli(tmp_path, capsys, layout):
    """A torchvision weights file, a timm-style dict under "state_dict" (with an ImageNet head on a
    3-class folder: the head's width is read from the file) and a DDP save prune with no conversion."""
    import torchvision
    from fixtures import write_image_folders

    data = write_image_folders(tmp_path / "imgs")
    state = torchvision.models.resnet18(num_classes=1000 if layout == "timm_1000_classes" else 3).state_dict()
    payload = {"torchvision": state, "timm_1000_classes": {"state_dict": state, "epoch": 90},
               "ddp": {f"module.{k}": v for k, v in state.items()}}[layout]
    torch.save(payload, tmp_path / "w.pth")
    assert main(["prune", "--model", "resnet18", "--dataset", "imagefolder", "--data", str(data), "--image-size", "96",
                 "--checkpoint", str(tmp_path / "w.pth"), "--method", "magnitude", "--ratio", "0.5", "--epochs", "0",
                 "--finetune-epochs", "0", "--bn-batches", "0", "--no-progress", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert ("1000-way head" in err) == (layout == "timm_1000_classes")
    pruned = load_artifact(tmp_path / "p" / "pruned.pt")
    assert pruned.state_dict["fc.weight"].shape[0] == (1000 if layout == "timm_1000_classes" else 3)
    assert torch.equal(pruned.state_dict["layer1.0.conv1.weight"] != 0, pruned.masks["layer1.0.conv1.weight"])
