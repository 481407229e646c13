"""BatchNorm recalibration: the estimate, the evaluator's two numbers, the workflow and the CLI."""

import copy

import pytest
import torch
from torch import nn

from slr_prune import PruneSpec
from slr_prune.adapters import ClassificationTask
from slr_prune.bn import recalibrate_bn
from slr_prune.engine import TrainConfig, Trainer, prune
from slr_prune.evaluate import hard_prune_metrics, recalibrate_task_bn
from slr_prune.sets import Projector


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    task = ClassificationTask(batch_size=128)
    model = task.build_model()
    Trainer(task, model, TrainConfig(epochs=2, lr=0.05, progress=False)).fit()
    return task, model


def test_recalibration_is_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, momentum=0.3)
    model = nn.Sequential(nn.Linear(2, 3), bn).eval()
    batches = [torch.randn(16, 2) * (i + 1) + i for i in range(3)]
    recalibrate_bn(model, batches, lambda m, b: m(b))
    with torch.no_grad():
        h = [model[0](b) for b in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in h]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0, unbiased=True) for x in h]).mean(0))
    assert bn.momentum == 0.3 and not bn.training and not model.training  # modes and momentum restored


def test_a_model_without_batchnorm_runs_nothing_and_reports_one_number():
    calls = []
    assert recalibrate_bn(nn.Linear(2, 2), [torch.zeros(1, 2)], lambda m, b: calls.append(b)) == 0
    assert calls == []


def test_no_batches_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(nn.BatchNorm1d(2), [], lambda m, b: m(b))


def test_the_evaluator_reports_both_numbers_and_leaves_the_model_unchanged(trained):
    task, model = trained
    before = copy.deepcopy(model.state_dict())
    projector = Projector(PruneSpec.uniform(0.95).resolve(model))
    m = hard_prune_metrics(task, model, projector, torch.device("cpu"), bn_batches=8)
    assert set(m) == {"hard_prune", "hard_prune_bn"}
    # Stale statistics cost accuracy at 95%; re-estimating them recovers a large part of it.
    assert m["hard_prune_bn"]["accuracy"] > m["hard_prune"]["accuracy"] + 0.05
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert hard_prune_metrics(task, model, projector, torch.device("cpu"), bn_batches=0)["hard_prune_bn"] is None


def test_calibration_batches_are_seeded_and_shuffled(trained):
    task, _ = trained
    torch.manual_seed(1)
    a = [y for _, y in task.calibration_batches(2, seed=5)]
    torch.manual_seed(2)
    b = [y for _, y in task.calibration_batches(2, seed=5)]
    c = [y for _, y in task.calibration_batches(2, seed=6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    state = torch.get_rng_state()
    list(task.calibration_batches(1))
    assert torch.equal(state, torch.get_rng_state())  # the caller's random stream is untouched


def test_prune_ships_the_recalibrated_statistics(trained):
    task, dense = trained
    model = copy.deepcopy(dense)
    result = prune(model, task, PruneSpec.uniform(0.95), "magnitude", train=TrainConfig(progress=False),
                   bn_batches=8)
    assert result.bn_batches == 8 and result.epochs == []
    assert result.hard_prune_bn == task.evaluate(model, torch.device("cpu"))
    assert result.best_hard_prune is result.hard_prune_bn
    off = prune(copy.deepcopy(dense), task, PruneSpec.uniform(0.95), "magnitude",
                train=TrainConfig(progress=False), bn_batches=0)
    assert off.hard_prune_bn is None and off.hard_prune == result.hard_prune
    with pytest.raises(ValueError, match="bn_batches"):
        prune(copy.deepcopy(dense), task, PruneSpec.uniform(0.5), "magnitude", bn_batches=-1)


def test_every_epoch_records_both_hard_prune_numbers(trained):
    task, dense = trained
    result = prune(copy.deepcopy(dense), task, PruneSpec.uniform(0.9), "admm",
                   train=TrainConfig(epochs=2, lr=0.01, progress=False, probe_batches=1), bn_batches=4)
    for e in result.epochs:
        assert {"hard_prune_accuracy", "hard_prune_bn_accuracy", "distance"} <= set(e)


def test_recalibrate_task_bn_rejects_a_negative_count(trained):
    task, model = trained
    with pytest.raises(ValueError, match="bn_batches"):
        recalibrate_task_bn(task, model, torch.device("cpu"), -1)


def test_model_mode_sets_the_mode_for_the_block_and_restores_it_even_on_error():
    from slr_prune.utils import model_mode

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    with model_mode(model, train=False):
        assert not model.training and not model[1].training
    assert model.training and model[1].training
    model.eval()
    with pytest.raises(RuntimeError), model_mode(model, train=True):
        assert model.training
        raise RuntimeError("boom")
    assert not model.training and not model[1].training
