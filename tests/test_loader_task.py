"""LoaderTask: a user's own model (not in the registry) and plain TensorDataset loaders through prune()."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from slr_prune import LoaderTask, PruneSpec, TrainConfig, prune

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyNet(nn.Module):
    """A user's CNN: stem, two prunable convs with BatchNorm, classifier."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.body(F.relu(self.stem(x))).mean((2, 3)))


def images(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + (x[:, 0, 4:].mean((1, 2)) > 0).long()
    return TensorDataset(x, y)


def hit_rate(output, target):
    """The user's metric: top-1 accuracy under another name."""
    return (output.argmax(1) == target).float().mean()


def classification(**kw) -> LoaderTask:
    torch.manual_seed(0)
    return LoaderTask(TinyNet(), DataLoader(images(192, 0), 32, shuffle=True), DataLoader(images(64, 1), 64), **kw)


CPU = dict(device="cpu", progress=False, probe_batches=2)


def zeros_reached(model: nn.Module, ratio: float) -> None:
    """Exactly round(ratio·n) zeros in each pruned conv (stem and classifier stay dense)."""
    for conv in (model.body[0], model.body[3]):
        n = conv.weight.numel()
        assert int((conv.weight == 0).sum()) == round(ratio * n)
    assert int((model.stem.weight == 0).sum()) == 0


def test_slr_trains_and_prunes_a_user_model_with_the_user_metric():
    task = classification(metric=hit_rate)
    model = task.build_model()
    result = prune(model, task, PruneSpec.uniform(0.8), "slr", train=TrainConfig(epochs=2, lr=0.05, **CPU),
                   bn_batches=2)
    assert result.metric == "hit_rate" and {"hit_rate", "val_loss"} <= set(result.dense)
    assert len(result.epochs) == 2 and "hard_prune_hit_rate" in result.epochs[-1]
    assert result.hard_prune_bn is not None  # BatchNorm recalibrated on the task's batches
    assert result.sparsity == pytest.approx(result.target_sparsity)
    zeros_reached(model, 0.8)


def test_magnitude_with_default_accuracy_saves_and_resumes(tmp_path):
    task = classification()
    model = task.build_model()
    kw = dict(train=TrainConfig(epochs=0, **CPU), solver_options={"schedule": "oneshot"}, bn_batches=2,
              out_dir=tmp_path)
    result = prune(model, task, PruneSpec.uniform(0.8), "magnitude", **kw)
    assert result.metric == "accuracy" and 0 <= result.hard_prune["accuracy"] <= 1
    zeros_reached(model, 0.8)
    again = prune(task.build_model(), task, PruneSpec.uniform(0.8), "magnitude", resume=True, **kw)
    assert again.hard_prune == result.hard_prune  # the finished run, recognised by the task's record


def test_layerwise_one_shot_uses_calibration_batches():
    task = classification()
    model = task.build_model()
    result = prune(model, task, PruneSpec.uniform(0.8), "layerwise", train=TrainConfig(epochs=0, **CPU),
                   solver_options={"calibration_batches": 2}, bn_batches=2)
    assert len(result.layerwise) == 2 and result.epochs == []
    zeros_reached(model, 0.8)


def within_tenth(output, target):
    """Regression metric (higher is better): the fraction of predictions within 0.1 of the target."""
    return ((output - target).abs() < 0.1).float().mean()


def test_regression_with_mse_and_a_user_metric():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    task = LoaderTask(net, TensorDataset(x[:128], y[:128]), TensorDataset(x[128:], y[128:]), batch_size=32,
                      loss=F.mse_loss, metric=within_tenth, name="regression")
    result = prune(net, task, PruneSpec.uniform(0.8), "slr", train=TrainConfig(epochs=1, lr=0.01, **CPU))
    assert result.metric == "within_tenth" and result.hard_prune_bn is None  # no BatchNorm
    assert int((net[2].weight == 0).sum()) == round(0.8 * 32 * 32)
    assert result.dense["val_loss"] > 0 and task.example_input(4).shape == (4, 6)
    assert json.loads(json.dumps(task.record()))["loss"] == "mse_loss"


def test_batches_are_reproducible_and_a_sampler_rebatches_the_dataset():
    task = classification()
    first, second = task.probe_batches(2, seed=3), task.probe_batches(2, seed=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    cal = [list(task.calibration_batches(2, seed=1)) for _ in range(2)]
    assert torch.equal(cal[0][1][0], cal[1][1][0])
    sampler = DistributedSampler(task.train_dataset(), num_replicas=2, rank=1, shuffle=False)
    loader = task.train_loader(sampler)
    assert loader.sampler is sampler and loader.batch_size == 32 and len(loader) == 3


def test_a_factory_builds_fresh_models_and_a_module_is_copied():
    net = TinyNet()
    task = LoaderTask(net, images(32, 0), images(32, 1), batch_size=16)
    copy = task.build_model()
    assert copy is not net and torch.equal(copy.stem.weight, net.stem.weight)
    made = LoaderTask(TinyNet, images(32, 0), images(32, 1), batch_size=16).build_model()
    assert isinstance(made, TinyNet)
    with pytest.raises(TypeError, match="factory returned a int"):
        LoaderTask(lambda: 3, images(32, 0), images(32, 1), batch_size=16).build_model()


@pytest.mark.parametrize("kw, error, match", [
    (dict(model=3), TypeError, "model must be an nn.Module"),
    (dict(train=[1, 2]), TypeError, "train must be a DataLoader or a map-style Dataset"),
    (dict(val=images(8, 1)), ValueError, "val is a dataset: give batch_size"),
    (dict(loss="mse"), TypeError, "loss must be a function of"),
    (dict(metric_name=""), ValueError, "metric_name must be a non-empty string"),
    (dict(example_input=[1.0]), TypeError, "example_input must be a Tensor"),
])
def test_bad_arguments_are_refused_clearly(kw, error, match):
    args = {"model": TinyNet(), "train": DataLoader(images(8, 0), 4), "val": DataLoader(images(8, 1), 4), **kw}
    with pytest.raises(error, match=match):
        LoaderTask(args.pop("model"), args.pop("train"), args.pop("val"), **args)


def test_batches_that_are_not_pairs_are_refused():
    loader = DataLoader(torch.randn(8, 1, 8, 8), 4)
    task = LoaderTask(TinyNet(), loader, loader)
    with pytest.raises(TypeError, match=r"\(input, target\) pairs, got a Tensor"):
        task.loss(task.build_model(), next(iter(loader)), torch.device("cpu"))
