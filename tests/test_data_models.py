import pickle

import numpy as np
import pytest
import torch
from fixtures import write_cifar10, write_image_folders

from slr_prune.adapters import ClassificationTask
from slr_prune.data import CIFAR10Batches, classification_datasets
from slr_prune.data.cache import cache_root, cached_folder
from slr_prune.models import create_model, list_models


def test_cifar10_reads_the_python_batches(tmp_path):
    write_cifar10(tmp_path)
    train, test = CIFAR10Batches(tmp_path, train=True), CIFAR10Batches(tmp_path / "cifar-10-batches-py", False)
    assert len(train) == 40 and len(test) == 8
    x, y = train[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) <= 9
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"), encoding="latin1")
    first = torch.tensor(raw["data"][0], dtype=torch.float32).view(3, 32, 32) / 255
    mean, std = torch.tensor((0.4914, 0.4822, 0.4465)), torch.tensor((0.2023, 0.1994, 0.2010))
    torch.testing.assert_close(test[0][0], (first - mean.view(3, 1, 1)) / std.view(3, 1, 1))
    assert int(test[0][1]) == raw["labels"][0]


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CIFAR10Batches(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no CIFAR-10 python batches"):
        CIFAR10Batches(tmp_path)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_text("not a pickle")
    with pytest.raises(ValueError, match="is not a CIFAR-10 python batch"):
        CIFAR10Batches(tmp_path, train=False)


def test_image_folders(tmp_path):
    write_image_folders(tmp_path)
    train, val, info = classification_datasets("imagefolder", tmp_path, image_size=32)
    assert info == {"num_classes": 3, "image_size": 32, "in_channels": 3, "augment": "light"}
    assert train[0][0].shape == (3, 32, 32) and len(val) == 6
    with pytest.raises(FileNotFoundError, match="needs a train/ folder"):
        classification_datasets("imagefolder", tmp_path / "val")
    assert classification_datasets("imagefolder", tmp_path, image_size=128)[2]["augment"] == "imagenet"
    with pytest.raises(ValueError, match="unknown augment 'flip'; choose one of none, light, imagenet"):
        classification_datasets("imagefolder", tmp_path, image_size=32, augment="flip")
    with pytest.raises(ValueError, match="imagefolder dataset only"):
        classification_datasets("digits", augment="light")


def test_grey_image_folders_give_one_channel_models(tmp_path):
    write_image_folders(tmp_path, size=28, mode="L")
    task = ClassificationTask("digits_cnn", "imagefolder", tmp_path, image_size=28, batch_size=2)
    assert task.info["in_channels"] == 1 and task.train_set[0][0].shape == (1, 28, 28)
    x, _ = next(iter(task.train_loader()))
    assert task.build_model()(x).shape == (2, 3) and task.example_input().shape == (1, 1, 28, 28)
    assert task.record() == {"model": "digits_cnn", "dataset": "imagefolder", "image_size": 28, "augment": "light",
                             "probe_holdout": 0}
    again = ClassificationTask(**task.record(), data=tmp_path)
    assert again.info == task.info


def _square_folder(root):
    """One grey 16×16 training image: a 2×2 white square at rows 4-5, columns 10-11."""
    from PIL import Image

    image = np.zeros((16, 16), dtype=np.uint8)
    image[4:6, 10:12] = 255
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.fromarray(image).save(root / split / "a" / "0.png")
    return root


@pytest.mark.parametrize("augment,shift", [("none", 0), ("light", 2)])
def test_light_augmentation_shifts_without_flipping_or_scaling(tmp_path, augment, shift):
    train, val, _ = classification_datasets("imagefolder", _square_folder(tmp_path), 16, augment)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        rows, cols = torch.nonzero(train[0][0][0] > 0, as_tuple=True)
        assert len(rows) == 4  # the whole square, at its size: no rescaling crop
        dy, dx = int(rows.min()) - 4, int(cols.min()) - 10
        assert abs(dy) <= shift and abs(dx) <= shift  # a mirror would move it 6 columns left
        seen.add((dy, dx))
    assert len(seen) > 5 if shift else seen == {(0, 0)}
    torch.testing.assert_close(val[0][0], classification_datasets("imagefolder", tmp_path, 16, "none")[0][0][0])


def test_dataset_errors():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        classification_datasets("mnist")
    with pytest.raises(ValueError, match="read from disk"):
        classification_datasets("cifar10")
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        ClassificationTask(model="resnet19")


@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)])
def test_cifar_resnets_have_the_papers_size(name, params):
    model = create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - params) / params < 0.03  # option-B shortcuts add about 1%
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v2"])
def test_cifar_stems_keep_spatial_resolution(name):
    model = create_model(name, num_classes=10, image_size=32).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.stride == (1, 1) and first.kernel_size == (3, 3)


def test_registry_lists_the_issue_models():
    names = set(list_models())
    assert {"resnet18", "resnet50", "vgg16", "vgg16_bn", "mobilenet_v2", "resnet20", "resnet56",
            "resnet110", "digits_cnn"} <= names


def test_digits_task_is_the_default():
    task = ClassificationTask()
    assert task.info["image_size"] == 8 and len(task.train_set) + len(task.val_set) == 1797
    model = task.build_model()
    x, y = next(iter(task.train_loader()))
    assert model(x).shape == (len(y), 10)
    assert 0 <= task.evaluate(model, torch.device("cpu"))["accuracy"] <= 1


def test_cached_folder_is_written_once_and_never_half(tmp_path, monkeypatch):
    calls = []

    def write(folder):
        calls.append(folder)
        (folder / "a.txt").write_text("a")

    notes = []
    first = cached_folder("gen/x", write, ("a.txt",), tmp_path, lambda p, writing: notes.append(writing))
    again = cached_folder("gen/x", write, ("a.txt",), tmp_path, lambda p, writing: notes.append(writing))
    assert first == again == tmp_path / "gen" / "x" and (first / "a.txt").read_text() == "a"
    assert len(calls) == 1 and calls[0] != first and notes == [True, False]

    def fail(folder):
        (folder / "part.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached_folder("gen/y", fail, ("a.txt",), tmp_path)
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["x"]  # no half-written folder left
    monkeypatch.setenv("SLR_PRUNE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"


def test_every_model_family_is_in_the_one_registry():
    from slr_prune.models import MODELS, resolve_model
    from slr_prune.registry import UnknownNameError

    assert {"ufld_resnet18", "ufld_resnet34"} == set(list_models(task="lane"))
    assert {"yolov3", "yolov3-tiny", "yolov3-spp"} == set(list_models(task="yolo"))
    classifiers = list_models(task="classification")
    assert "resnet18" in classifiers and "ufld_resnet18" not in classifiers
    assert resolve_model("resnet18", "lane") == "ufld_resnet18" and resolve_model("ufld", "lane") == "ufld_resnet18"
    assert resolve_model("yolov3-tinyu", "yolo") == "yolov3-tiny"
    assert MODELS.get("resnet18").traits["task"] == "classification"
    lane = create_model("34", griding_num=10, num_row_anchors=4, num_lanes=2, input_size=(32, 64), hidden=8,
                        task="lane")
    assert lane(torch.randn(1, 3, 32, 64))[0].shape[-3:] == (11, 4, 2)
    with pytest.raises(UnknownNameError, match="unknown model 'ufld'"):
        create_model("ufld")  # aliases belong to their task
    with pytest.raises(UnknownNameError, match="unknown lane model 'resnet50'; choose one of ufld_resnet18"):
        resolve_model("resnet50", "lane")
    with pytest.raises(UnknownNameError, match="'yolov3' is a yolo model"):
        ClassificationTask(model="yolov3")
