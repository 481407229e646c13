import math

import pytest
import torch

from slr_prune import PruneSpec
from slr_prune.adapters import ClassificationTask
from slr_prune.artifact import Artifact, load_artifact, save_artifact
from slr_prune.engine import Hooks, TrainConfig, Trainer, prune
from slr_prune.evaluate import hard_prune_metrics, sparsity_sweep
from slr_prune.metrics import cost_summary
from slr_prune.sets import Projector


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def task():
    return ClassificationTask(batch_size=128)


def fast(epochs: int, **kw) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=0.02, progress=False, probe_batches=2, **kw)


class StopAt(Hooks):
    """Interrupts the solver phase right after the checkpoint of epoch `epoch`."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def should_stop(self, trainer):
        if trainer.solver is not None and trainer.epoch == self.epoch:
            raise Stop
        return False


def run_prune(task, out, resume=False, stop_at=None):
    torch.manual_seed(0)
    model = task.build_model()
    result = prune(model, task, PruneSpec.uniform(0.8), "slr", train=fast(4), finetune=fast(1),
                   solver_options={"rho": 0.5, "rho_growth": 1.3}, out_dir=out, resume=resume,
                   hooks=[StopAt(stop_at)] if stop_at is not None else [])
    return model, result


@pytest.mark.slow
def test_a_resumed_prune_run_matches_an_uninterrupted_one(task, tmp_path):
    model_a, a = run_prune(task, tmp_path / "a")
    with pytest.raises(Stop):
        run_prune(task, tmp_path / "b", stop_at=2)
    assert load_artifact(tmp_path / "b" / "slr.pt").phase["epoch"] == 2
    model_b, b = run_prune(task, tmp_path / "b", resume=True)
    assert [e["solver"] for e in a.epochs] == [e["solver"] for e in b.epochs]
    assert a.hard_prune == b.hard_prune and a.finetune[-1]["accuracy"] == b.finetune[-1]["accuracy"]
    for (n, p), (_, q) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    saved = load_artifact(tmp_path / "b" / "pruned.pt")
    for n, mask in saved.masks.items():
        assert torch.all(saved.state_dict[n][~mask] == 0) and torch.equal(saved.state_dict[n], model_b.state_dict()[n])


def test_prune_reaches_exactly_the_target_and_reports(task):
    torch.manual_seed(0)
    model = task.build_model()
    result = prune(model, task, PruneSpec.uniform(0.75, form="filter"), "admm", train=fast(2),
                   finetune=fast(1))
    assert math.isclose(result.sparsity, result.target_sparsity)
    assert len(result.epochs) == 2 and "hard_prune_accuracy" in result.epochs[0]
    assert result.costs["after"]["nonzero_params"] < result.costs["before"]["nonzero_params"]
    assert result.to_dict()["method"] == "admm"


def test_nan_loss_stops_training_with_a_clear_error(task):
    model = task.build_model()
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="training loss became nan in epoch 1"):
        Trainer(task, model, fast(1)).fit()


def test_hooks_see_every_step_add_to_the_record_and_stop_the_run(task, tmp_path):
    class Spy(Hooks):
        def __init__(self):
            self.calls = []

        def fit_start(self, trainer):
            self.calls.append("start")

        def after_backward(self, trainer):
            self.calls.append("backward")
            assert all(p.grad is not None for p in trainer.model.parameters())  # before the optimizer step

        def after_step(self, trainer, step):
            self.calls.append(step)
            assert all(p.grad is None for p in trainer.model.parameters())  # gradients cleared

        def epoch_end(self, trainer, record):
            assert "accuracy" in record  # the trainer's own evaluation hook ran first
            return {"spy": len(self.calls)}

        def should_stop(self, trainer):
            return trainer.epoch == 1

    spy = Spy()
    torch.manual_seed(0)
    history = Trainer(task, task.build_model(), fast(3, checkpoint=str(tmp_path / "t.pt")), hooks=[spy]).fit()
    batches = len(task.train_loader())
    assert len(history) == 1 and load_artifact(tmp_path / "t.pt").phase["epoch"] == 1  # stopped after its checkpoint
    assert spy.calls == ["start", *[c for i in range(1, batches + 1) for c in ("backward", i)]]
    assert history[0]["spy"] == 1 + 2 * batches


def test_checkpoints_are_atomic_and_corrupt_ones_are_named(tmp_path):
    path = save_artifact(Artifact({"x": torch.ones(3)}), tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(load_artifact(path).state_dict["x"], torch.ones(3))
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="c.pt' is corrupt"):
        load_artifact(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_artifact(tmp_path / "none.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_artifact(Artifact({"x": torch.ones(3)}, result={"bad": Unpicklable()}), tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_hard_prune_metrics_leave_the_model_unchanged(task):
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    projector = Projector(PruneSpec.uniform(0.9).resolve(model))
    hard_prune_metrics(task, model, projector, torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rows = sparsity_sweep(task, model, [0.0, 0.5])
    assert [r["ratio"] for r in rows] == [0.0, 0.5]
    assert rows[0]["accuracy"] == task.evaluate(model, torch.device("cpu"))["accuracy"]


def test_cost_summary_counts_macs():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 16, 5))
    with torch.no_grad():
        conv[0].weight[:4].zero_()
    s = cost_summary(conv, torch.randn(1, 3, 4, 4))
    assert s["macs"] == 8 * 16 * 27 + 5 * 128
    assert s["sparse_macs"] == 4 * 16 * 27 + 5 * 128
