import pytest
from matplotlib.ticker import MaxNLocator

from slr_prune import PruneSpec
from slr_prune.engine.pruning import PruneResult
from slr_prune.report import describe_results, hard_prune_figure, plot_hard_prune_curves, results_table


def result(method: str, spec: PruneSpec, epochs: int = 3, lane: bool = False, **kw) -> PruneResult:
    """A made-up run: accuracy (and FP/FN for lanes) with and without BatchNorm recalibration."""
    def metrics(acc: float) -> dict[str, float]:
        return {"accuracy": acc, **({"fp": 0.25, "fn": 0.125} if lane else {"val_loss": 0.5})}

    per_epoch = [{"epoch": e + 1, "hard_prune_accuracy": 0.6 + 0.05 * e, "hard_prune_bn_accuracy": 0.8 + 0.05 * e}
                 for e in range(epochs)]
    fields = dict(method=method, spec=spec.to_dict(), metric="accuracy", dense=metrics(0.95),
                  hard_prune=metrics(0.7), hard_prune_bn=metrics(0.9), target_sparsity=0.9, sparsity=0.9,
                  epochs=per_epoch, finetune=[metrics(0.93)])
    return PruneResult(**{**fields, **kw})


def test_figure_names_model_ratio_and_methods_with_integer_epochs(tmp_path):
    spec = PruneSpec.uniform(0.9)
    results = [result("slr", spec), result("magnitude", spec, epochs=0)]
    ax = hard_prune_figure(results, model="resnet20").axes[0]
    assert ax.get_title() == "Hard-prune accuracy per solver epoch\nresnet20, 90% unstructured: slr, magnitude"
    assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
    assert all(float(t).is_integer() for t in ax.get_xticks())
    low, high = ax.get_ylim()
    assert 50 < low < 60 and 95 < high <= 101  # the data (60..95 %) with a margin, within [0, 100]
    title = hard_prune_figure(results, "slr pruning").axes[0].get_title()
    assert title == "slr pruning\n90% unstructured: slr, magnitude"  # the caller's title heads it
    path = plot_hard_prune_curves(results, tmp_path / "f" / "hard_prune.png", "t", model="m")
    assert path.stat().st_size > 0


@pytest.mark.parametrize("spec,text", [(PruneSpec.uniform(0.5, form="2:4"), "2:4"),
                                       (PruneSpec.global_budget(0.75), "75% unstructured global"),
                                       (PruneSpec.layerwise({"conv1*": 0.5, "fc*": 0.8}), "90% sparsity")])
def test_the_budget_comes_from_the_spec(spec, text):
    assert describe_results([result("admm", spec)]) == f"{text}: admm"


def test_lane_tables_show_fp_and_fn_next_to_accuracy():
    spec = PruneSpec.uniform(0.5)
    table = results_table([result("slr", spec, lane=True)], markdown=True)
    header, _, row = table.splitlines()
    assert header.count("FP % | FN %") == 4 and "val_loss" not in header
    assert "| 95.00 | 25.00 | 12.50 | 90.00 | 70.00 | 25.00 | 12.50 | 90.00 | 25.00 | 12.50 |" in row
    plain = results_table([result("slr", spec), result("magnitude", spec, epochs=0, hard_prune_bn=None)])
    assert "FP" not in plain and "no BN" in plain.splitlines()[-1]
