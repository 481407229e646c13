"""Channel removal with reconstruction: the shared-channel projection against brute force, the
re-fit against least squares, removal equal to the masked reconstruction, and the workflow's
repair and refusals."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from slr_prune.errors import SpecError
from slr_prune.layerwise import Reconstruction, full_passes, layer_grams
from slr_prune.layerwise.calibration import cross_grams
from slr_prune.layerwise.channels import FREE, PAD, Consumer, SharedChannels, consumer_columns, solve_channels
from slr_prune.models.cifar_resnet import CifarResNet
from slr_prune.structured import Calibration, ChannelGraph, make_criterion, reconstruct_channels, structured_prune

torch.set_num_threads(1)


def resnet20() -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet(20, num_classes=10, in_channels=1)


def test_shared_channels_projection_is_exact():
    """The mask is the support of the nearest point: brute force over every k-subset of channels."""
    torch.manual_seed(0)
    columns = torch.tensor([[0, 1, 2, 3, FREE, PAD], [3, 3, 2, 1, 0, FREE]])
    rows = torch.tensor([[True, True, True], [True, True, False]])
    w = torch.randn(2, 3, 6, dtype=torch.float64) * rows.unsqueeze(-1)
    s = SharedChannels(columns, rows, size=4, keep=2)
    best = min((float(((w - w * s.expand(torch.tensor([c in keep for c in range(4)]))) ** 2).sum()), keep)
               for keep in itertools.combinations(range(4), 2))
    got = s.mask(w)
    assert float(((w - w * got) ** 2).sum()) == pytest.approx(best[0])
    assert s.chosen(got).tolist() == [c in best[1] for c in range(4)]
    assert got[0, :, 5].any().item() is False and got[1, :2, 5].all().item() is True  # PAD never, FREE always
    assert got[1, 2].any().item() is False  # a padding row


def test_consumer_columns_of_conv_and_linear():
    conv = nn.Conv2d(4, 2, 3)
    cols = consumer_columns(conv, torch.tensor([1, 3]), torch.tensor([0, 1]))
    assert cols.tolist() == [FREE] * 9 + [0] * 9 + [FREE] * 9 + [1] * 9
    lin = nn.Linear(3, 2)
    assert consumer_columns(lin, torch.tensor([2, 0]), torch.tensor([5, 6])).tolist() == [6, FREE, 5]
    with pytest.raises(ValueError, match="grouped convolution"):
        consumer_columns(nn.Conv2d(4, 4, 3, groups=2), torch.tensor([0]), torch.tensor([0]))


def _consumer(seed: int = 0, rows: int = 5, channels: int = 6) -> Consumer:
    torch.manual_seed(seed)
    layer = nn.Linear(channels, rows).double()
    x = torch.randn(64, channels, dtype=torch.float64) @ torch.randn(channels, channels, dtype=torch.float64)
    H = (x.T @ x).unsqueeze(0)
    return Consumer("fc", layer, torch.arange(channels), H)


def test_given_support_is_refitted_by_least_squares():
    c = _consumer()
    keep = torch.tensor([True, False, True, True, False, True])
    config = Reconstruction(damping=1e-9)
    sol = solve_channels([c], 6, keep, config)
    H, W = c.H[0], c.module.weight.detach().double()
    k = keep.nonzero().flatten()
    # normal equations on the kept columns: W′_k H_kk = W H_:k
    want = torch.linalg.solve(H[k][:, k], (W @ H[:, k]).T).T
    torch.testing.assert_close(sol.weights[0][:, k], want, rtol=1e-5, atol=1e-7)
    assert (sol.weights[0][:, ~keep] == 0).all()
    assert sol.keep.tolist() == keep.tolist()


def test_slr_support_beats_the_projection_and_finds_the_brute_force_optimum():
    """Three channels of six kept, two consumers: SLR's re-fitted error is at most the projection's
    and, on this small instance, equal to the best of all 20 supports (ADMM's is not: 0.099 against
    0.088 for the projection + least squares, measured)."""
    a, b = _consumer(1), _consumer(2, rows=3)
    config = Reconstruction("slr", damping=1e-6)
    sol = solve_channels([a, b], 6, 3, config)
    by_projection = solve_channels([a, b], 6, 3, Reconstruction("magnitude", damping=1e-6))
    assert sol.error <= by_projection.error + 1e-12
    best = min(solve_channels([a, b], 6, torch.tensor([c in keep for c in range(6)]), config).error
               for keep in itertools.combinations(range(6), 3))
    assert sol.error == pytest.approx(best, rel=1e-6)


def test_obs_cannot_choose_channels():
    with pytest.raises(SpecError, match="obs"):
        make_criterion("layerwise", layer_solver="obs")
    with pytest.raises(ValueError, match="target"):
        make_criterion("layerwise", target="teacher")


def _digits_batches(n: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(16, 1, 8, 8) for _ in range(n)]


def _trained_bn(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Give the BatchNorms real running statistics (a random network's are 0/1)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            for x in batches:
                model(x)
    return model.eval()


def test_cross_grams_of_an_unchanged_network_equal_its_grams():
    batches = _digits_batches(2)
    model = _trained_bn(resnet20(), batches)
    dense = copy.deepcopy(model)
    layers = [model.layer1[0].conv1, model.fc]
    got = cross_grams(model, dense, layers, [dense.layer1[0].conv1, dense.fc], batches, lambda m, b: m(b))
    want = layer_grams(model, layers, full_passes(model, batches, lambda m, b: m(b)))
    for (H, B, n), (H2, n2) in zip(got, want, strict=True):
        torch.testing.assert_close(H, H2)
        torch.testing.assert_close(B, H2)
        assert n == n2


@pytest.mark.slow
@pytest.mark.parametrize("target", ["dense", "current"])
def test_physical_removal_equals_the_masked_reconstruction(target):
    """After `reconstruct_channels`, the model (zeroed filters, re-fitted consumers) and the
    physically smaller model compute the same function."""
    batches = _digits_batches()
    model = _trained_bn(resnet20(), batches)
    graph = ChannelGraph(model, batches[0][:1])
    counts = {g: max(1, grp.size // 2) for g, grp in graph.groups.items()}
    config = Reconstruction("slr", damping=0.01, options={"iterations": 20}, target=target)
    plan, records = reconstruct_channels(graph, Calibration(batches), config, counts=counts, log=None)
    assert set(plan) == set(counts) and all(int(plan[g].sum()) == counts[g] for g in plan)
    assert all(r["error"] <= r["error_projection"] + 1e-9 for r in records)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        masked = model(x)
        graph.prune(plan)
        smaller = model(x)
    torch.testing.assert_close(smaller, masked, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in resnet20().parameters())


def _output_gap(model: nn.Module, dense: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) - dense(x)) ** 2).mean())


@pytest.mark.slow
def test_repair_brings_the_removed_model_closer_to_the_dense_one():
    """l1 at half the MACs: with the re-fit (no BatchNorm re-estimation: no task) the outputs are
    closer to the dense network's than without, on held-out inputs (random data: 0.052 against
    0.068, measured; the digits benchmark has the accuracies)."""
    batches = _digits_batches(4)
    dense = _trained_bn(resnet20(), batches)
    x = torch.randn(32, 1, 8, 8)
    gaps = {}
    for repair in (False, True):
        model = copy.deepcopy(dense)
        result = structured_prune(model, example_input=batches[0][:1], criterion="l1", flops_target=0.5,
                                  round_to=1, repair=repair, calibration=Calibration(batches), device="cpu")
        assert result.repair is repair and bool(result.layers) is repair
        gaps[repair] = _output_gap(model, dense, x)
    assert gaps[True] < gaps[False]


@pytest.mark.slow
def test_layerwise_criterion_through_the_workflow():
    batches = _digits_batches(4)
    dense = _trained_bn(resnet20(), batches)
    model = copy.deepcopy(dense)
    result = structured_prune(model, example_input=batches[0][:1], criterion="layerwise", flops_target=0.5,
                              round_to=1, calibration=Calibration(batches), device="cpu",
                              criterion_options={"layer_options": {"iterations": 20}})
    assert result.costs["macs_ratio"] >= 1.95
    assert result.criterion["name"] == "layerwise" and result.layers
    assert "refit" not in result.seconds  # the criterion re-fits as it chooses; no second pass
    l1 = copy.deepcopy(dense)
    structured_prune(l1, example_input=batches[0][:1], criterion="l1", flops_target=0.5, round_to=1,
                     repair=False, device="cpu")
    x = torch.randn(32, 1, 8, 8)
    assert _output_gap(model, dense, x) < _output_gap(l1, dense, x)


def test_refusals_before_any_data_is_read():
    model = resnet20()
    x = torch.randn(1, 1, 8, 8)

    def never(model: nn.Module, batch: object) -> None:
        raise AssertionError("a calibration pass ran before the refusal")

    with pytest.raises(ValueError, match="out of reach"):
        structured_prune(model, example_input=x, criterion="layerwise", flops_target=0.001,
                         calibration=Calibration([x], run=never), device="cpu")
    with pytest.raises(ValueError, match="curves.*not per-layer ratios"):
        structured_prune(model, example_input=x, criterion="l1", ratios={"*": 0.5}, allocation="curves",
                         device="cpu")
    with pytest.raises(ValueError, match="allocation 'dp'"):
        structured_prune(model, example_input=x, criterion="l1", flops_target=0.5, allocation="dp", device="cpu")
    with pytest.raises(ValueError, match="repair"):
        structured_prune(model, example_input=x, criterion="l1", flops_target=0.5, repair="yes", device="cpu")


@pytest.mark.slow
def test_cli_layerwise_removal_reports_both_metrics(tmp_path, capsys):
    import json

    from slr_prune.cli import main

    out = tmp_path / "s"
    assert main(["structured", "--model", "resnet20", "--criterion", "layerwise", "--flops-target", "0.5",
                 "--finetune-epochs", "0", "--calibration-batches", "2", "--bn-batches", "2", "--no-latency",
                 "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "BatchNorm re-estimated" in printed and "consumers re-fitted" in printed
    report = json.loads((out / "report.json").read_text())["results"]
    assert report["repair"] is True and report["pruned_bn"] and report["criterion"]["name"] == "layerwise"
    assert report["costs"]["macs_ratio"] >= 1.9 and len(report["layers"]) == 12
    assert "conv1 8/16" in printed and (out / "allocation.png").stat().st_size > 1000


def test_column_refit_equals_the_conjugate_gradient_refit():
    """A channel support keeps the same columns in every row: the direct solve and `refit` agree."""
    from slr_prune.layerwise import LayerProblem, damped, refit
    from slr_prune.layerwise.channels import refit_columns

    a, b = _consumer(3), _consumer(4, rows=3)
    sets = SharedChannels(torch.stack([a.columns, b.columns]), torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
                          size=6, keep=4)
    W = torch.zeros(2, 5, 6, dtype=torch.float64)
    W[0], W[1, :3] = a.module.weight.detach(), b.module.weight.detach()
    problem = LayerProblem(W, damped(torch.cat([a.H, b.H]), 0.01), sets, W.shape)
    mask = sets.expand(torch.tensor([True, False, True, True, False, True]))
    torch.testing.assert_close(refit_columns(problem, mask), refit(problem, mask, iters=500, tol=1e-28),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.slow
def test_layerwise_removal_on_the_lane_task(tmp_path, monkeypatch):
    """No special case for UFLD: the calibration runs through the task's own forward pass, the head's
    exclusions apply, and the removed model still evaluates with the TuSimple metric."""
    from slr_prune.adapters.lane import LaneTask

    monkeypatch.setenv("SLR_PRUNE_CACHE", str(tmp_path))
    task = LaneTask(image_size=(32, 64), hidden=16, num_row_anchors=8, griding_num=20, batch_size=4, synthetic=(4, 2))
    torch.manual_seed(0)
    model = task.build_model()
    result = structured_prune(model, task, criterion="layerwise", flops_target=0.7, calibration_batches=1,
                              bn_batches=1, device="cpu", criterion_options={"layer_options": {"iterations": 10}},
                              ignored_layers=["model.layer3*", "model.layer4*"])
    assert result.costs["macs_ratio"] > 1.2 and result.repair and result.pruned_bn
    assert set(result.pruned_bn) == set(result.dense)


@pytest.mark.slow
def test_curves_allocation_judges_its_candidates_on_the_stitched_network():
    """The "curves" allocation keeps the candidate (uniform or a convex solution on the error curves)
    of lowest stitched calibration loss, and judging a candidate leaves the model as it was."""
    from slr_prune.structured.workflow import CURVE_GAMMAS, stitched_loss

    batches = _digits_batches(2)
    calibration = Calibration(batches, loss=lambda m, b: (m(b) ** 2).mean())
    model = _trained_bn(resnet20(), batches)
    before = copy.deepcopy(model.state_dict())
    graph = ChannelGraph(model, batches[0][:1])
    scores = make_criterion("l2").scores(graph)
    loss = stitched_loss(graph, calibration, Reconstruction(target="dense"), scores,
                         {g: grp.size // 2 for g, grp in graph.groups.items()})
    assert loss > 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    result = structured_prune(model, example_input=batches[0][:1], criterion="layerwise", flops_target=0.5,
                              round_to=1, allocation="curves", calibration=calibration, device="cpu",
                              criterion_options={"layer_options": {"iterations": 10, "candidates": 0}})
    info = result.allocation["info"]
    assert len(info["candidates"]) == 1 + len(CURVE_GAMMAS)
    assert info["chosen"] == min(info["candidates"], key=info["candidates"].get)
    assert result.costs["macs_ratio"] >= 1.95
