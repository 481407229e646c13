import pytest
import torch
import torchvision
from torch import nn

from slr_prune import NM, Filter, PruneSpec, Rule, SpecError, Unstructured
from slr_prune.spec import prunable_weights


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 10),
    )


def test_candidates_are_conv_and_linear_weights_only():
    names = list(prunable_weights(small_cnn()))
    assert names == ["0.weight", "3.weight", "6.weight", "8.weight"]


def test_uniform_skips_first_and_last_and_keeps_biases_and_norms_dense():
    sets = PruneSpec.uniform(0.5).resolve(small_cnn())
    assert list(sets) == ["3.weight", "6.weight"]
    assert all(isinstance(s, Unstructured) and s.ratio == 0.5 for s in sets.values())


def test_include_first_and_last():
    sets = PruneSpec.uniform(0.5, include_first=True, include_last=True).resolve(small_cnn())
    assert list(sets) == ["0.weight", "3.weight", "6.weight", "8.weight"]


def test_first_matching_rule_wins_and_forms_are_built():
    spec = PruneSpec([Rule("6.*", form="filter", ratio=0.25), Rule("*", form="2:4")])
    sets = spec.resolve(small_cnn())
    assert isinstance(sets["6.weight"], Filter) and sets["6.weight"].ratio == 0.25
    assert sets["3.weight"] == NM(2, 4)


def test_exclusions():
    sets = PruneSpec.uniform(0.5, exclude=["6.*"]).resolve(small_cnn())
    assert list(sets) == ["3.weight"]


def test_global_rule_shares_one_set_object():
    sets = PruneSpec.global_budget(0.8).resolve(torchvision.models.resnet18())
    assert len({id(s) for s in sets.values()}) == 1
    assert len(sets) == 19  # 20 conv/linear weights minus the stem conv1; fc is last and dense


def test_describe_counts_on_resnet18():
    table = PruneSpec.uniform(0.9).describe(torchvision.models.resnet18())
    assert "layer1.0.conv1.weight" in table and "3,686" in table  # 36864 - round(0.9*36864)
    assert "conv1.weight" in table.splitlines()[2] and "dense" in table.splitlines()[2]
    assert table.splitlines()[-1].split()[0] == "total"


@pytest.mark.parametrize("spec", [
    PruneSpec.uniform(0.7, form="channel", exclude=["fc.*"], include_last=True),
    PruneSpec([Rule("layer1.*", form="4:8"), Rule("layer*", ratio=0.5, scope="global")]),
    PruneSpec.layerwise({"layer1.*": 0.3, "layer2.*": 0.6}, form="filter"),
])
def test_yaml_and_json_round_trip(spec, tmp_path):
    assert PruneSpec.from_yaml(spec.to_yaml()) == spec
    assert PruneSpec.from_json(spec.to_json()) == spec
    for suffix in (".yaml", ".json"):
        spec.save(tmp_path / f"s{suffix}")
        assert PruneSpec.load(tmp_path / f"s{suffix}") == spec


# ---- clear errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan")])
def test_ratio_outside_unit_interval(ratio):
    with pytest.raises(SpecError, match=r"outside \[0, 1\)"):
        PruneSpec.uniform(ratio)


def test_nm_that_does_not_divide_the_input_dimension():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 8, 3), nn.Conv2d(8, 8, 1))
    with pytest.raises(SpecError, match=r"1\.weight: 2:4 .* 6 inputs"):
        PruneSpec.uniform(0.0, form="2:4").resolve(model)


def test_glob_that_matches_nothing_suggests_names():
    with pytest.raises(SpecError, match=r"rule 'layer9\.\*' matches no parameter.*names start with: conv1, layer1"):
        PruneSpec([Rule("layer9.*", ratio=0.5)]).resolve(torchvision.models.resnet18())


def test_exclusion_that_matches_nothing():
    with pytest.raises(SpecError, match=r"exclusion 'clasifier\.\*' matches no parameter"):
        PruneSpec.uniform(0.5, exclude=["clasifier.*"]).resolve(torchvision.models.resnet18())


def test_rule_matching_only_dense_parameters():
    with pytest.raises(SpecError, match="never pruned"):
        PruneSpec([Rule("bn1.*", ratio=0.5)]).resolve(torchvision.models.resnet18())
    with pytest.raises(SpecError, match="first/last layer"):
        PruneSpec([Rule("fc.*", ratio=0.5)]).resolve(torchvision.models.resnet18())


def test_spec_matching_no_parameter_of_the_model():
    model = nn.Sequential(nn.Linear(4, 4))  # its only candidate is both first and last
    with pytest.raises(SpecError, match="matches only parameters kept dense"):
        PruneSpec.uniform(0.5).resolve(model)
    with pytest.raises(SpecError, match="no parameter"):
        PruneSpec.uniform(0.5).resolve(nn.Sequential(nn.ReLU()))


def test_bad_form_scope_and_keys():
    with pytest.raises(SpecError, match="unknown form 'rows'"):
        Rule("*", form="rows")
    with pytest.raises(SpecError, match="global budget .* .unstructured. only"):
        Rule("*", form="filter", scope="global", ratio=0.5)
    with pytest.raises(SpecError, match="unknown spec keys"):
        PruneSpec.from_dict({"rules": [{"pattern": "*"}], "exlude": []})
    with pytest.raises(SpecError, match="N:M needs"):
        Rule("*", form="4:2")


def test_pattern_needs_3x3_kernels():
    with pytest.raises(SpecError, match="3×3"):
        PruneSpec.uniform(0.0, form="pattern", include_first=True).resolve(torchvision.models.resnet18())


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        PruneSpec.load(tmp_path / "nope.yaml")


def test_resolved_sets_project_real_weights():
    model = torchvision.models.resnet18()
    sets = PruneSpec.uniform(0.9).resolve(model)
    w = dict(model.named_parameters())["layer1.0.conv1.weight"].detach()
    assert int(sets["layer1.0.conv1.weight"].mask(w).sum()) == 3686
    assert torch.count_nonzero(sets["layer1.0.conv1.weight"].project(w)) == 3686


def test_fixed_density_forms_have_no_ratio_option():
    assert not Rule("*", form="2:4").has_ratio and not Rule("*", form="pattern").has_ratio
    assert Rule("*", form="filter", ratio=0.5).has_ratio
    assert Rule("*", form="2:4", ratio=0.9).make_set() == Rule("*", form="2:4").make_set()
