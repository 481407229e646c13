"""Registries: entries describe themselves, and adding a method is one registration (no other edit)."""

import dataclasses
import json

import pytest
import torch

from slr_prune.cli import main
from slr_prune.config import option
from slr_prune.registry import Registry, UnknownNameError
from slr_prune.sets import FORMS
from slr_prune.solvers import SOLVERS, CadenceConfig, Solver, register_solver
from slr_prune.structured.criteria import CRITERIA, Criterion
from slr_prune.task import TASKS


def test_registries_list_with_wildcards_and_traits():
    assert SOLVERS.list() and set(SOLVERS.list()) >= {"slr", "admm", "magnitude"}
    assert SOLVERS.list("*m*") == [n for n in SOLVERS.list() if "m" in n]
    assert "magnitude" not in SOLVERS.list(trains=True) and "slr" in SOLVERS.list(penalty=True)
    assert FORMS.list(global_budget=True) == ["unstructured"]
    assert CRITERIA.list("l?") == ["l1", "l2"]
    import slr_prune.adapters  # noqa: F401

    assert set(TASKS.list()) == {"classification", "yolo", "lane"}
    with pytest.raises(UnknownNameError, match="unknown solver 'slrr'; choose one of .*slr"):
        SOLVERS.get("slrr")


def test_options_dataclass_is_the_config():
    options = SOLVERS.get("slr").options
    fields = {f.name: f for f in dataclasses.fields(options)}
    assert fields["M"].default == 300.0 and fields["updates_per_epoch"].default == 4
    assert fields["rho"].metadata["help"] and not fields["strategy"].metadata["help"]  # API-only
    assert SOLVERS.get("magnitude").options().schedule == "oneshot"
    assert dataclasses.fields(CRITERIA.get("l1").options)[0].name == "bias"  # p is fixed by the entry
    with pytest.raises(TypeError, match="unknown option 'rhoo'"):
        SOLVERS.get("admm").check_options({"rhoo": 1.0})


def test_duplicate_names_are_refused():
    reg: Registry = Registry("thing")
    reg.register("a", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", lambda: 2)


@dataclasses.dataclass(frozen=True)
class _HalfShrinkConfig(CadenceConfig):
    factor: float = option(0.5, "shrink factor per step")


class _HalfShrink(Solver):
    """Toy solver: every step halves the pruned weights' distance to their projection."""

    Config = _HalfShrinkConfig

    def __init__(self, model, spec, config=None, **options):
        super().__init__(model, spec, config, **options)
        self.factor = self.config.factor
        self.calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.calls += 1
        z = self.projector.project(self.weights())
        for name, p in zip(self.names, self.params, strict=True):
            p.sub_((p - z[name]) * self.factor)
        record = {"calls": self.calls, "factor": self.factor}
        self.history.append(record)
        return record

    def _scalar_state(self):
        return {"calls": self.calls}


class _Random(Criterion):
    """Toy criterion: seeded random scores."""

    name = "toy_random"
    option_help = {"toy_seed": "seed of the scores"}

    def __init__(self, toy_seed: int = 0):
        self.toy_seed = toy_seed

    def scores(self, graph, calibration=None, counts=None):
        gen = torch.Generator().manual_seed(self.toy_seed)
        return {n: torch.rand(g.size, generator=gen, dtype=torch.float64) for n, g in graph.groups.items()}


@pytest.fixture
def toy_methods():
    register_solver("toy_shrink")(_HalfShrink)
    CRITERIA.register("toy_random", _Random)
    yield
    SOLVERS.unregister("toy_shrink")
    CRITERIA.unregister("toy_random")


def test_a_registered_solver_and_criterion_run_through_the_cli(toy_methods, tmp_path, capsys):
    from slr_prune.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["prune"].format_help()  # noqa: SLF001
    assert "toy_shrink" in help_text and "--factor" in help_text and "shrink factor per step" in help_text
    code = main(["prune", "--method", "toy_shrink", "--factor", "0.25", "--ratio", "0.8", "--epochs", "2",
                 "--finetune-epochs", "0", "--no-progress", "--out", str(tmp_path / "p")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    result = report["results"][0]
    assert result["method"] == "toy_shrink" and abs(result["sparsity"] - 0.8) < 1e-3
    assert report["settings"]["solver_options"]["toy_shrink"] == {"factor": 0.25, "update_every": 0,
                                                                  "updates_per_epoch": 1, "strategy": "auto"}
    assert len(result["epochs"]) == 2 and result["epochs"][-1]["solver"] == {"calls": 2, "factor": 0.25}
    capsys.readouterr()

    code = main(["structured", "--model", "resnet20", "--criterion", "toy_random", "--toy-seed", "3",
                 "--flops-target", "0.6", "--round-to", "1", "--finetune-epochs", "0", "--no-latency",
                 "--out", str(tmp_path / "s")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    structured = json.loads((tmp_path / "s" / "report.json").read_text())
    assert structured["settings"]["criterion_options"] == {"toy_seed": 3}
    assert structured["results"]["criterion"]["name"] == "toy_random"
    assert structured["results"]["costs"]["macs_ratio"] > 1.3


def test_solvers_accept_resolved_sets():
    from slr_prune import SLR, Unstructured

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    solver = SLR(model, {"0.weight": Unstructured(0.75)})
    assert solver.names == ["0.weight"]
    masks = solver.hard_prune()
    assert int(masks["0.weight"].sum()) == 16
    with pytest.raises(ValueError, match="'3.weight' is not a parameter"):
        SLR(model, {"3.weight": Unstructured(0.5)})


def test_solver_configs_are_typed_versioned_and_inherited():
    """Configs validate without a model, round-trip through JSON with their version, inherit their
    parent's fields (one declaration each) and carry the traits the registry lists."""
    from slr_prune.solvers import ADMMConfig, MagnitudeConfig, PenaltyConfig, SLRConfig

    config = SLRConfig.recommended()
    assert config.rho_end == 100.0 and ADMMConfig.recommended().rho_end == 10.0 and SLRConfig().rho_end is None
    assert SLRConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.to_dict()["version"] == SLRConfig.VERSION
    with pytest.raises(ValueError, match="version 99"):
        SLRConfig.from_dict({**config.to_dict(), "version": 99})
    with pytest.raises(ValueError, match="rho_end must be a number ≥ rho"):
        SLRConfig(rho=1.0, rho_end=0.5)
    penalty = {f.name for f in dataclasses.fields(PenaltyConfig)}
    assert penalty < {f.name for f in dataclasses.fields(SLRConfig)} and penalty < {f.name for f in
                                                                                  dataclasses.fields(ADMMConfig)}
    assert not MagnitudeConfig().trains and MagnitudeConfig(schedule="cubic").trains
    assert SOLVERS.get("slr").options is SLRConfig and "magnitude" not in SOLVERS.list(trains=True)
