"""The yolo task: synthetic data, data-yaml and model checks, the evaluation path, SLR / ADMM pruning
end to end on YOLOv3-tiny (CPU, 64 px), export to ultralytics .pt and ONNX, and the CLI."""

import copy
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

if importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("pycocotools") is None:
    pytest.skip("the yolo task needs ultralytics and pycocotools", allow_module_level=True)

from yolo_fixtures import ReplayDetector, perfect_outputs, small_dataset  # noqa: E402

from slr_prune.adapters.yolo import YoloTask  # noqa: E402
from slr_prune.data.synthetic_detection import SyntheticDetectionConfig, write_synthetic_detection  # noqa: E402
from slr_prune.data.yolo import load_data_yaml  # noqa: E402
from slr_prune.engine import TrainConfig, prune  # noqa: E402
from slr_prune.export import export_onnx, export_ultralytics, onnx_max_difference  # noqa: E402
from slr_prune.masks import Masks  # noqa: E402
from slr_prune.models.yolo import head_exclusions, import_ultralytics  # noqa: E402
from slr_prune.spec import PruneSpec  # noqa: E402

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def task(data):
    return YoloTask("yolov3-tiny", data=data, image_size=64, batch_size=8)


# ---- light import, offline ------------------------------------------------------------------------
def test_import_is_light_and_ultralytics_is_kept_offline():
    import os
    import subprocess

    code = (
        "import sys, slr_prune, slr_prune.metrics.coco, slr_prune.export, slr_prune.data.synthetic_detection\n"
        "import slr_prune.adapters.yolo, slr_prune.data.yolo, slr_prune.models.yolo\n"
        "assert not {'ultralytics', 'pycocotools'} & set(sys.modules), 'imported at import time'\n"
        "from slr_prune.models.yolo import import_ultralytics\n"
        "import_ultralytics()\n"
        "from ultralytics.utils import AUTOINSTALL, ONLINE, checks, downloads\n"
        "print(ONLINE, checks.ONLINE, AUTOINSTALL, downloads.is_online())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False", "False"]


# ---- synthetic data and data yaml ------------------------------------------------------------------
def test_synthetic_set_is_deterministic_and_consistent(tmp_path):
    a = write_synthetic_detection(tmp_path / "a", train_images=3, val_images=2, image_size=64, seed=1)
    b = write_synthetic_detection(tmp_path / "b", train_images=3, val_images=2, image_size=64, seed=1)
    assert a.name == b.name == "data.yaml"
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    parsed = load_data_yaml(a)
    assert parsed.names == ["circle", "square", "triangle"] and parsed.val_json.name == "instances_val.json"
    coco = json.loads(parsed.val_json.read_text())
    assert len(coco["images"]) == 2 and {c["id"] for c in coco["categories"]} == {1, 2, 3}
    for lab in (tmp_path / "a" / "labels").rglob("*.txt"):
        rows = np.loadtxt(lab, ndmin=2)
        assert rows.shape[1] == 5 and set(rows[:, 0]) <= {0, 1, 2}
        assert (rows[:, 1:] > 0).all() and (rows[:, 1:] <= 1).all()
    assert write_synthetic_detection(tmp_path / "a", train_images=3, val_images=2, image_size=64, seed=1) == a
    with pytest.raises(FileExistsError, match="different dataset"):
        write_synthetic_detection(tmp_path / "a", train_images=4, val_images=2, image_size=64, seed=1)
    with pytest.raises(ValueError, match="num_classes must be in 1..6"):
        SyntheticDetectionConfig(num_classes=9)


def test_data_yaml_errors_name_the_input(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="data yaml .*missing.yaml' does not exist"):
        load_data_yaml(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match="data yaml .*missing.yaml' does not exist"):
        YoloTask("yolov3-tiny", data=tmp_path / "missing.yaml", image_size=64)
    y = tmp_path / "d.yaml"
    y.write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(ValueError, match="lacks 'val'"):
        load_data_yaml(y)
    root = data.parent
    y.write_text(f"path: {root}\ntrain: images/train\nval: images/nowhere\nnames: [a, b, c]\n")
    with pytest.raises(FileNotFoundError, match="val image folder .*images/nowhere' does not exist"):
        load_data_yaml(y)
    (tmp_path / "empty").mkdir()
    y.write_text(f"path: {root}\ntrain: images/train\nval: {tmp_path / 'empty'}\nnames: [a, b, c]\n")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_data_yaml(y)
    y.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {{0: a, 2: c}}\n")
    with pytest.raises(ValueError, match="numbered 0..1 without gaps"):
        load_data_yaml(y)
    y.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnc: 4\nnames: [a, b, c]\n")
    with pytest.raises(ValueError, match="nc is 4 but names lists 3"):
        load_data_yaml(y)
    y.write_text(f"path: {root / 'nope'}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(FileNotFoundError, match="dataset path .* does not exist"):
        load_data_yaml(y)


def test_labels_out_of_range_fail_with_file_and_line(tmp_path):
    data = small_dataset(tmp_path / "bad", train_images=4, val_images=2)
    label = sorted((tmp_path / "bad" / "labels" / "train").glob("*.txt"))[1]
    label.write_text(label.read_text() + "5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=rf"{label.name}:\d+: class 5 is out of range; the data has 3 classes "
                                         r"\(valid 0..2\)"):
        YoloTask("yolov3-tiny", data=data, image_size=64)


def test_model_files_that_are_not_detection_models_are_refused(tmp_path, data):
    import_ultralytics()
    from ultralytics.nn.tasks import ClassificationModel

    with pytest.raises(FileNotFoundError, match="model file .*nope.pt' does not exist"):
        YoloTask(str(tmp_path / "nope.pt"), data=data, image_size=64)
    with pytest.raises(ValueError, match="unknown model 'yolov9'; choose one of yolov3"):
        YoloTask("yolov9", data=data, image_size=64)
    cls_pt = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolov8-cls.yaml", nc=3, verbose=False)}, cls_pt)
    with pytest.raises(ValueError, match="is not a detection model: its head is Classify"):
        YoloTask(str(cls_pt), data=data, image_size=64)
    weights_only = tmp_path / "sd.pt"
    torch.save({"weights": torch.zeros(3)}, weights_only)
    with pytest.raises(ValueError, match="holds no ultralytics model"):
        YoloTask(str(weights_only), data=data, image_size=64)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be read as an ultralytics checkpoint"):
        YoloTask(str(junk), data=data, image_size=64)
    with pytest.raises(ValueError, match="multiple of 32"):
        YoloTask("yolov3-tiny", data=data, image_size=100)


# ---- loss, exclusions, evaluation -------------------------------------------------------------------
def test_head_exclusions_and_loss(task):
    model = task.build_model()
    params = dict(model.named_parameters())
    assert task.default_exclude == ("model.20.cv2.0.2.weight", "model.20.cv2.1.2.weight", "model.20.cv3.0.2.weight",
                                    "model.20.cv3.1.2.weight", "model.20.dfl.conv.weight")
    head = head_exclusions(model, "head")
    assert len(head) == 13 and all(n in params for n in head)  # 12 head convs + the DFL
    assert head_exclusions(model, "none") == ("model.20.dfl.conv.weight",)
    sets = PruneSpec.uniform(0.5, exclude=task.default_exclude).resolve(model)
    assert "model.0.conv.weight" not in sets and not set(task.default_exclude) & set(sets)
    assert "model.20.cv3.1.1.conv.weight" in sets and len(sets) == 18
    batch = next(iter(task.train_loader()))
    loss = task.loss(model, batch, CPU)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert params["model.20.dfl.conv.weight"].grad is None  # the DFL projection is fixed
    assert params["model.10.conv.weight"].grad.abs().sum() > 0
    model.eval()  # the probe closure evaluates the loss in eval mode: same criterion, same value
    with torch.no_grad():
        eval_loss = task.loss(model, batch, CPU)
    assert torch.isfinite(eval_loss)


def test_calibration_runs_the_model_as_the_task_does(task):
    from slr_prune.structured.criteria import Calibration

    model = task.build_model().eval()
    calibration = Calibration.from_task(task, 1, CPU)
    batch = calibration.batches[0]
    with torch.no_grad():  # uint8 images: the task's forward normalises them
        torch.testing.assert_close(calibration.forward(model, batch)[0], task.forward(model, batch, CPU)[0])


def test_evaluation_maps_predictions_back_to_the_images(task, data, tmp_path):
    perfect = task.evaluate(ReplayDetector(perfect_outputs(task.val_loader(), 3)), CPU)
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map"] > 0.95
    shifted = [o.clone() for o in perfect_outputs(task.val_loader(), 3)]
    for o in shifted:
        o[:, 0] += o[:, 2]  # every box moved right by its own width: IoU 0
    assert task.evaluate(ReplayDetector(shifted), CPU)["map50"] == 0.0
    # the same with ground truth converted from the YOLO labels instead of the COCO JSON
    y = tmp_path / "labels-only.yaml"
    y.write_text(f"path: {data.parent}\ntrain: images/train\nval: images/val\nnames: [circle, square, triangle]\n")
    from_labels = YoloTask("yolov3-tiny", data=y, image_size=64, batch_size=8)
    assert from_labels.data.val_json is None
    again = from_labels.evaluate(ReplayDetector(perfect_outputs(from_labels.val_loader(), 3)), CPU)
    assert again["map"] == pytest.approx(perfect["map"], abs=1e-6)


# ---- pruning end to end, export ---------------------------------------------------------------------
@pytest.mark.slow
def test_slr_and_admm_prune_finetune_and_export(task, tmp_path):
    torch.manual_seed(0)
    dense_model = task.build_model()
    spec = PruneSpec.uniform(0.5, exclude=task.default_exclude)  # every conv but the stem and the outputs
    dense = task.evaluate(dense_model, CPU)
    for method in ("slr", "admm"):
        model = copy.deepcopy(dense_model)
        result = prune(model, task, spec, method,
                       train=TrainConfig(epochs=1, lr=0.01, device="cpu", progress=False),
                       finetune=TrainConfig(epochs=1, lr=0.005, device="cpu", progress=False, schedule="constant"),
                       solver_options={"rho": 0.1}, dense_metrics=dense)
        assert result.metric == "map50" and {"map50", "map"} <= set(result.hard_prune)
        assert {"map50", "map", "hard_prune_map50", "hard_prune_bn_map50"} <= set(result.epochs[0])
        assert len(result.finetune) == 1 and {"map50", "map"} <= set(result.hard_prune_bn)
        assert result.sparsity == pytest.approx(0.5, abs=1e-3) == result.target_sparsity
        params = dict(model.named_parameters())
        for name, s in spec.resolve(model).items():  # exactly the target count survives fine-tuning
            assert int(torch.count_nonzero(params[name])) == s.kept(params[name].shape), name
        for name in task.default_exclude[:-1] + ("model.0.conv.weight",):
            assert int(torch.count_nonzero(params[name])) == params[name].numel(), name

    pt = export_ultralytics(model, tmp_path / "pruned.pt", train_args={"imgsz": 64})
    from ultralytics import YOLO

    yolo = YOLO(str(pt))
    assert yolo.task == "detect" and yolo.names == {0: "circle", 1: "square", 2: "triangle"}
    image = task.val_set.im_files[0]
    results = yolo.predict(image, imgsz=64, device="cpu", conf=0.001, verbose=False)
    assert len(results) == 1 and results[0].boxes.xyxy.shape[1] == 4
    x = torch.rand(2, 3, 64, 64)
    loaded = yolo.model.float().eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model.eval()(x)[0])
    for name, p in dict(loaded.named_parameters()).items():
        torch.testing.assert_close(p, params[name], msg=name)

    pytest.importorskip("onnx")
    onnx_path = export_onnx(model, tmp_path / "pruned.onnx", x)
    assert onnx_path.stat().st_size > 0
    pytest.importorskip("onnxruntime")
    with torch.no_grad():  # outputs are box coordinates in pixels: compare relative to their scale
        scale = float(model.eval()(x)[0].abs().max())
    assert onnx_max_difference(onnx_path, model, x) < 5e-5 * scale
    assert onnx_max_difference(onnx_path, model, torch.rand(3, 3, 64, 64)) < 5e-5 * scale  # dynamic batch


def test_export_of_a_masked_model_leaves_it_usable(task, tmp_path):
    model = task.build_model()
    names = [n for n, p in model.named_parameters() if p.dim() == 4 and "dfl" not in n]
    params = dict(model.named_parameters())
    masks = Masks({n: torch.rand_like(params[n]) > 0.5 for n in names})
    masks.attach(model)
    pt = export_ultralytics(model, tmp_path / "masked.pt")
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before = model(x)[0]  # the original still runs with its masks attached
    assert torch.nn.utils.parametrize.is_parametrized(model.model[2].conv)
    saved = torch.load(pt, weights_only=False)
    assert saved["slr_prune"]["sparsity"] > 0.45 and not any(
        torch.nn.utils.parametrize.is_parametrized(m) for m in saved["model"].modules())
    with torch.no_grad():
        torch.testing.assert_close(saved["model"].float().eval()(x)[0], before)


# ---- CLI ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_prune_and_evaluate(monkeypatch, capsys, data, tmp_path):
    from slr_prune.cli import main

    out = tmp_path / "run"
    common = ["--task", "yolo", "--data", str(data), "--image-size", "64", "--batch-size", "8", "--device", "cpu"]
    code = main(["prune", *common, "--method", "magnitude", "--ratio", "0.5", "--finetune-epochs", "0",
                 "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())["results"][0]
    assert report["metric"] == "map50" and report["sparsity"] == pytest.approx(0.5, abs=1e-3)
    for fmt in ("ultralytics", "onnx"):
        code = main(["export", "--checkpoint", str(out / "pruned.pt"), "--format", fmt, "--out", str(tmp_path / "x")])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert f"as {fmt}" in captured.out and "— match" in captured.out
    # structured pruning keeps the head's output convs by the task's default exclusions (no --ignore)
    code = main(["structured", *common, "--criterion", "l1", "--flops-target", "0.5", "--finetune-epochs", "0",
                 "--no-latency", "--no-progress", "--out", str(tmp_path / "s")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((tmp_path / "s" / "report.json").read_text())["results"]["costs"]["macs_ratio"] >= 1.9
    code = main(["evaluate", *common, "--checkpoint", str(out / "pruned.pt")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "map50" in captured.out and "map " in captured.out
    code = main(["evaluate", "--task", "yolo", "--data", str(tmp_path / "none.yaml"), "--checkpoint",
                 str(out / "pruned.pt")])
    assert code == 2 and "none.yaml' does not exist" in capsys.readouterr().err


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
