"""PR-DARTS: pruned operations, the search space, a reproducible search, derive → train → prune → export."""

import math

import pytest
import torch
import torch.nn.functional as F

from slr_prune import NM, Channel, Filter, Pattern, PruneSpec, Unstructured
from slr_prune.adapters import ClassificationTask
from slr_prune.artifact import load_artifact
from slr_prune.engine import Hooks
from slr_prune.search import (
    Genotype,
    PrunedConv2d,
    PrunedLinear,
    SearchConfig,
    SearchNetwork,
    derived_network,
    pruned_modules,
    search,
    search_prune,
    to_plain_modules,
)
from slr_prune.task import Task

FORMS = [Unstructured(0.9), NM(2, 4), Filter(0.5), Channel(0.5), Pattern()]
TINY = dict(channels=4, layers=3, steps=2, batch_size=64, progress=False, device="cpu")


@pytest.mark.parametrize("sparsity", FORMS, ids=lambda s: s.form)
def test_pruned_conv_keeps_exactly_the_target_and_runs_through_the_projection(sparsity):
    torch.manual_seed(0)
    conv = PrunedConv2d(8, 16, 3, padding=1, sparsity=sparsity)
    mask = conv.mask()
    assert int(mask.sum()) == sparsity.kept(conv.weight.shape)
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * mask, padding=1))
    plain, plain_mask = conv.to_plain()
    assert type(plain) is torch.nn.Conv2d and torch.equal(plain_mask, mask)
    assert torch.allclose(plain(x), conv(x)) and set(conv.state_dict()) == {"weight"}
    assert conv.penalty() > 0 and torch.isclose(conv.penalty(), 0.5 * (conv.weight * ~mask).pow(2).sum())


@pytest.mark.parametrize("sparsity", [Unstructured(0.75), NM(2, 4), Filter(0.5)], ids=lambda s: s.form)
def test_pruned_linear_keeps_exactly_the_target(sparsity):
    lin = PrunedLinear(8, 6, sparsity=sparsity)
    assert int(lin.mask().sum()) == sparsity.kept(lin.weight.shape)
    x = torch.randn(3, 8)
    assert torch.allclose(lin(x), F.linear(x, lin.weight * lin.mask(), lin.bias))


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for gradient in ("masked", "straight_through"):
        conv = PrunedConv2d(3, 4, 3, sparsity=Unstructured(0.5), gradient=gradient).double()
        mask = conv.mask()
        loss = conv(x).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, conv.weight)
        # finite differences of the loss through the projection, support held (no ties nearby)
        w0, eps = conv.weight.detach().clone(), 1e-6
        fd = torch.zeros_like(w0)
        for i in range(w0.numel()):
            for sign in (1, -1):
                w = w0.clone().view(-1)
                w[i] += sign * eps
                out = F.conv2d(x, w.view_as(w0) * mask).pow(2).sum()
                fd.view(-1)[i] += sign * out / (2 * eps)
        assert torch.allclose(grad[mask], fd[mask], rtol=1e-5, atol=1e-6)  # kept weights: the true gradient
        if gradient == "masked":
            assert torch.all(grad[~mask] == 0) and torch.allclose(grad, fd, rtol=1e-5, atol=1e-6)
        else:  # straight-through: pruned weights still get the signal of their projected position
            assert grad[~mask].abs().sum() > 0


def test_alpha_gets_gradients_through_the_pruned_weights():
    torch.manual_seed(0)
    net = SearchNetwork(Unstructured(0.9), c=4, layers=3, steps=2, num_classes=10, in_channels=1,
                        ops=("pruned_conv_3x3", "pruned_dil_conv_3x3"))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    F.cross_entropy(net(x), y).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alphas())
    # the forward sees only the projected weights: changing a pruned entry changes nothing
    conv = next(iter(pruned_modules(net).values()))
    before = net.eval()(x)
    with torch.no_grad():
        conv.weight[~conv.mask()] *= 0.5
    assert torch.allclose(net(x), before)


@pytest.fixture(scope="module")
def task():
    return ClassificationTask("digits_cnn", "digits")


@pytest.mark.slow
def test_search_is_reproducible_from_its_seed_and_from_resume(task, tmp_path):
    config = SearchConfig(epochs=2, **TINY)
    _, a = search(task, Unstructured(0.9), config)
    _, b = search(task, Unstructured(0.9), config)
    assert a.epochs[-1]["alpha_normal"] == b.epochs[-1]["alpha_normal"] and a.genotype == b.genotype
    ckpt = tmp_path / "search.pt"
    search(task, Unstructured(0.9), SearchConfig(epochs=1, **TINY), checkpoint=ckpt)
    with pytest.raises(Exception, match="was written with other settings"):  # epochs differ from the checkpoint's
        search(task, Unstructured(0.9), config, checkpoint=ckpt, resume=True)
    ckpt.unlink()
    search(task, Unstructured(0.9), config, checkpoint=ckpt)
    _, c = search(task, Unstructured(0.9), config, checkpoint=ckpt, resume=True)  # finished: loads, no epoch
    assert c.epochs == a.epochs and c.genotype == a.genotype
    assert len(a.epochs) == 2 and len(a.epochs[0]["alpha_reduce"]) == 5  # 2 + 3 edges


class CrashAfterCheckpoint(Hooks):
    """The process dies right after the first epoch's checkpoint."""

    def should_stop(self, trainer):
        raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_mid_search_equals_uninterrupted(task, tmp_path):
    config = SearchConfig(epochs=2, **TINY)
    _, whole = search(task, Unstructured(0.9), config)
    with pytest.raises(KeyboardInterrupt):
        search(task, Unstructured(0.9), config, checkpoint=tmp_path / "s.pt", hooks=[CrashAfterCheckpoint()])
    assert load_artifact(tmp_path / "s.pt").phase["epoch"] == 1
    _, resumed = search(task, Unstructured(0.9), config, checkpoint=tmp_path / "s.pt", resume=True)
    assert resumed.epochs == whole.epochs and resumed.genotype == whole.genotype


class Brightness(Task):
    """A regression task: predict each image's mean brightness, with an MSE loss (no classes)."""

    metric = "neg_mse"

    def __init__(self, n=128):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 8, 8, generator=g) + torch.randn(n, 1, 1, 1, generator=g)
        self.y = self.x.mean((1, 2, 3)).unsqueeze(1)

    def build_model(self):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))

    def train_dataset(self):
        return torch.utils.data.TensorDataset(self.x, self.y)

    def train_loader(self, sampler=None):
        return torch.utils.data.DataLoader(self.train_dataset(), 32, sampler=sampler)

    val_loader = train_loader

    def loss(self, model, batch, device):
        x, y = (t.to(device) for t in batch)
        return F.mse_loss(model(x), y)

    def evaluate(self, model, device):
        with torch.no_grad():
            return {"neg_mse": -float(F.mse_loss(model(self.x.to(device)), self.y.to(device)))}

    def example_input(self, batch_size=1):
        return self.x[:batch_size]


def test_search_runs_on_the_tasks_own_loss():
    task = Brightness()
    net, result = search(task, Unstructured(0.5), SearchConfig(epochs=3, **{**TINY, "batch_size": 16}))
    assert net(task.x[:4]).shape == (4, 1)  # the head has the task model's output width, no classes
    losses = [e["train_loss"] for e in result.epochs]
    val = [e["search_val_loss"] for e in result.epochs]
    assert all(math.isfinite(v) for v in losses + val)
    assert losses[-1] < losses[0] and val[-1] < val[0]  # the MSE falls: the search trains on the task's loss


def test_genotype_round_trip_and_bad_files(tmp_path):
    g = Genotype((("skip_connect", 0), ("pruned_conv_3x3", 1), ("max_pool_3x3", 2), ("sep_conv_3x3", 0)),
                 (("avg_pool_3x3", 0), ("pruned_conv_3x3", 1), ("dil_conv_3x3", 2), ("skip_connect", 1)), 2)
    assert Genotype.load(g.save(tmp_path / "g.json")) == g
    (tmp_path / "bad.json").write_text('{"normal": [["skip_connect", 5]], "reduce": [], "steps": 1}')
    with pytest.raises(ValueError, match="bad.json"):
        Genotype.load(tmp_path / "bad.json")


def test_derived_network_trains_prunes_and_exports(task, tmp_path):
    pytest.importorskip("onnxruntime")
    from slr_prune.engine import TrainConfig
    from slr_prune.export import export_onnx, onnx_max_difference

    spec = PruneSpec.uniform(0.9)
    fast = TrainConfig(epochs=1, lr=0.05, progress=False, device="cpu")
    result = search_prune(task, spec, "slr", search_config=SearchConfig(epochs=1, **TINY), train=fast,
                          prune_train=TrainConfig(epochs=1, lr=0.01, progress=False, device="cpu"),
                          finetune=None, out_dir=tmp_path)
    assert (tmp_path / "genotype.json").is_file() and (tmp_path / "cells.png").stat().st_size > 0
    assert abs(result.pruned.sparsity - 0.9) < 1e-3 and result.pruned.hard_prune_bn is not None
    model = derived_network(Genotype.load(tmp_path / "genotype.json"), task, SearchConfig(**TINY))
    model.load_state_dict(torch.load(tmp_path / "prune" / "pruned.pt", weights_only=True)["state_dict"])
    x = task.example_input(2)
    path = export_onnx(model, tmp_path / "m.onnx", x)
    assert onnx_max_difference(path, model, x) < 1e-4


def test_search_network_converts_to_plain_layers_and_masks():
    from slr_prune import Masks

    net = SearchNetwork(Unstructured(0.8), c=4, layers=3, steps=2, num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    before = net.eval()(x)
    masks = to_plain_modules(net)
    assert masks and not pruned_modules(net)
    assert torch.allclose(net(x), before, atol=1e-6)
    Masks(masks).attach(net)  # the library's masks accept them


def test_search_command(tmp_path, capsys):
    import json

    from slr_prune.cli import main

    out = tmp_path / "run"
    code = main(["search", "--ratio", "0.9", "--search-epochs", "1", "--channels", "4", "--steps", "2",
                 "--train-epochs", "1", "--epochs", "1", "--finetune-epochs", "0", "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "genotype:" in captured.out and "hard-prune" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["search"]["epochs"] == 1 and report["results"]["pruned"]["sparsity"] > 0.89
    assert (out / "cells.png").is_file() and Genotype.load(out / "genotype.json").steps == 2
    assert main(["search", "--ratio", "0.9", "--ops", "skip_connect,conv_7x7", "--out", str(tmp_path / "x")]) == 2
    assert "unknown search operation 'conv_7x7'" in capsys.readouterr().err


def test_prune_all_puts_every_cell_convolution_on_the_set():
    plain = SearchNetwork(Unstructured(0.9), c=4, layers=3, steps=2, num_classes=10, in_channels=1)
    every = SearchNetwork(Unstructured(0.9), c=4, layers=3, steps=2, num_classes=10, in_channels=1, prune_all=True)
    convs = [m for n, m in every.named_modules() if isinstance(m, torch.nn.Conv2d) and n.startswith("cells")]
    assert convs and all(isinstance(m, PrunedConv2d) for m in convs)
    assert len(pruned_modules(plain)) < len(pruned_modules(every))
    assert not isinstance(every.stem[0], PrunedConv2d)  # the stem stays dense, as the spec keeps it
