"""The solver options of the study (step scale, step cap, update_every, residual-balanced ρ),
gradual magnitude that masks weights, and bit-identical runs from one seed."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slr_prune import ADMM, SLR, Magnitude, PruneSpec, probe_closure
from slr_prune.adapters import ClassificationTask
from slr_prune.engine import TrainConfig, Trainer, prune


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def spec(ratio: float = 0.75) -> PruneSpec:
    return PruneSpec.uniform(ratio, include_first=True, include_last=True)


def batches(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(32, 8, generator=g)
        out.append((x, x[:, :3].argmax(1)))
    return out


def gapped(model: nn.Module, ratio: float = 0.75) -> nn.Module:
    """Shrink the weights the projection drops 100×: a Z-step from these weights plus a multiplier
    shift of at most their own size keeps the same support and returns Z itself, so surrogate
    condition 2 (a strict decrease of the penalty) fails by construction."""
    dropped = SLR(model, spec(ratio))
    with torch.no_grad():
        for p, z in zip(dropped.params, dropped.Z, strict=True):
            p.mul_(torch.where(z == 0, 0.01, 1.0))
    return model


def sgd_steps(model, solver, data, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for x, y in data:
        F.cross_entropy(model(x), y).backward()
        solver.add_penalty_grad_()
        opt.step()
        solver.after_optimizer_step_()
        opt.zero_grad()


def test_step_scale_rho_measures_the_dual_step_in_units_of_rho():
    model = gapped(mlp())  # condition 2 fails: only condition 1's multiplier step is taken
    rel = SLR(model, spec(), rho=0.3, s0=1.0, step_scale="rho")
    absolute = SLR(model, spec(), rho=0.3, s0=1.0)
    assert rel.dual_step() == pytest.approx(0.3) and absolute.dual_step() == pytest.approx(1.0)
    lam_before = [t.clone() for t in rel.Lam]
    W = [p.detach().clone() for p in rel.params]
    Z = [z.clone() for z in rel.Z]
    record = rel.step(probe_closure(model, batches(2, seed=1), nn.CrossEntropyLoss()))
    assert record["cond1"]  # forced at k = 1
    assert not record["cond2"]
    assert all(bool((w != z).any()) for w, z in zip(W, Z, strict=True))  # so the step moves every Λ
    # Λ moved by exactly one step s·ρ·(W − Z)
    for lam, lam0, w, z in zip(rel.Lam, lam_before, W, Z, strict=True):
        torch.testing.assert_close(lam - lam0, record["dual_step"] * (w - z))
    assert record["dual_step"] == pytest.approx(rel.s * record["rho"])


def test_s_max_caps_the_step_size():
    model = mlp()
    solver = SLR(model, spec(), rho=0.5, s0=0.5, s_max=0.5, step_scale="rho")
    closure = probe_closure(model, batches(2), nn.CrossEntropyLoss())
    for _ in range(5):
        sgd_steps(model, solver, batches())
        solver.step(closure)
        assert solver.s <= 0.5


@pytest.mark.parametrize("bad", [{"step_scale": "huge"}, {"s_max": 0.001}, {"update_every": -1},
                                 {"rho_balance": 0.5}, {"rho_max": 0.01}])
def test_invalid_options_are_refused(bad):
    with pytest.raises(ValueError):
        SLR(mlp(), spec(), **bad)


def test_residual_balancing_raises_rho_when_the_primal_residual_dominates():
    model = mlp()
    solver = ADMM(model, spec(0.9), rho=0.01, rho_growth=2.0, rho_balance=10.0)
    solver.step()  # first update: Z barely moves, W far from Z → primal ≫ dual
    assert solver.rho == pytest.approx(0.02)
    solver._grow_rho(primal=1.0, dual=100.0)  # the reverse: ρ falls
    assert solver.rho == pytest.approx(0.01)
    solver._grow_rho(primal=1.0, dual=2.0)  # balanced within μ: ρ stays
    assert solver.rho == pytest.approx(0.01)


def test_update_every_runs_the_solver_every_k_minibatches():
    task = ClassificationTask(batch_size=128)
    model = task.build_model()
    solver = ADMM(model, PruneSpec.uniform(0.8), update_every=3)
    Trainer(task, model, TrainConfig(epochs=2, lr=0.01, progress=False, probe_batches=1), solver=solver).fit()
    per_epoch = len(task.train_loader()) // 3
    assert solver.updates == 2 * per_epoch and per_epoch > 1


def test_gradual_magnitude_keeps_pruned_weights_at_zero_under_momentum():
    model = mlp()
    solver = Magnitude(model, spec(0.8), schedule="cubic", steps=3)
    for _ in range(3):
        sgd_steps(model, solver, batches())
        solver.step()
        pruned = [~m for m in solver.current]
        sgd_steps(model, solver, batches(seed=7))  # momentum from earlier steps would regrow them
        for p, m in zip(solver.params, pruned, strict=True):
            assert torch.count_nonzero(p.detach()[m]) == 0


def test_the_same_seed_gives_a_bit_identical_slr_run():
    task = ClassificationTask(batch_size=128)
    torch.manual_seed(0)
    dense = task.build_model()

    def run():
        torch.manual_seed(123)  # a different global state before each run must not matter
        model = copy.deepcopy(dense)
        result = prune(model, task, PruneSpec.uniform(0.8), "slr",
                       train=TrainConfig(epochs=2, lr=0.02, progress=False, probe_batches=2, seed=4),
                       solver_options={"rho": 0.2, "rho_growth": 1.5}, bn_batches=2)
        return model, result

    (ma, a), (mb, b) = run(), run()
    assert a.epochs[-1]["solver"] == b.epochs[-1]["solver"]
    assert a.hard_prune_bn == b.hard_prune_bn
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_probe_batches_do_not_depend_on_the_global_random_state():
    task = ClassificationTask(batch_size=64)
    torch.manual_seed(1)
    a = task.probe_batches(2, seed=3)
    torch.manual_seed(2)
    b = task.probe_batches(2, seed=3)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_ramp_raises_the_z_sparsity_on_the_cubic_schedule_and_hard_prune_hits_the_target():
    from slr_prune.sets import n_keep

    model = mlp()
    solver = ADMM(model, spec(0.8), rho=0.1, ramp=3)
    n = [p.numel() for p in solver.params]
    assert all(int((z != 0).sum()) == k for z, k in zip(solver.Z, n, strict=True))  # 0% at the start
    for t in (1, 2, 3, 4):
        solver.step()
        ratio = 0.8 * (1 - (1 - min(t, 3) / 3) ** 3)
        assert [int((z != 0).sum()) for z in solver.Z] == [n_keep(ratio, k) for k in n]
    masks = solver.hard_prune()
    assert [int(m.sum()) for m in masks.values()] == [n_keep(0.8, k) for k in n]


def test_updates_per_epoch_and_rho_end_plan_the_run():
    task = ClassificationTask(batch_size=128)
    model = task.build_model()
    solver = SLR(model, PruneSpec.uniform(0.8), rho=0.1, rho_end=10.0, updates_per_epoch=3)
    batches = len(task.train_loader())
    Trainer(task, model, TrainConfig(epochs=2, lr=0.01, progress=False, probe_batches=1), solver=solver).fit()
    assert len(solver.history) == 2 * 3  # exactly 3 per epoch, whatever the epoch's length
    due = [i for i in range(1, batches + 1) if solver.due(i)]
    assert len(due) == 3 and due[-1] == batches
    assert solver.history[0]["rho"] == pytest.approx(0.1) and solver.history[-1]["rho"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="rho_end"):
        SLR(model, PruneSpec.uniform(0.8), rho=0.1, rho_end=10.0, rho_growth=1.5)


@pytest.mark.parametrize("batches,n,expected", [(16, 4, [4, 8, 12, 16]), (6, 4, [2, 3, 5, 6]), (3, 4, [1, 2, 3])])
def test_due_spreads_exactly_n_iterations_over_an_epoch(batches, n, expected):
    solver = SLR(mlp(), spec(), updates_per_epoch=n)
    assert solver.begin(2, batches) == 2 * len(expected)
    assert [i for i in range(1, batches + 1) if solver.due(i)] == expected


def test_warm_start_sets_the_first_multiplier_to_rho_times_the_residual():
    model = gapped(mlp())  # condition 2 fails: Λ is condition 1's warm-started step alone
    solver = SLR(model, spec(), rho=0.4, warm_start=True)
    W = [p.detach().clone() for p in solver.params]
    Z = [z.clone() for z in solver.Z]
    record = solver.step(probe_closure(model, batches(2, seed=1), nn.CrossEntropyLoss()))
    assert not record["cond2"]
    assert all(bool((w != z).any()) for w, z in zip(W, Z, strict=True))
    for lam, w, z in zip(solver.Lam, W, Z, strict=True):
        torch.testing.assert_close(lam, 0.4 * (w - z))
    assert record["cond1"]


def test_backtracking_undoes_the_last_multiplier_update_on_a_failed_condition():
    import itertools

    import torch

    from slr_prune import SLR, PruneSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 6), torch.nn.Linear(6, 2))
    with torch.no_grad():  # the only pruned layer: magnitudes 1…2 in steps of 1/35, so the first
        # multiplier shift (about 10% of the dropped weights) swaps the support and condition 2 holds
        signs = torch.tensor([1.0, -1.0]).repeat(18)
        model[2].weight.copy_((signs * torch.linspace(1.0, 2.0, 36))[torch.randperm(36)].reshape(6, 6))
    counter = itertools.count()
    solver = SLR(model, PruneSpec.uniform(0.5), backtrack=0.5)
    assert list(solver.names) == ["2.weight"]
    first = solver.step(lambda: 10.0 - next(counter))  # k = 1: condition 1 holds by definition
    assert first["cond1"] and first["cond2"]  # two multiplier updates, k = 3
    lam, s = [t.clone() for t in solver.Lam_prev], solver.s_prev
    assert not all(torch.equal(a, b) for a, b in zip(solver.Lam, lam, strict=True))
    # W unchanged: the Z-step repeats the last one, so condition 2 fails too (no strict decrease)
    record = solver.step(lambda: 10.0 - next(counter))  # current loss above the previous iterate's: cond1 fails
    assert not record["cond1"] and solver.backtracks >= 1
    assert not record["cond2"]
    assert all(torch.equal(a, b) for a, b in zip(solver.Lam, lam, strict=True))
    assert solver.s <= s * 0.5 + 1e-12
    with pytest.raises(ValueError, match="backtrack must be 0"):
        SLR(model, PruneSpec.uniform(0.5), backtrack=1.5)


def test_a_held_out_probe_set_is_not_trained_on():
    from slr_prune.adapters import ClassificationTask

    full = ClassificationTask("digits_cnn", "digits")
    task = ClassificationTask("digits_cnn", "digits", probe_holdout=128)
    assert len(task.train_set) == len(full.train_set) - 128 and len(task.probe_set) == 128
    train_ids = set(task.train_set.indices)
    assert not train_ids & set(task.probe_set.indices)
    assert sum(len(b[1]) for b in task.probe_batches(4)) == 128  # the probe batches are the held-out ones
    assert task.record()["probe_holdout"] == 128


def test_each_penalty_solver_ships_its_own_run_schedule(capsys):
    """The command line's ρ schedule is per solver (the solver study's validation winners) and its
    help shows each one; a schedule the user chose is left alone."""
    from slr_prune.cli import build_parser
    from slr_prune.solvers import ADMMConfig, SLRConfig, solver_config

    assert solver_config("slr", {}) == SLRConfig(rho_end=100.0)
    assert solver_config("admm", {"rho": 0.2}) == ADMMConfig(rho=0.2, rho_end=10.0)
    assert solver_config("slr", {"rho_growth": 1.5}) == SLRConfig(rho_growth=1.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--help"])
    assert "default: admm 10.0, slr 100.0" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("method,rho_end", [("slr", 100.0), ("admm", 10.0)])
def test_python_prune_and_the_command_line_run_the_same_schedule(tmp_path, method, rho_end):
    """`prune(model, task, spec, method)` and `slr-prune prune --method method` build the same solver
    config: the recommended ρ schedule when none is given, recorded in each run's pruned.pt."""
    from slr_prune.artifact import load_artifact
    from slr_prune.cli import main

    assert main(["prune", "--method", method, "--ratio", "0.5", "--epochs", "0", "--finetune-epochs", "0",
                 "--bn-batches", "0", "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    task = ClassificationTask("digits_cnn", "digits")
    prune(task.build_model(), task, PruneSpec.uniform(0.5), method, train=TrainConfig(epochs=0, progress=False),
          bn_batches=0, out_dir=tmp_path / "py")
    cli, py = (load_artifact(tmp_path / d / "pruned.pt").settings["solver_options"] for d in ("cli", "py"))
    assert cli == py and py["rho_end"] == rho_end and py["rho"] == 0.1


def test_update_every_longer_than_an_epoch_is_refused_when_the_run_is_planned():
    solver = SLR(mlp(), spec(), update_every=11)
    with pytest.raises(ValueError, match=r"--update-every 11 is longer than an epoch of 10 batches.*1\.\.10"):
        solver.begin(2, 10)
    assert SLR(mlp(), spec(), update_every=10).begin(2, 10) == 2  # one update at the end of each epoch


def test_train_config_integers_are_integers():
    import numpy as np

    assert TrainConfig(epochs=np.int64(3)).epochs == 3
    for bad in (1.5, 2.0, True):
        with pytest.raises(TypeError, match="epochs must be an integer"):
            TrainConfig(epochs=bad)
