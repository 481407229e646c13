"""Per-layer budgets (engine/allocation.py): every rule meets the overall budget exactly, LAMP and ERK
against hand computations, the cap of `global`, the DP against brute force, the error database's
resume and refusal, prune() and the command line end to end, and bad input refused in one line."""

import copy
import itertools
import json

import pytest
import torch
from test_layerwise import Net, TinyTask
from torch import nn

from slr_prune import PruneSpec, SpecError, StateError
from slr_prune.engine import TrainConfig, prune
from slr_prune.engine.allocation import (
    ALLOCATIONS,
    AllocationContext,
    allocate,
    erk_densities,
    fill,
    knapsack,
    lamp_scores,
)
from slr_prune.engine.error_database import build_database
from slr_prune.layerwise import Reconstruction
from slr_prune.registry import UnknownNameError
from slr_prune.sets import Unstructured

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
WEIGHT_RULES = [r for r in ALLOCATIONS if not ALLOCATIONS.get(r).traits["needs_task"]]


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 4, 10))


def overall(model, sets):
    params = dict(model.named_parameters())
    kept = sum(s.kept(params[n].shape) for n, s in sets.items())
    return kept, sum(params[n].numel() for n in sets)


# ---- every rule meets the budget -----------------------------------------------------------------
@pytest.mark.parametrize("rule", WEIGHT_RULES)
@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.97])
def test_weight_rules_meet_the_overall_budget_exactly(rule, ratio):
    model = small_cnn()
    sets = PruneSpec.uniform(ratio, include_first=True, include_last=True).resolve(model)
    out, record = allocate(model, sets, rule, context=AllocationContext(log=None))
    assert overall(model, out) == overall(model, sets)  # the same weights kept in all: exactly the target
    assert record.sparsity == pytest.approx(record.target, abs=0) and set(record.ratios) == set(sets)
    params = dict(model.named_parameters())
    assert all(out[n].kept(params[n].shape) == record.kept[n] for n in sets)
    if rule != "uniform":
        assert all(type(s) is Unstructured and s.scope == "layer" for s in out.values())


def test_uniform_keeps_any_form_as_it_is():
    model = small_cnn()
    sets = PruneSpec.uniform(0.0, form="2:4", exclude=["0.*"]).resolve(model)
    out, record = allocate(model, sets, "uniform", context=AllocationContext(log=None))
    assert out == sets and record.sparsity == pytest.approx(0.5)


# ---- hand computations --------------------------------------------------------------------------
def test_lamp_scores_and_allocation_match_a_hand_computation():
    w = torch.tensor([1.0, -2.0, 3.0])
    assert torch.allclose(lamp_scores(w), torch.tensor([1 / 14, 4 / 13, 1.0], dtype=torch.float64))
    model = nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(1, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))  # scores 1/14, 4/13, 1
        model[1].weight.copy_(torch.tensor([[0.1], [0.2], [0.3], [10.0]]))  # 1/1.1401.., .04/1.1400.., .09/100.09, 1
    sets = {"0.weight": Unstructured(ratio=4 / 7), "1.weight": Unstructured(ratio=4 / 7)}
    # 3 kept of 7: the two 1.0s first, then 4/13 = 0.31 beats 0.09/100.09, 0.04/100.13, 0.01/100.14 and 1/14
    out, record = allocate(model, sets, "lamp", context=AllocationContext(log=None))
    assert overall(model, sets)[0] == 3 and record.kept == {"0.weight": 2, "1.weight": 1}


def test_erk_densities_match_a_hand_computation_and_cap_dense_layers():
    # Σ dims 12 and 18, sizes 72 and 80; 40 kept: ε = 40 / (12 + 18), densities 12ε/72 and 18ε/80
    assert erk_densities([(4, 2, 3, 3), (10, 8)], 40) == pytest.approx([0.2 + 2 / 90, 0.3])
    # (2, 2) would get 1.25: dense, and the other layer takes the rest: 26 / 100
    assert erk_densities([(2, 2), (10, 10)], 30) == pytest.approx([1.0, 0.26])


def test_global_respects_the_cap_and_redistributes_the_excess():
    model = small_cnn()
    with torch.no_grad():
        model[0].weight.mul_(100.0)  # one threshold alone would keep the first layer whole and strip the others
    sets = PruneSpec.uniform(0.8, include_first=True, include_last=True).resolve(model)
    _, free = allocate(model, sets, "global", {"max_ratio": 0.999}, AllocationContext(log=None))
    _, capped = allocate(model, sets, "global", {"max_ratio": 0.85}, AllocationContext(log=None))
    assert free.kept["0.weight"] == 216 and min(free.ratios["2.weight"], free.ratios["4.weight"]) > 0.85
    # at the cap, the two small-weight layers keep their floors; the excess goes to the first layer
    budget = overall(model, sets)[0]
    assert capped.kept == {"0.weight": budget - 173 - 96, "2.weight": 173, "4.weight": 96}
    assert capped.sparsity == capped.target and capped.info["capped"] == 2


# ---- the DP ---------------------------------------------------------------------------------------
def test_knapsack_finds_the_brute_force_optimum():
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        costs = [sorted(torch.randint(1, 30, (4,), generator=g).tolist()) for _ in range(4)]
        errors = [sorted(torch.rand(4, generator=g).tolist(), reverse=True) for _ in range(4)]
        budget = int(torch.randint(4, 80, (1,), generator=g))
        fits = [p for p in itertools.product(range(4), repeat=4) if sum(costs[i][j] for i, j in enumerate(p)) <= budget]
        if not fits:
            with pytest.raises(ValueError, match="no choice of options fits"):
                knapsack(costs, errors, budget)
            continue
        best = min(sum(errors[i][j] for i, j in enumerate(p)) for p in fits)
        picked = knapsack(costs, errors, budget)
        assert sum(costs[i][j] for i, j in enumerate(picked)) <= budget
        assert sum(errors[i][j] for i, j in enumerate(picked)) == pytest.approx(best)
    # a coarse budget (units of 22 weights, costs rounded up) always fits, at the price of exactness
    assert knapsack([[100, 50], [100, 50]], [[0.0, 1.0], [0.0, 2.0]], 150, resolution=7) == [1, 1]
    assert knapsack([[100, 50], [100, 50]], [[0.0, 1.0], [0.0, 2.0]], 150) == [1, 0]


def test_fill_spends_the_budget_on_the_steepest_segments():
    points = [[(10, 0.0), (5, 1.0), (2, 3.0)], [(10, 0.0), (5, 0.2), (2, 0.4)]]
    assert fill(points, [2, 2], 4) == [2, 2]
    assert fill(points, [2, 2], 9) == [7, 2]  # layer 0's 2→5 segment (2/3 per weight) first, then 1/5 per weight
    assert sum(fill(points, [2, 2], 20)) == 20


# ---- the error database -----------------------------------------------------------------------------
def test_database_resumes_after_an_interruption_and_refuses_other_settings(tmp_path):
    torch.manual_seed(0)
    model, task = Net(), TinyTask()
    names = list(PruneSpec.uniform(0.5).resolve(model))
    config = Reconstruction("slr", 2, options={"iterations": 5})
    grid = (0.5, 0.9)
    whole = build_database(model, task, names, grid, config, device=CPU, log=None)

    class Stop(Exception):
        pass

    def stop_after_two(line):
        if "database 2/" in line:
            raise Stop

    path = tmp_path / "allocation.pt"
    with pytest.raises(Stop):
        build_database(model, task, names, grid, config, device=CPU, path=path, log=stop_after_two)
    lines = []
    again = build_database(model, task, names, grid, config, device=CPU, path=path, resume=True, log=lines.append)
    assert "has 2 of 3 layers" in lines[0] and again.solved == 1
    for n in names:
        assert again.curves[n].errors == pytest.approx(whole.curves[n].errors)
        assert all(torch.equal(again.curves[n].weights[r], whole.curves[n].weights[r]) for r in grid)
    with pytest.raises(StateError, match="other settings.*grid"):
        build_database(model, task, names, (0.5, 0.8), config, device=CPU, path=path, resume=True, log=None)


def test_curves_through_prune_meets_the_target_and_records_the_ratios(tmp_path):
    torch.manual_seed(0)
    task, dense = TinyTask(), Net()
    zero = TrainConfig(epochs=0, device="cpu", progress=False)
    result = prune(copy.deepcopy(dense), task, PruneSpec.uniform(0.8), "layerwise", train=zero, bn_batches=2,
                   solver_options={"calibration_batches": 2, "layer_options": {"iterations": 10}},
                   allocation="curves", allocation_options={"iterations": 5}, out_dir=tmp_path)
    alloc = result.allocation
    assert alloc["rule"] == "curves" and alloc["sparsity"] == pytest.approx(alloc["target"], abs=0)
    assert result.sparsity == pytest.approx(alloc["sparsity"])
    assert len(alloc["info"]["candidates"]) == 3 and alloc["info"]["database_layers_solved"] == 3
    assert len(set(alloc["ratios"].values())) > 1  # not uniform
    assert (tmp_path / "allocation.pt").is_file()
    saved = torch.load(tmp_path / "pruned.pt", weights_only=True)
    assert saved["result"]["allocation"]["ratios"] == alloc["ratios"]
    assert saved["provenance"]["settings"]["allocation"]["rule"] == "curves"


# ---- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,rule,options,match", [
    (PruneSpec.uniform(0.0, form="2:4", exclude=["0.*"]), "lamp", None, "allocation 'lamp' needs unstructured sets"),
    (PruneSpec.uniform(0.5, form="filter"), "erk", None, "needs unstructured sets; 2.weight is filter"),
    (PruneSpec.global_budget(0.5), "global", None, "replaces the global budget's one threshold"),
    (PruneSpec.uniform(0.95), "curves", {"grid": (0.5, 0.9)}, "above the largest grid ratio 0.9"),
    (PruneSpec.uniform(0.5), "curves", {"grid": (0.5, 1.0)}, "ratio 1.0 is outside"),
    (PruneSpec.uniform(0.5), "curves", {"iterations": 0}, "iterations must be an integer"),
    (PruneSpec.uniform(0.9), "global", {"max_ratio": 0.8}, "cap 0.8 is below the overall target"),
    (PruneSpec.uniform(0.5), "lamp", {"max_ratio": 0.8}, "unknown option 'max_ratio'"),
])
def test_bad_input_is_refused_before_any_compute(spec, rule, options, match):
    model = small_cnn()
    with pytest.raises(SpecError, match=match):
        allocate(model, spec.resolve(model), rule, options, AllocationContext(task=TinyTask(), log=None))


def test_prune_refuses_before_any_compute():
    class Untouchable(TinyTask):
        def evaluate(self, model, device):
            raise AssertionError("computed before the refusal")

    with pytest.raises(UnknownNameError, match="unknown allocation 'bogus'; choose one of uniform, global"):
        prune(Net(), Untouchable(), PruneSpec.uniform(0.5), "magnitude", allocation="bogus")
    with pytest.raises(SpecError, match="needs unstructured sets"):
        prune(Net(), Untouchable(), PruneSpec.uniform(0.5, form="filter"), "magnitude", allocation="lamp")


@pytest.mark.parametrize("argv,match", [
    (["--form", "2:4", "--allocation", "lamp"], "allocation 'lamp' needs unstructured sets"),
    (["--ratio", "0.5", "--global-budget", "--allocation", "global"], "give one of them"),
    (["--ratio", "0.95", "--allocation", "curves", "--allocation-grid", "0.5,0.9"], "above the largest grid ratio"),
    (["--ratio", "0.5", "--allocation", "curves", "--allocation-grid", "0.5,1"], "outside (0, 1)"),
    (["--ratio", "0.95", "--allocation", "global", "--allocation-cap", "0.9"], "cap 0.9 is below the overall"),
    (["--ratio", "0.5", "--allocation", "lamp", "--allocation-cap", "0.9"],
     "--allocation-cap applies to --allocation global"),
])
def test_cli_refusals_exit_2_with_one_line(argv, match, tmp_path, capsys):
    from slr_prune.cli import main

    code = main(["prune", "--method", "magnitude", *argv, "--out", str(tmp_path / "x"), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert code == 2 and len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_curves_with_layerwise_records_the_ratios_in_report_json(tmp_path, capsys):
    from slr_prune.cli import main

    out = tmp_path / "run"
    assert main(["prune", "--method", "layerwise", "--ratio", "0.9", "--allocation", "curves", "--allocation-grid",
                 "0.5,0.8,0.9,0.95", "--allocation-iterations", "5", "--calibration-batches", "1", "--bn-batches", "2",
                 "--finetune-epochs", "0", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "allocation curves: 90.00% of" in printed and "per-layer ratios:" in printed
    report = json.loads((out / "report.json").read_text())
    alloc = report["results"][0]["allocation"]
    assert alloc["rule"] == "curves" and len(alloc["ratios"]) >= 2 and alloc["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert report["settings"]["options"]["allocation"] == "curves"
    assert report["settings"]["allocation"]["options"]["grid"] == [0.5, 0.8, 0.9, 0.95]
    assert (out / "allocation.png").is_file() and (out / "allocation.pt").is_file()
