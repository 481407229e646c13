import pytest
import torch
import torch.nn.functional as F
import torchvision

from slr_prune import SLR, Masks, PruneSpec, StateError, sparsity_report, squash


def pruned_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    solver = SLR(model, PruneSpec.uniform(0.8))
    return model, solver, solver.hard_prune()


def effective_weights(model, names):
    modules = dict(model.named_modules())
    return {n: modules[n.rpartition(".")[0]].weight.detach() for n in names}


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
])
def test_pruned_weights_stay_exactly_zero_through_fine_tuning(make_opt):
    model, solver, masks = pruned_resnet18()
    opt = make_opt(model.parameters())
    # Momentum / Adam state built up before the masks are attached must not regrow pruned weights.
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    masks.attach(model)
    for _ in range(3):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    for name, w in effective_weights(model, masks).items():
        assert torch.all(w[~masks[name]] == 0), name
        assert torch.count_nonzero(w[masks[name]]) > 0
    squash(model)
    for name, w in dict(model.named_parameters()).items():
        if name in masks:
            assert torch.all(w[~masks[name]] == 0)


def test_squashed_state_dict_loads_into_a_fresh_model():
    model, _, masks = pruned_resnet18()
    masks.attach(model)
    assert any("parametrizations" in k for k in model.state_dict())
    squash(model)
    fresh = torchvision.models.resnet18(num_classes=10)
    fresh.load_state_dict(model.state_dict())  # strict: same keys, no pickled objects
    fresh.eval(), model.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh(x), model(x))
    rows = {r["name"]: r for r in sparsity_report(fresh, list(masks))}
    assert all(abs(rows[n]["sparsity"] - (1 - masks[n].float().mean())) < 1e-6 for n in masks)


def test_masks_round_trip_and_from_model():
    model, _, masks = pruned_resnet18()
    again = Masks.from_state_dict(masks.state_dict())
    assert set(again) == set(masks) and all(torch.equal(again[n], masks[n]) for n in masks)
    derived = Masks.from_model(model, list(masks))
    assert all(torch.equal(derived[n], masks[n]) for n in masks)  # random init has no exact zeros
    assert abs(masks.density() - 0.2) < 1e-3


def test_masks_that_do_not_fit_the_model():
    model = torchvision.models.resnet18()
    with pytest.raises(StateError, match="names no parameter"):
        Masks({"layer9.weight": torch.ones(3, dtype=torch.bool)}).apply_(model)
    with pytest.raises(StateError, match="has shape"):
        Masks({"fc.weight": torch.ones(3, dtype=torch.bool)}).apply_(model)


def test_squash_of_a_deep_copy_leaves_the_original_attached():
    import copy

    model, _, masks = pruned_resnet18()
    masks.attach(model)
    clone = squash(copy.deepcopy(model))
    x = torch.randn(1, 3, 32, 32)
    model.eval(), clone.eval()
    torch.testing.assert_close(model(x), clone(x))  # the original still has its parametrizations
    assert any("parametrizations" in k for k in model.state_dict())
    assert not any("parametrizations" in k for k in clone.state_dict())
