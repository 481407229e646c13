"""Adding an entry is one file: a toy of each kind, registered inside its test, reaches prune(), the
command line, --help and the docs' option tables, and is removed afterwards."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from slr_prune import PruneSpec, Rule, SpecError, TrainConfig, prune
from slr_prune.cli import build_parser, main
from slr_prune.layerwise.solvers import LAYER_SOLVERS, LayerSolver
from slr_prune.option_tables import render_all, render_table
from slr_prune.registry import Registry
from slr_prune.sets import FORMS, TopKSet
from slr_prune.structured.criteria import CRITERIA, Criterion
from slr_prune.task import TASKS, Task

ROOT = Path(__file__).parents[1]
ZERO = TrainConfig(epochs=0, device="cpu", progress=False)


@contextmanager
def registered(registry: Registry, name: str, obj: Any, **kwargs: Any) -> Iterator[None]:
    """`obj` registered as `name` for the block, unregistered after it (other tests never see it)."""
    registry.register(name, obj, **kwargs)
    try:
        yield
    finally:
        registry.unregister(name)


def help_of(command: str) -> str:
    return build_parser()._subparsers._group_actions[0].choices[command].format_help()  # noqa: SLF001


def run(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- a sparsity form with its own parameter ------------------------------------------------------
@dataclass(frozen=True)
class _Blocks(TopKSet):
    """Toy block sparsity: keep the (rows × cols) blocks of W (out × rest) of largest energy."""

    block: tuple[int, int] = (2, 1)
    form = "toy"

    def validate(self, name: str, shape: torch.Size) -> None:
        super().validate(name, shape)
        if shape[0] % self.block[0] or math.prod(shape[1:]) % self.block[1]:
            raise SpecError(f"{name}: {tuple(shape)} does not tile into {self.block} blocks")

    def _grid(self, shape: torch.Size) -> tuple[int, int, int, int]:
        rows, cols = self.block
        return shape[0] // rows, rows, math.prod(shape[1:]) // cols, cols

    def scores(self, w: Tensor) -> Tensor:
        return w.detach().reshape(self._grid(w.shape)).pow(2).sum((1, 3)).flatten()

    def expand(self, group_mask: Tensor, shape: torch.Size) -> Tensor:
        a, rows, b, cols = self._grid(shape)
        return group_mask.view(a, 1, b, 1).expand(a, rows, b, cols).reshape(shape)

    def n_groups(self, shape: torch.Size) -> int:
        a, _, b, _ = self._grid(shape)
        return a * b


def _blocks_of(w: Tensor, rows: int, cols: int) -> Tensor:
    """Each (rows × cols) block of w viewed as out × rest: all zero or all non-zero."""
    v = (w.reshape(w.shape[0] // rows, rows, -1, cols) != 0).sum((1, 3))
    return (v == 0) | (v == rows * cols)


def test_a_form_with_its_own_parameter_in_a_spec():
    with registered(FORMS, "toy", _Blocks):
        text = 'rules:\n  - {pattern: "*", form: toy, ratio: 0.5, options: {block: [4, 1]}}\n'
        spec = PruneSpec.from_yaml(text)
        model = _TinyTask().build_model()
        assert spec.resolve(model) == {"2.weight": _Blocks(ratio=0.5, block=(4, 1))}
        assert PruneSpec.from_yaml(spec.to_yaml()) == spec and PruneSpec.from_json(spec.to_json()) == spec
        assert spec.to_dict()["rules"][0]["options"] == {"block": [4, 1]}
        assert "toy(block=(4, 1))" in spec.describe(model)
        assert Rule("*", form="toy", ratio=0.5, options={"block": (4, 1)}) == spec.rules[0]  # Python, same rule
        with pytest.raises(SpecError, match=r"form 'toy' has no option 'blok'; its options: block \(tuple\[int, "
                                            r"int\], default \[2, 1\]\)"):
            Rule("*", form="toy", options={"blok": [4, 1]})
        with pytest.raises(SpecError, match=r"form 'toy' option 'block': \[4\] is not tuple\[int, int\]"):
            PruneSpec.from_dict({"rules": [{"pattern": "*", "form": "toy", "block": [4]}]})
        result = prune(model, _TinyTask(), spec, "magnitude", train=ZERO, bn_batches=0)
        w = model[2].weight.detach()
        assert bool(_blocks_of(w, 4, 1).all()) and int((w != 0).sum()) == 16 * 72 // 2
        assert result.spec["rules"][0]["options"] == {"block": [4, 1]}
    assert "toy" not in FORMS


def test_a_form_with_its_own_parameter_through_the_cli(tmp_path, capsys):
    with registered(FORMS, "toy", _Blocks):
        assert "toy: block" in " ".join(help_of("prune").split())
        code, out, err = run(capsys, "describe", "--form", "toy", "--form-option", "block=4,1", "--ratio", 0.5)
        assert code == 0, err
        assert "features.3.weight" in out and "toy(block=(4, 1))" in out
        code, _, err = run(capsys, "prune", "--method", "magnitude", "--form", "toy", "--form-option", "block=[4, 1]",
                           "--ratio", 0.5, "--epochs", 0, "--finetune-epochs", 0, "--bn-batches", 0, "--no-progress",
                           "--device", "cpu", "--out", tmp_path / "p")
        assert code == 0, err
        report = json.loads((tmp_path / "p" / "report.json").read_text())
        assert report["results"][0]["spec"]["rules"][0]["options"] == {"block": [4, 1]}
        assert abs(report["results"][0]["sparsity"] - 0.5) < 1e-3
        code, _, err = run(capsys, "describe", "--form", "toy", "--form-option", "rows=4", "--ratio", 0.5)
        assert code != 0 and "form 'toy' has no option 'rows'; its options: block" in err


def test_nm_spellings_still_work():
    four_eight = Rule("*", form="4:8")
    assert four_eight == Rule("*", form="nm", options={"n": 4, "m": 8})
    assert four_eight == PruneSpec.from_dict({"rules": [{"pattern": "*", "form": "nm", "n": 4, "m": 8}]}).rules[0]
    with pytest.raises(SpecError, match="form '4:8' already sets n"):
        Rule("*", form="4:8", options={"n": 2})


def test_built_in_pattern_kernels_from_a_spec():
    from slr_prune.sets import Pattern

    rule = PruneSpec.from_yaml("rules: [{pattern: '*', form: pattern, options: {patterns: [[0, 1, 2, 3]]}}]").rules[0]
    assert rule.make_set() == Pattern(patterns=((0, 1, 2, 3),)) and rule.make_set().label.startswith("pattern(")
    assert PruneSpec.from_json(PruneSpec([rule]).to_json()).rules[0] == rule
    with pytest.raises(SpecError, match="form 'nm' option 'n': True is not int"):
        Rule("*", form="nm", options={"n": True})


# ---- a layer solver ----------------------------------------------------------------------------
class _HalfwayLayer(LayerSolver):
    """Toy layer solver: the projection of the weights, its kept entries scaled by `scale`."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def solve(self, problem):
        mask = problem.project_mask(problem.W)
        return problem.W * mask * self.scale, mask, {"scale": self.scale}


def test_a_layer_solver_runs_through_prune():
    with registered(LAYER_SOLVERS, "toy", _HalfwayLayer, help="toy: scaled projection"):
        model = _TinyTask().build_model()
        dense = model[2].weight.detach().clone()
        result = prune(model, _TinyTask(), PruneSpec.uniform(0.5), "layerwise", train=ZERO, bn_batches=0,
                       solver_options={"layer_solver": "toy", "calibration_batches": 1, "refit": "none",
                                       "target": "current", "layer_options": {"scale": 2.0}})
        kept = model[2].weight.detach() != 0
        assert len(result.layerwise) == 1 and int(kept.sum()) == dense.numel() // 2
        assert torch.allclose(model[2].weight.detach()[kept], 2 * dense[kept])  # the toy solved the layer
        assert "| `toy` | toy: scaled projection | `scale`: float = 1.0 |" in render_table(LAYER_SOLVERS)
    assert "toy" not in LAYER_SOLVERS


def test_a_layer_solver_runs_through_the_cli(tmp_path, capsys):
    with registered(LAYER_SOLVERS, "toy", _HalfwayLayer, help="toy: scaled projection"):
        assert "toy" in help_of("prune")
        code, _, err = run(capsys, "prune", "--method", "layerwise", "--layer-solver", "toy", "--ratio", 0.5,
                           "--calibration-batches", 1, "--bn-batches", 0, "--finetune-epochs", 0, "--no-progress",
                           "--device", "cpu", "--out", tmp_path / "p")
        assert code == 0, err


# ---- a structured criterion --------------------------------------------------------------------
class _Index(Criterion):
    """Toy criterion: later filters score higher (keeps the last ones)."""

    name = "toy"
    option_help = {"toy_offset": "added to every score"}

    def __init__(self, toy_offset: float = 0.0):
        self.toy_offset = toy_offset

    def scores(self, graph, calibration=None, counts=None):
        return {n: torch.arange(g.size, dtype=torch.float64) + self.toy_offset for n, g in graph.groups.items()}


def test_a_structured_criterion_runs_through_the_cli(tmp_path, capsys):
    with registered(CRITERIA, "toy", _Index):
        text = " ".join(help_of("structured").split())
        assert "toy: Toy criterion" in text and "--toy-offset" in text and "added to every score" in text
        code, _, err = run(capsys, "structured", "--criterion", "toy", "--toy-offset", 1, "--flops-target", 0.6,
                           "--round-to", 1, "--finetune-epochs", 0, "--no-latency", "--device", "cpu",
                           "--out", tmp_path / "s")
        assert code == 0, err
        report = json.loads((tmp_path / "s" / "report.json").read_text())
        assert report["settings"]["criterion_options"] == {"toy_offset": 1.0}
        assert report["results"]["criterion"]["name"] == "toy"
        assert "`toy_offset`: float = 0.0 — added to every score" in render_table(CRITERIA)
    assert "toy" not in CRITERIA


# ---- a task ------------------------------------------------------------------------------------
class _TinyTask(Task):
    """Toy task: 3-class labels of a fixed random teacher on random 3×8×8 inputs, a two-conv net."""

    metric = "accuracy"
    option_help = {"width": "channels of the hidden convolution"}

    def __init__(self, width: int = 16, batch_size: int = 16, workers: int = 0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.width, self.batch_size = width, batch_size
        self.x = torch.randn(64, 3, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (64,), generator=g)

    def record(self) -> dict[str, Any]:
        return {"width": self.width}

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, self.width, 3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(self.width * 16, 3))

    def _loader(self, sampler: Any = None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.train_dataset(), self.batch_size, sampler=sampler)

    train_loader = val_loader = _loader

    def train_dataset(self) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(self.x, self.y)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        return nn.functional.cross_entropy(model(batch[0].to(device)), batch[1].to(device))

    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Any:
        return model(batch[0].to(device))

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        with torch.no_grad():
            return {"accuracy": float((model(self.x.to(device)).argmax(1).cpu() == self.y).float().mean())}

    def example_input(self, batch_size: int = 1) -> Tensor:
        return torch.randn(batch_size, 3, 8, 8)


def test_a_task_runs_through_the_cli(tmp_path, capsys):
    with registered(TASKS, "toy", _TinyTask):
        assert "toy" in help_of("prune")
        code, out, err = run(capsys, "prune", "--task", "toy", "--task-option", "width=4", "--method", "admm",
                             "--ratio", 0.5, "--epochs", 1, "--finetune-epochs", 0, "--bn-batches", 0,
                             "--no-progress", "--device", "cpu", "--out", tmp_path / "p")
        assert code == 0, err
        report = json.loads((tmp_path / "p" / "report.json").read_text())
        assert abs(report["results"][0]["sparsity"] - 0.5) < 1e-3
        assert "`width`: int = 16 — channels of the hidden convolution" in render_table(TASKS)
    assert "toy" not in TASKS


# ---- the docs' option tables -------------------------------------------------------------------
def test_docs_options_md_is_what_the_registries_render():
    assert (ROOT / "docs" / "options.md").read_text() == render_all(), \
        "docs/options.md is stale: python -m slr_prune.option_tables > docs/options.md"


def test_a_registered_form_appears_in_the_rendered_tables():
    with registered(FORMS, "toy", _Blocks):
        assert "| `toy` | Toy block sparsity" in render_all()
        assert "`block`: tuple[int, int] = (2, 1)" in render_all()
        assert "`budget`" not in render_all().split("## Sparsity forms")[1].split("##")[0]
    assert "`toy`" not in render_all()
