"""Filter criteria against direct float64 computations, and the linear-filter-ensemble ranking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slr_prune.structured import (
    CHIP,
    Calibration,
    ChannelGraph,
    LinearFilterEnsemble,
    NuclearNorm,
    SolverCriterion,
    WeightNorm,
    chip_scores,
    make_criterion,
    nuclear_scores,
    plan_from_scores,
)
from slr_prune.structured.criteria import fit_linear_model

torch.set_num_threads(1)


def nuc(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord="nuc"))


def direct_chip(fmap: torch.Tensor) -> torch.Tensor:
    """Per image, ‖A‖_* minus ‖A with row c deleted‖_*, by brute force in float64."""
    a = fmap.double().reshape(fmap.shape[0], fmap.shape[1], -1)
    out = torch.zeros(a.shape[0], a.shape[1], dtype=torch.float64)
    for n in range(a.shape[0]):
        full = nuc(a[n])
        for c in range(a.shape[1]):
            out[n, c] = full - nuc(torch.cat([a[n, :c], a[n, c + 1:]]))
    return out


@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (2, 10, 2, 2), (4, 5, 7), (3, 6)])
def test_chip_matches_direct_float64(shape):
    torch.manual_seed(0)
    fmap = torch.relu(torch.randn(*shape, dtype=torch.float64))
    want = direct_chip(fmap)
    torch.testing.assert_close(chip_scores(fmap), want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(chip_scores(fmap.float()).double(), want, rtol=1e-4, atol=1e-4)


def test_chip_duplicate_rows_and_zero_rows():
    """A zero row removes nothing; removing one of two identical rows loses (2 − √2)·‖row‖."""
    fmap = torch.randn(1, 4, 9, dtype=torch.float64)
    fmap[0, 1] = 0
    fmap[0, 3] = fmap[0, 2]
    ci = chip_scores(fmap, max_elements=4)  # also exercises chunking
    torch.testing.assert_close(ci, direct_chip(fmap))
    assert abs(float(ci[0, 1])) < 1e-12


def test_nuclear_readings_match_direct_float64():
    torch.manual_seed(1)
    fmap = torch.randn(5, 3, 4, 6, dtype=torch.float64)
    batch = torch.tensor([nuc(fmap[:, c].reshape(5, -1)) for c in range(3)], dtype=torch.float64)
    image = torch.tensor([sum(nuc(fmap[n, c]) for n in range(5)) / 5 for c in range(3)], dtype=torch.float64)
    torch.testing.assert_close(nuclear_scores(fmap, "batch"), batch)
    torch.testing.assert_close(nuclear_scores(fmap, "image"), image)
    with pytest.raises(ValueError, match="reading"):
        nuclear_scores(fmap, "rows")


class TwoConv(nn.Module):
    def __init__(self, act: nn.Module | None = None, c1: int = 6, c2: int = 5, out: int = 4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2)
        self.act = act or nn.ReLU()
        self.fc = nn.Linear(c2, out)

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def site_outputs(model: nn.Module, module: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    seen = []
    h = module.register_forward_hook(lambda m, a, o: seen.append(torch.relu(o.detach().double())))
    with torch.no_grad():
        for x in batches:
            model(x)
    h.remove()
    return seen


def test_feature_criteria_stream_the_direct_scores():
    """Hooked, streamed scores equal the direct float64 computation over all calibration images."""
    torch.manual_seed(0)
    model = TwoConv().eval()
    batches = [torch.randn(3, 3, 6, 6), torch.randn(3, 3, 6, 6)]
    graph = ChannelGraph(model, batches[0][:1])
    assert set(graph.groups) == {"conv1", "conv2"}
    calib = Calibration(batches)
    for name, bn in (("conv1", model.bn1), ("conv2", model.bn2)):
        maps = site_outputs(model, bn, batches)
        chip_want = torch.cat([direct_chip(m) for m in maps]).mean(0)
        nuc_want = torch.stack([nuclear_scores(m, "batch") for m in maps]).mean(0)
        img_want = torch.cat([torch.stack([torch.tensor([nuc(m[n, c]) for c in range(m.shape[1])])
                                           for n in range(m.shape[0])]) for m in maps]).mean(0)
        torch.testing.assert_close(CHIP(dtype=torch.float64).scores(graph, calib)[name], chip_want)
        torch.testing.assert_close(CHIP().scores(graph, calib)[name], chip_want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(NuclearNorm(dtype=torch.float64).scores(graph, calib)[name], nuc_want)
        torch.testing.assert_close(NuclearNorm("image", dtype=torch.float64).scores(graph, calib)[name],
                                   img_want.double())


def test_weight_norms_average_over_coupled_producers():
    from slr_prune.models import create_model

    model = create_model("resnet20", 10, 32)
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32))
    for p in (1, 2):
        scores = WeightNorm(p=p).scores(graph)
        for name, group in graph.groups.items():
            rows = torch.stack([m.module.weight.detach().double().flatten(1).norm(p=p, dim=1)
                                for m in group.producers])
            torch.testing.assert_close(scores[name], rows.mean(0), rtol=1e-5, atol=1e-6)
    assert any(len(g.producers) > 1 for g in graph.groups.values())  # residual groups were exercised


def test_fit_linear_model_recovers_coefficients_and_cvxpy_agrees():
    g = torch.Generator().manual_seed(0)
    beta = torch.randn(10, generator=g, dtype=torch.float64)
    z = (torch.rand(400, 10, generator=g) < 0.7).double()
    y = 2.0 + z @ beta + 0.01 * torch.randn(400, generator=g, dtype=torch.float64)
    est, intercept = fit_linear_model(z, y, ridge=1e-6)
    torch.testing.assert_close(est, beta, atol=0.01, rtol=0)
    assert abs(intercept - 2.0) < 0.02
    for k in (8, 40):  # K < F and K > F take different closed forms
        closed, b0 = fit_linear_model(z[:k], y[:k], ridge=0.1)
        conic, c0 = fit_linear_model(z[:k], y[:k], ridge=0.1, solver="cvxpy")
        torch.testing.assert_close(conic, closed, atol=1e-4, rtol=1e-4)
        assert abs(b0 - c0) < 1e-4
    signed, _ = fit_linear_model(z[:40], y[:40], ridge=0.1, solver="cvxpy", nonpositive=True)
    assert (signed <= 1e-7).all()
    with pytest.raises(ValueError, match="cvxpy"):
        fit_linear_model(z, y, nonpositive=True)


def planted_network(seed: int = 1) -> tuple[nn.Module, list[int], list[int]]:
    """conv(3→8)-BN-tanh-conv(8→8)-BN-tanh-mean-fc(8→8 = 2·I); two filters per group feed nothing."""
    torch.manual_seed(seed)
    model = TwoConv(act=nn.Tanh(), c1=8, c2=8, out=8).eval()
    useless1, useless2 = [1, 6], [0, 5]
    with torch.no_grad():
        for conv in (model.conv1, model.conv2):
            conv.weight.normal_(0, conv.weight[0].numel() ** -0.5)
        model.fc.weight.copy_(2 * torch.eye(8))
        model.bn1.bias.fill_(0.5)
        model.bn2.bias.fill_(0.5)
        model.conv2.weight[:, useless1] = 0  # conv1 filters 1 and 6 feed nothing
        model.fc.weight[:, useless2] = 0  # conv2 filters 0 and 5 feed nothing
    return model, useless1, useless2


def teacher_calibration(model: nn.Module) -> Calibration:
    """The loss is the MSE to the intact network's outputs: 0 when whole, > 0 once a used filter goes."""
    x = torch.randn(32, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher = model(x)
    return Calibration([(x, teacher)], loss=lambda m, b: F.mse_loss(m(b[0]), b[1]))


def test_linear_filter_ensemble_ranks_planted_useless_filters_last():
    model, useless1, useless2 = planted_network()
    calib = teacher_calibration(model)
    graph = ChannelGraph(model, calib.batches[0][0][:1])
    scores = LinearFilterEnsemble(samples=300, keep_prob=0.8, seed=0).scores(graph, calib)
    for name, planted in (("conv1", useless1), ("conv2", useless2)):
        assert set(scores[name].argsort()[:2].tolist()) == set(planted), scores[name]
    every = torch.cat([scores["conv1"], scores["conv2"]])
    assert set(every.argsort()[:4].tolist()) == {1, 6, 8 + 0, 8 + 5}
    plan = plan_from_scores(scores, {"conv1": 6, "conv2": 6})
    assert not plan["conv1"][useless1].any() and int(plan["conv1"].sum()) == 6
    with pytest.raises(ValueError, match="loss"):
        LinearFilterEnsemble().scores(graph, Calibration([calib.batches[0][0]]))


def test_linear_filter_ensemble_is_exact_when_the_loss_is_additive():
    """conv2's filters reach separate outputs, so the loss is linear in their mask: −β_i must equal
    the loss rise of removing filter i alone (0 for the planted ones)."""
    from slr_prune.structured import SiteMasker

    model, _, useless2 = planted_network()
    calib = teacher_calibration(model)
    graph = ChannelGraph(model, calib.batches[0][0][:1])
    lfe = LinearFilterEnsemble(samples=64, keep_prob=0.5, ridge=1e-9, scope="group", seed=3)
    scores = lfe.scores(graph, calib)["conv2"]
    single = []
    with SiteMasker(graph) as masker:
        for i in range(8):
            keep = torch.ones(8, dtype=torch.bool)
            keep[i] = False
            masker.set({"conv2": keep})
            single.append(calib.mean_loss(model))
    torch.testing.assert_close(scores, torch.tensor(single, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    assert set(scores.argsort()[:2].tolist()) == set(useless2)


def test_solver_criterion_scores_zero_for_hard_pruned_filters():
    from slr_prune.adapters import ClassificationTask
    from slr_prune.engine import TrainConfig

    task = ClassificationTask(model="digits_cnn", dataset="digits")
    model = task.build_model()
    graph = ChannelGraph(model, task.example_input())
    counts = {n: g.size // 2 for n, g in graph.groups.items()}
    crit = SolverCriterion("slr", task, TrainConfig(epochs=1, lr=0.01, progress=False, device="cpu"))
    spec = crit.spec(graph, counts)
    assert {r.pattern for r in spec.rules} == {f"{n}.weight" for n in graph.groups}
    scores = crit.scores(graph, counts=counts)
    for name, k in counts.items():
        assert int((scores[name] == 0).sum()) == graph.groups[name].size - k
        assert (plan_from_scores(scores, counts)[name] == (scores[name] > 0)).all()


def test_make_criterion_errors():
    with pytest.raises(ValueError, match="unknown criterion"):
        make_criterion("hrank")
    with pytest.raises(ValueError, match="bad option"):
        make_criterion("chip", samples=3)
    with pytest.raises(ValueError, match="activation"):
        make_criterion("nuclear", activation="gelu")
    graph = ChannelGraph(TwoConv().eval(), torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="calibration"):
        CHIP().scores(graph)
