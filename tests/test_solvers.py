import io
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from slr_prune import ADMM, SLR, Magnitude, PruneSpec, Rule, StateError, probe_closure
from slr_prune.sets import n_keep


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def all_layers(ratio: float = 0.75, **kw) -> PruneSpec:
    return PruneSpec.uniform(ratio, include_first=True, include_last=True, **kw)


def data(seed: int = 0, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, :3].argmax(1))


def test_penalty_gradient_matches_autograd():
    model = mlp()
    solver = SLR(model, all_layers())
    for z, lam in zip(solver.Z, solver.Lam, strict=True):
        z.add_(torch.randn_like(z) * 0.1)
        lam.copy_(torch.randn_like(lam))
    solver._refresh()  # Z and Λ were edited by hand, outside step()
    x, y = data()
    F.cross_entropy(model(x), y).backward()
    solver.add_penalty_grad_()
    fused = [p.grad.clone() for p in solver.params]

    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    for p, z, lam in zip(solver.params, solver.Z, solver.Lam, strict=True):
        loss = loss + solver.rho / 2 * (p - z + lam / solver.rho).pow(2).sum()
    loss.backward()
    for a, p in zip(fused, solver.params, strict=True):
        torch.testing.assert_close(a, p.grad)


def reference_slr(W_seq, closure_of, sets, rho, M, r, s0):
    """The pseudo-code of slr-admm.md §4 in float64 with per-layer loops, except that the step-size
    numerator is the residual of the last multiplier update (see slr.py's docstring)."""
    proj = [lambda w, s=s: w * s.mask(w) for s in sets]
    W0 = W_seq[0]
    Z = [p(w) for p, w in zip(proj, W0, strict=True)]
    Lam = [torch.zeros_like(w) for w in W0]
    s, k = s0, 1
    Wp, Zp = [w.clone() for w in W0], [z.clone() for z in Z]

    def lhat(W, Zs):
        return closure_of(W) + sum(
            (lam * (w - z)).sum() + rho / 2 * (w - z).pow(2).sum() for w, z, lam in zip(W, Zs, Lam, strict=True))

    def norm(A, B):
        return sum(torch.linalg.vector_norm(a - b) for a, b in zip(A, B, strict=True))

    def alpha(k):
        return 1 - 1 / (M * k ** (1 - 1 / k**r))

    g_last = norm(Wp, Zp)
    for W in W_seq[1:]:
        if lhat(W, Z) < lhat(Wp, Z) or k == 1:
            s = alpha(k) * s * g_last / norm(W, Z)
            g_last = norm(W, Z)
            Lam = [lam + s * (w - z) for lam, w, z in zip(Lam, W, Z, strict=True)]
            k += 1
        Znew = [p(w + lam / rho) for p, w, lam in zip(proj, W, Lam, strict=True)]
        if closure_of(W) + sum((lam * (w - z)).sum() + rho / 2 * (w - z).pow(2).sum()
                               for w, z, lam in zip(W, Znew, Lam, strict=True)) < lhat(W, Z):
            s = alpha(k) * s * g_last / norm(W, Znew)
            g_last = norm(W, Znew)
            Lam = [lam + s * (w - z) for lam, w, z in zip(Lam, W, Znew, strict=True)]
            k += 1
            Wp, Zp = [w.clone() for w in W], [z.clone() for z in Znew]
        Z = Znew
    return Z, Lam, s, k


def test_slr_matches_the_reference_iteration():
    torch.manual_seed(1)
    model = mlp().double()
    spec = all_layers(0.5)
    solver = SLR(model, spec, rho=0.5, M=5.0, r=0.3, s0=0.2)
    W_seq = [[p.detach().clone() for p in solver.params]]
    # W iterates that drift towards sparsity with noise, so both condition outcomes occur.
    for _ in range(8):
        W_seq.append([w * (0.8 + 0.4 * torch.rand_like(w)) for w in W_seq[-1]])

    def closure_of(W):
        return sum(float(w.pow(2).sum()) for w in W) * 0.01

    for W in W_seq[1:]:
        with torch.no_grad():
            for p, w in zip(solver.params, W, strict=True):
                p.copy_(w)
        solver.step(lambda: closure_of([p.detach() for p in solver.params]))
    Z, Lam, s, k = reference_slr(W_seq, closure_of, [solver.projector.sets[n] for n in solver.names],
                                 0.5, 5.0, 0.3, 0.2)
    assert solver.k == k and math.isclose(solver.s, float(s), rel_tol=1e-9)
    for a, b in zip(solver.Z, Z, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(solver.Lam, Lam, strict=True):
        torch.testing.assert_close(a, b)
    outcomes = {(h["cond1"], h["cond2"]) for h in solver.history}
    assert len(outcomes) > 1, "the W sequence should exercise more than one condition outcome"


def test_slr_keeps_a_copy_of_the_previous_iterate_and_restores_weights():
    model = mlp()
    solver = SLR(model, all_layers())
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in solver.params])
        return 1.0

    before = [p.detach().clone() for p in solver.params]
    with torch.no_grad():
        for p in solver.params:
            p.add_(1.0)  # the live weights move; W_prev must not move with them
    current = [p.detach().clone() for p in solver.params]
    solver.step(closure)
    assert len(seen) == 2
    for cur, prev, a, b in zip(current, before, seen[0], seen[1], strict=True):
        torch.testing.assert_close(a, cur)   # first call: current weights
        torch.testing.assert_close(b, prev)  # second call: the copied previous iterate
    for p, cur in zip(solver.params, current, strict=True):
        assert torch.equal(p.detach(), cur)  # restored exactly
    with torch.no_grad():
        solver.params[0].add_(5.0)
    assert not torch.equal(solver.W_prev[0], solver.params[0].detach())


def test_admm_updates_every_interval():
    model = mlp()
    solver = ADMM(model, all_layers(0.5), rho=0.3, interval=2)
    with torch.no_grad():
        for p in solver.params:
            p.mul_(1.5)
    W = [p.detach().clone() for p in solver.params]
    assert solver.step() == {"updated": False}
    assert solver.step()["updated"]
    sets = [solver.projector.sets[n] for n in solver.names]
    for w, z, lam, s in zip(W, solver.Z, solver.Lam, sets, strict=True):
        expected_z = w * s.mask(w)  # Λ was 0, so Z = Π(W)
        torch.testing.assert_close(z, expected_z)
        torch.testing.assert_close(lam, 0.3 * (w - expected_z))


@pytest.mark.parametrize("form", ["unstructured", "filter", "channel", "column", "2:4", "pattern"])
def test_hard_prune_leaves_exactly_the_target_on_resnet18(form):
    model = torchvision.models.resnet18()
    exclude = ["*downsample*"] if form == "pattern" else []  # 1×1 convs have no 3×3 kernels
    solver = ADMM(model, PruneSpec.uniform(0.7, form=form, exclude=exclude))
    masks = solver.hard_prune()
    params = dict(model.named_parameters())
    for name, s in solver.projector.sets.items():
        assert int(masks[name].sum()) == s.kept(params[name].shape)
        assert int(torch.count_nonzero(params[name])) <= s.kept(params[name].shape)
        assert torch.equal(params[name].detach() * masks[name], params[name].detach())


def test_global_budget_hard_prune_keeps_the_exact_total():
    model = torchvision.models.resnet18()
    solver = Magnitude(model, PruneSpec.global_budget(0.9))
    masks = solver.hard_prune()
    total = sum(p.numel() for p in solver.params)
    assert sum(int(m.sum()) for m in masks.values()) == n_keep(0.9, total)
    kept_min = min(p.detach().abs()[masks[n]].min() for n, p in zip(solver.names, solver.params, strict=True))
    assert kept_min > 0


def test_magnitude_cubic_schedule():
    model = mlp()
    solver = Magnitude(model, all_layers(0.8), schedule="cubic", steps=4)
    fractions = []
    for _ in range(5):
        fractions.append(solver.step()["fraction"])
    assert fractions == [1 - (1 - t / 4) ** 3 for t in (1, 2, 3, 4)] + [1.0]
    total = sum(p.numel() for p in solver.params)
    kept = sum(int(torch.count_nonzero(p)) for p in solver.params)
    assert kept == sum(n_keep(0.8, p.numel()) for p in solver.params) and kept < total


def test_nan_probe_loss_raises():
    model = mlp()
    solver = SLR(model, all_layers())
    with pytest.raises(FloatingPointError, match="probe loss is nan at SLR iteration 1"):
        solver.step(lambda: float("nan"))
    with torch.no_grad():
        solver.params[0][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        ADMM(model, all_layers())


def train_run(solver_cls, iterations, state=None, stop_after=None, **kw):
    """Deterministic SLR/ADMM training of the small MLP; returns model, solver, optimizer."""
    model = mlp()
    spec = all_layers(0.75)
    solver = solver_cls(model, spec, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = data()
    probe = probe_closure(model, [(x[:32], y[:32])], F.cross_entropy)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        solver.load_state_dict(state["solver"])
        start = state["iteration"]
    for it in range(start, iterations):
        for i in range(0, 64, 16):
            F.cross_entropy(model(x[i:i + 16]), y[i:i + 16]).backward()
            solver.add_penalty_grad_()
            opt.step()
            opt.zero_grad()
        solver.step(probe)
        if stop_after is not None and it + 1 == stop_after:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "solver": solver.state_dict(), "iteration": it + 1}, buf)
            buf.seek(0)
            return torch.load(buf, weights_only=True)
    return model, solver


@pytest.mark.parametrize("solver_cls,kw", [(SLR, {"rho": 0.5, "rho_growth": 1.2}),
                                           (ADMM, {"rho": 0.5, "interval": 2})])
def test_resume_matches_an_uninterrupted_run(solver_cls, kw):
    model_a, a = train_run(solver_cls, 6, **kw)
    checkpoint = train_run(solver_cls, 6, stop_after=3, **kw)
    model_b, b = train_run(solver_cls, 6, state=checkpoint, **kw)
    for key, ta in a._tensor_state().items():
        for x, y in zip(ta, b._tensor_state()[key], strict=True):
            assert torch.equal(x, y), key
    assert a._scalar_state() == b._scalar_state()
    assert a.history == b.history
    ma, mb = a.hard_prune(), b.hard_prune()
    assert all(torch.equal(ma[n], mb[n]) for n in ma)


def test_load_state_dict_rejects_a_foreign_state():
    a = SLR(mlp(), all_layers())
    with pytest.raises(StateError, match="saved by 'SLR', not ADMM"):
        ADMM(mlp(), all_layers()).load_state_dict(a.state_dict())
    b = SLR(mlp(), PruneSpec([Rule("2.*", ratio=0.5)], include_first=True, include_last=True))
    with pytest.raises(StateError, match="other parameters"):
        b.load_state_dict(a.state_dict())


def test_slr_training_moves_weights_towards_the_sparse_set():
    model, solver = train_run(SLR, 8, rho=1.0, rho_growth=1.3)
    dense_model = mlp()
    dense = Magnitude(dense_model, all_layers(0.75))
    assert solver.distance() < 0.5 * dense.distance()


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="M must be > 1"):
        SLR(mlp(), all_layers(), M=1.0)
    with pytest.raises(ValueError, match=r"r must lie in \(0, 1\)"):
        SLR(mlp(), all_layers(), r=1.0)
    with pytest.raises(ValueError, match="rho must be a positive"):
        ADMM(mlp(), all_layers(), rho=0.0)
    with pytest.raises(TypeError, match="closure"):
        SLR(mlp(), all_layers()).step(None)


def test_load_state_dict_refuses_a_state_of_another_ratio_and_loads_an_older_state():
    a = SLR(mlp(), all_layers(0.5))
    with pytest.raises(StateError, match=r"ratio=0.5.*ratio=0.7"):
        SLR(mlp(), all_layers(0.7)).load_state_dict(a.state_dict())
    older = {k: v for k, v in a.state_dict().items() if k != "sets"}  # saved before sets were recorded
    SLR(mlp(), all_layers(0.5)).load_state_dict(older)


def test_tied_weights_are_pruned_once_under_their_first_name(capsys):
    model = mlp()
    model[4] = nn.Linear(16, 16)
    model.append(nn.Linear(16, 3))
    model[4].weight = model[2].weight  # one tensor, two names
    solver = SLR(model, PruneSpec.uniform(0.5))
    assert solver.names == ["2.weight"] and "'4.weight' is the same tensor as '2.weight'" in capsys.readouterr().err
    solver.hard_prune()
    assert model[4].weight.count_nonzero() == model[4].weight.numel() // 2


def test_numpy_ratios_are_numbers_and_stored_as_floats():
    import numpy as np

    rule = PruneSpec.uniform(np.float32(0.5)).rules[0]
    assert rule.ratio == 0.5 and type(rule.ratio) is float
    assert PruneSpec.from_yaml(PruneSpec.uniform(np.float64(0.25)).to_yaml()).rules[0].ratio == 0.25
