"""Physical removal through Torch-Pruning's dependency graph: the smaller model computes exactly
what the masked model computes, the cost model predicts its size, and it saves/loads without
pickling modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slr_prune.errors import StateError
from slr_prune.metrics import cost_summary
from slr_prune.models import create_model
from slr_prune.structured import (
    ChannelGraph,
    SiteMasker,
    WeightNorm,
    load_pruned,
    plan_from_scores,
    save_pruned,
    structured_prune,
    torch_pruning_baseline,
    tp_importance,
)

torch.set_num_threads(1)


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affines, so a forgotten BN bias would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def random_plan(graph: ChannelGraph, keep: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(grp.size, generator=g, dtype=torch.float64) for n, grp in graph.groups.items()}
    return plan_from_scores(scores, {n: max(1, round(keep * grp.size)) for n, grp in graph.groups.items()})


def check_equivalence(model: nn.Module, x: torch.Tensor, keep: float = 0.6, ignored=(), out=lambda y: y):
    """masked (weights zeroed) == masked (feature maps hooked) == physically pruned; costs predicted."""
    graph = ChannelGraph(model, x[:1], ignored)
    plan = random_plan(graph, keep)
    reference = graph.zero_pruned_(plan, model=copy.deepcopy(model)).eval()
    with torch.no_grad():
        want = out(reference(x))
        with SiteMasker(graph) as masker:
            masker.set(plan)
            hooked = out(model(x))
        graph.prune(plan)
        got = out(model(x))
    scale = want.abs().max().item()
    assert got.shape == want.shape
    torch.testing.assert_close(hooked, want, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    measured = cost_summary(model, x[:1])
    assert graph.costs.cost(plan, "macs") == measured["macs"]
    assert graph.costs.cost(plan, "params") == measured["params"]
    assert measured["params"] < sum(p.numel() for p in reference.parameters())
    return graph, plan


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "resnet56"])
def test_pruned_equals_masked(name):
    torch.manual_seed(0)
    model = randomise_norms(create_model(name, 10, 32))
    graph, _ = check_equivalence(model, torch.randn(2, 3, 32, 32))
    # every classifier output survives: its group is never a pruning candidate
    assert all(isinstance(m, nn.Linear) for m in graph.output_layers)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_pruned_equals_masked_yolov3_tiny():
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    try:
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel("yolov3-tinyu.yaml", nc=3, verbose=False)
    except Exception as e:  # noqa: BLE001 - any failure to build offline is a skip, said why
        pytest.skip(f"ultralytics could not build yolov3-tinyu.yaml offline: {e}")
    model = randomise_norms(model)
    head = model.model[-1]
    graph, _ = check_equivalence(model, torch.randn(2, 3, 64, 64), ignored=[head], out=lambda y: y[0])
    head_name = graph.names[head]
    assert graph.groups and not any(g.startswith(head_name + ".") for g in graph.groups)  # head outputs stay


def test_graph_groups_and_plan_errors():
    model = create_model("resnet20", 10, 32)
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32), ignored_layers=["layer1.0.conv1"])
    assert "fc" not in graph.groups and "layer1.0.conv1" not in graph.groups
    residual = next(g for g in graph.groups.values() if g.size == 16 and len(g.producers) > 3)
    assert {"conv1", "layer1.0.conv2", "layer1.2.conv2"} <= {m.name for m in residual.producers}
    assert all(isinstance(s.module, nn.BatchNorm2d) for s in residual.sites)
    with pytest.raises(ValueError, match="matches no module"):
        ChannelGraph(model, torch.randn(1, 3, 32, 32), ignored_layers=["nope.*"])
    name = next(iter(graph.groups))
    with pytest.raises(ValueError, match="keeps no channel"):
        graph.check_plan({name: torch.zeros(graph.groups[name].size, dtype=torch.bool)})
    with pytest.raises(ValueError, match="entries"):
        graph.check_plan({name: torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="does not have"):
        graph.check_plan({"missing": torch.ones(3, dtype=torch.bool)})


def test_save_load_without_pickled_modules(tmp_path):
    torch.manual_seed(0)
    model = randomise_norms(create_model("resnet20", 10, 32))
    x = torch.randn(2, 3, 32, 32)
    result = structured_prune(model, example_input=x[:1], criterion="l2", flops_target=0.5, round_to=4,
                              device="cpu")
    assert result.costs["after"]["macs"] <= 0.5 * result.costs["before"]["macs"]
    assert all(k % 4 == 0 or k == result.sizes[g] for g, k in result.counts.items())
    path = save_pruned(tmp_path / "p.pt", model, {"note": "test"})
    payload = torch.load(path, weights_only=True)  # plain tensors and data, no classes
    assert payload["format"] == "slr_prune/2" and payload["structure"]["modules"]
    fresh, extra = load_pruned(path, create_model("resnet20", 10, 32))
    assert extra == {"note": "test"}
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.eval()(x))
    assert fresh.layer1[0].conv1.out_channels == model.layer1[0].conv1.out_channels < 16
    with pytest.raises(StateError, match="architecture"):
        load_pruned(path, create_model("resnet32", 10, 32))


def test_criteria_as_torch_pruning_importance():
    """Torch-Pruning's own pruner ranking with our scores removes the same channels as our surgery."""
    import torch_pruning as tp

    torch.manual_seed(0)
    ours = randomise_norms(create_model("resnet20", 10, 32))
    theirs = copy.deepcopy(ours)
    x = torch.randn(1, 3, 32, 32)
    graph = ChannelGraph(ours, x)
    scores = WeightNorm(p=1).scores(graph)
    graph.prune(plan_from_scores(scores, {n: int(g.size * 0.5) for n, g in graph.groups.items()}))
    tgraph = ChannelGraph(theirs, x)
    pruner = tp.pruner.MetaPruner(theirs, x, importance=tp_importance(tgraph, WeightNorm(p=1).scores(tgraph)),
                                  pruning_ratio=0.5, ignored_layers=tgraph.output_layers)
    pruner.step()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_torch_pruning_baseline_meets_target():
    model = create_model("digits_cnn", 10, 8, 1)
    out = torch_pruning_baseline(model, torch.randn(1, 1, 8, 8), flops_target=0.5)
    after, before = out["costs"]["after"]["macs"], out["costs"]["before"]["macs"]
    assert after <= 0.5 * before and abs(after / before - out["predicted"]) < 1e-9
    assert model.classifier.out_features == 10


def test_cli_structured_subcommand(tmp_path, capsys):
    from slr_prune.cli import build_parser
    from slr_prune.cli import structured as cli

    parser = build_parser()
    out = tmp_path / "run"
    args = parser.parse_args(["structured", "--model", "digits_cnn", "--dataset", "digits", "--criterion", "nuclear",
                              "--flops-target", "0.6", "--allocation", "convex", "--round-to", "4",
                              "--calibration-batches", "2", "--finetune-epochs", "0", "--latency-repeats", "2",
                              "--device", "cpu", "--no-progress", "--out", str(out)])
    cli.run(args)
    printed = capsys.readouterr().out
    assert "MACs" in printed and "latency ms" in printed and "accuracy" in printed
    report = (out / "report.json").read_text()
    assert '"method": "convex"' in report
    args = parser.parse_args(["structured", "--load", str(out / "pruned.pt"), "--device", "cpu", "--no-latency"])
    cli.run(args)
    assert "accuracy" in capsys.readouterr().out
    with pytest.raises(ValueError, match="exactly one budget"):
        cli.run(parser.parse_args(["structured", "--model", "digits_cnn", "--dataset", "digits", "--device", "cpu",
                                   "--out", str(out)]))


def test_compare_latency_interleaves_and_reports():
    from slr_prune.metrics.latency import compare_latency

    calls: list[str] = []  # held by the closure, so the timing copies of the models append here too

    class Logged(nn.Module):
        def __init__(self, label: str, body: nn.Module):
            super().__init__()
            self.label, self.body = label, body

        def forward(self, x):
            calls.append(self.label)
            return self.body(x)

    small = Logged("small", nn.Conv2d(3, 4, 3))
    big = Logged("big", nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3)))
    stats = compare_latency({"small": small, "big": big}, torch.randn(2, 3, 16, 16), warmup=2, repeats=3)
    # warm-up model by model, then the timed calls in round-robin rounds (small, big, small, big, ...)
    assert calls == ["small", "small", "big", "big"] + ["small", "big"] * 3
    assert set(stats) == {"small", "big"} and stats["small"].repeats == 3 and stats["big"].batch_size == 2
    assert stats["small"].median_ms > 0 and stats["small"].throughput > 0
    with pytest.raises(ValueError, match="repeats"):
        compare_latency({"m": small}, torch.randn(1, 3, 8, 8), repeats=0)


def test_export_of_a_structured_resnet20(tmp_path, capsys):
    from slr_prune.cli import main

    out = tmp_path / "s"
    assert main(["structured", "--model", "resnet20", "--criterion", "l1", "--flops-target", "0.5",
                 "--finetune-epochs", "0", "--no-latency", "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    for fmt in ("state_dict", "onnx"):
        code = main(["export", "--checkpoint", str(out / "pruned.pt"), "--format", fmt, "--out", str(tmp_path / "x")])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "exported structured model" in captured.out and "— match" in captured.out
    assert main(["export", "--checkpoint", str(out / "pruned.pt"), "--format", "ultralytics",
                 "--out", str(tmp_path / "x")]) == 2
    assert "is not a detection model" in capsys.readouterr().err


def test_evaluate_and_finetune_accept_a_structured_file(tmp_path, capsys):
    from slr_prune.cli import main
    from slr_prune.structured.record import load_pruned

    out = tmp_path / "s"
    assert main(["structured", "--model", "resnet20", "--criterion", "l2", "--flops-target", "0.5",
                 "--finetune-epochs", "0", "--no-latency", "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "pruned.pt")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["finetune", "--checkpoint", str(out / "pruned.pt"), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "ft")]) == 0
    from slr_prune.models import create_model

    model, extra = load_pruned(tmp_path / "ft" / "finetuned.pt", create_model("resnet20", 10, 8, 1))
    assert "metrics" in extra and sum(p.numel() for p in model.parameters()) < 0.7 * 272474
