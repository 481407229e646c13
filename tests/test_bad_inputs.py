"""A corpus of bad inputs: every one ends in exit status 2 (CLI) or a typed exception (API) whose
one-line message names the input, before any training starts."""

import math

import pytest
import torch

from slr_prune.artifact import load_artifact, save_artifact
from slr_prune.cli import main

# (argv, text the error must contain); {dense}, {pruned}, ... are files the fixture writes.
CLI_CASES = [
    (["train", "--epochs", "-1"], "epochs must be ≥ 0"),
    (["train", "--lr", "0"], "lr must be positive"),
    (["train", "--lr", "nan"], "lr must be positive"),
    (["train", "--momentum", "-0.5"], "momentum"),
    (["train", "--weight-decay", "-1"], "weight_decay"),
    (["train", "--optimizer", "lion"], "argument --optimizer: invalid choice"),
    (["train", "--schedule", "poly"], "argument --schedule: invalid choice"),
    (["train", "--batch-size", "0"], "--batch-size must be ≥ 1"),
    (["train", "--workers", "-1"], "--workers must be ≥ 0"),
    (["train", "--device", "foo"], "device 'foo' is not one of"),
    (["train", "--device", "cuda:x"], "device 'cuda:x' is not one of"),
    (["train", "--seed", "-1"], "--seed: seed must be an integer in [0, 2**32)"),
    (["train", "--seed", str(2**70)], "seed"),
    (["train", "--model", "resnet19"], "unknown model 'resnet19'"),
    (["train", "--dataset", "mnist"], "dataset 'mnist'"),
    (["train", "--dataset", "cifar10"], "--data"),
    (["train", "--dataset", "imagefolder", "--data", "{folders}", "--image-size", "0"], "--image-size must be ≥ 1"),
    (["train", "--dataset", "imagefolder", "--data", "{folders}", "--image-size", "-8"], "--image-size must be ≥ 1"),
    (["train", "--out", "{dense}"], "--out"),
    (["train", "--epochs", "x"], "argument --epochs: invalid int value"),
    (["train", "--task", "detect"], "argument --task: invalid choice"),
    (["prune", "--ratio", "1.5"], "prune ratio 1.5 is outside [0, 1)"),
    (["prune", "--ratio", "-0.1"], "prune ratio -0.1 is outside [0, 1)"),
    (["prune", "--ratios", "features"], "--ratios item 'features' is not glob=ratio"),
    (["prune", "--ratios", "features.*=x"], "'x' is not a number"),
    (["prune", "--ratios", "=0.5"], "is not glob=ratio"),
    (["prune", "--form", "rows", "--ratio", "0.5"], "unknown form 'rows'"),
    (["prune", "--form", "2:4", "--ratio", "0.9"], "fixes its own density"),
    (["prune", "--form", "4:2"], "N:M needs integers 0 < N < M"),
    (["prune", "--form", "a:b"], "is not N:M"),
    (["prune", "--global-budget", "--form", "filter", "--ratio", "0.5"], "--global-budget takes --ratio"),
    (["prune", "--ratio", "0.5", "--ratios", "x=0.5"], "give exactly one of"),
    (["prune"], "give exactly one of"),
    (["prune", "--spec", "{missing}"], "missing.yaml"),
    (["prune", "--spec", "{bad_yaml}"], "bad.yaml' line 3: not valid YAML"),
    (["prune", "--spec", "{wrong_keys}"], "unknown spec keys"),
    (["prune", "--spec", "{text_file}"], "notes.txt"),
    (["prune", "--checkpoint", "{missing}", "--ratio", "0.5"], "missing.yaml"),
    (["prune", "--checkpoint", "{corrupt}", "--ratio", "0.5"], "is corrupt"),
    (["prune", "--checkpoint", "{dense}", "--model", "resnet20", "--ratio", "0.5"], "does not fit"),
    (["prune", "--checkpoint", "{nan}", "--ratio", "0.5"], "features.0.weight"),
    (["prune", "--method", "obd", "--ratio", "0.5"], "argument --method: invalid choice"),
    (["prune", "--ratio", "0.5", "--rho", "0"], "rho must be a positive number"),
    (["prune", "--ratio", "0.5", "--rho", "-1"], "rho must be a positive number"),
    (["prune", "--ratio", "0.5", "--rho", "inf"], "rho must be a positive number"),
    (["prune", "--ratio", "0.5", "--rho-max", "-1"], "rho_max must be ≥ rho"),
    (["prune", "--ratio", "0.5", "--rho-max", "0.01"], "rho_max must be ≥ rho"),
    (["prune", "--ratio", "0.5", "--rho-growth", "0.5"], "rho_growth must be ≥ 1"),
    (["prune", "--ratio", "0.5", "--rho-end", "0.01"], "rho_end must be a number ≥ rho"),
    (["prune", "--ratio", "0.5", "--rho-end", "10", "--rho-growth", "2"], "either rho_end"),
    (["prune", "--ratio", "0.5", "--rho-balance", "0.5"], "rho_balance must be 0"),
    (["prune", "--ratio", "0.5", "--M", "0.5"], "M must be > 1"),
    (["prune", "--ratio", "0.5", "--r", "1.5"], "r must lie in (0, 1)"),
    (["prune", "--ratio", "0.5", "--s0", "0"], "s0 must be positive"),
    (["prune", "--ratio", "0.5", "--s-max", "0.001"], "s_max must be ≥ s0"),
    (["prune", "--ratio", "0.5", "--updates-per-epoch", "0"], "updates_per_epoch must be a positive integer"),
    (["prune", "--ratio", "0.5", "--update-every", "-1"], "update_every must be an integer ≥ 0"),
    (["prune", "--ratio", "0.5", "--method", "admm", "--interval", "0"], "interval must be a positive integer"),
    (["prune", "--ratio", "0.5", "--ramp", "-2"], "ramp must be an integer ≥ 0"),
    (["prune", "--ratio", "0.5", "--step-scale", "log"], "argument --step-scale: invalid choice"),
    (["prune", "--ratio", "0.5", "--bn-batches", "-1"], "bn_batches"),
    (["prune", "--ratio", "0.5", "--exclude", "head.*"], "exclusion 'head.*' matches no parameter"),
    (["prune", "--ratio", "0.5", "--finetune-epochs", "-1"], "epochs must be ≥ 0"),
    (["prune", "--ratio", "0.5", "--finetune-lr", "0"], "lr must be positive"),
    (["compare", "--ratio", "0.5", "--methods", "slr,obd"], "unknown solver 'obd'"),
    (["compare", "--ratio", "0.5", "--methods", ","], "--methods is empty"),
    (["compare", "--ratio", "0.5", "--methods", "slr", "--M", "0.5"], "M must be > 1"),
    (["evaluate", "--checkpoint", "{missing}"], "missing.yaml"),
    (["evaluate", "--checkpoint", "{dense}", "--sweep", "0.5,x"], "--sweep '0.5,x'"),
    (["evaluate", "--checkpoint", "{dense}", "--sweep", "1.2"], "prune ratio 1.2 is outside [0, 1)"),
    (["evaluate", "--checkpoint", "{dense}", "--sweep", "0.5", "--form", "rows"], "unknown form 'rows'"),
    (["evaluate", "--checkpoint", "{dense}", "--sweep", "0.5", "--bn-batches", "-3"], "bn_batches"),
    (["evaluate", "--checkpoint", "{nan}"], "features.0.weight"),
    (["finetune", "--checkpoint", "{float_masks}"], "must be a boolean tensor (True = kept)"),
    (["finetune", "--checkpoint", "{dense}", "--epochs", "-2"], "epochs must be ≥ 0"),
    (["describe", "--task", "lane", "--augment", "light", "--ratio", "0.5"], "takes no --augment"),
    (["describe", "--task-option", "hidden=1", "--ratio", "0.5"], "--task-option 'hidden=1'"),
    (["describe", "--augment", "heavy", "--ratio", "0.5"], "argument --augment: invalid choice"),
    (["structured", "--flops-target", "1.5"], "flops_target"),
    (["structured", "--flops-target", "0.5", "--criterion", "layerwise", "--layer-solver", "obs"],
     "layer solver 'obs' handles the forms"),
    (["structured", "--flops-target", "0.5", "--criterion", "l1", "--layer-solver", "slr"],
     "--layer-solver does not apply to --criterion l1"),
    (["structured", "--flops-target", "0.001", "--criterion", "layerwise"], "out of reach"),
    (["structured", "--ratios", "*=0.5", "--allocation", "curves"], "not per-layer ratios"),
    (["structured", "--flops-target", "0.5", "--repair", "maybe"], "argument --repair: invalid choice"),
    (["structured", "--flops-target", "0"], "flops_target"),
    (["structured", "--params-target", "-1"], "params_target"),
    (["structured"], "exactly one budget"),
    (["structured", "--criterion", "taylor", "--flops-target", "0.5"], "argument --criterion: invalid choice"),
    (["structured", "--flops-target", "0.5", "--round-to", "0"], "round_to"),
    (["structured", "--flops-target", "0.5", "--min-keep", "2"], "min_keep"),
    (["structured", "--flops-target", "0.5", "--calibration-batches", "0", "--criterion", "chip"], "calibration"),
    (["structured", "--flops-target", "0.5", "--criterion", "lfe", "--lfe-keep", "1.5"], "keep_prob"),
    (["structured", "--load", "{missing}"], "missing.yaml"),
    (["structured", "--flops-target", "0.5", "--latency-repeats", "0"], "repeats"),
    (["structured", "--ratios", "x"], "--ratios item 'x' is not glob=ratio"),
    (["search", "--ratio", "0.9", "--M", "0.5"], "M must be > 1"),  # refused before the search starts
    (["search", "--ratio", "0.9", "--search-epochs", "-1"], "search epochs must be a positive integer"),
    (["export", "--checkpoint", "{missing}"], "missing.yaml"),
    (["export", "--checkpoint", "{pruned}", "--format", "tflite"], "argument --format: invalid choice"),
    (["export", "--checkpoint", "{pruned}", "--batch", "0"], "--batch must be ≥ 1"),
    (["export", "--checkpoint", "{pruned}", "--format", "ultralytics"], "is not a detection model"),
    (["prune", "--config", "{missing}"], "--config"),
    (["prune", "--config", "{list_config}"], "must hold a mapping"),
    (["prune", "--config", "{inline_bad_spec}"], "unknown form 'rows'"),
    (["train", "--dataset", "imagefolder", "--data", "{broken_folders}", "--image-size", "16", "--epochs", "1"],
     "cannot be read"),
    # round 2, class 4: settings silently ignored or mislabelled
    (["train", "--data", "/nonexistent/path"], "dataset 'digits' ships with the package and reads no --data"),
    (["train", "--image-size", "1000000"], "--image-size must be 8 (or left out), got 1000000"),
    (["train", "--dataset", "imagefolder", "--data", "{folders}", "--image-size", "1000000"],
     "--image-size 1000000 is outside 1..4096"),
    (["prune", "--ratio", "0.5", "--update-every", "100000"], "--update-every 100000 is longer than an epoch of"),
    (["evaluate", "--checkpoint", "{dense}", "--sweep", "0.1,0.9", "--form", "2:4"],
     "--form 2:4 fixes its own density"),
    (["evaluate", "--checkpoint", "{dense}", "--form", "filter"], "add --sweep RATIOS or drop --form"),
    (["prune", "--global-budget", "--form", "2:4"], "--global-budget takes --ratio with --form unstructured"),
    (["prune", "--ratio", "0.5", "--method", "magnitude", "--rho", "0.2"], "--rho applies to method admm, slr"),
    (["prune", "--ratio", "0.5", "--method", "magnitude", "--epochs", "5"], "--epochs would be unused"),
    (["prune", "--ratio", "0.5", "--finetune-epochs", "0", "--finetune-lr", "0.1"], "--finetune-lr would be unused"),
    (["evaluate", "--checkpoint", "{dense}", "--bn-batches", "4"], "--bn-batches sets the recalibration"),
    (["prune", "--ratio", "0.5", "--method", "magnitude", "--update-every", "2"], "--update-every applies to"),
    (["search", "--ratio", "0.9", "--method", "admm", "--M", "2"], "--M applies to method slr"),
    (["compare", "--ratio", "0.5", "--methods", "admm,magnitude", "--warm-start"], "--warm-start applies to"),
    (["prune", "--spec", "{include_first_no}"], "include_first must be true or false, got 'no'"),
    (["prune", "--spec", "{good_spec}", "--exclude", "features.0.weight"], "--exclude would be ignored"),
    (["prune", "--config", "{inline_good_spec}", "--form", "2:4"], "--form 2:4 would be ignored"),
    (["structured", "--flops-target", "0.5", "--criterion", "l1", "--lfe-keep", "0.5"],
     "--lfe-keep does not apply to --criterion l1"),
    (["structured", "--flops-target", "0.5", "--criterion", "admm", "--M", "2"],
     "--M does not apply to --criterion admm"),
    # masks that disagree with the weights (round 2, class 1)
    (["finetune", "--checkpoint", "{inverted_masks}"], "disagrees with the weights"),
    (["finetune", "--checkpoint", "{zero_masks}"], "keeps no weight of its layer"),
    (["finetune", "--checkpoint", "{stale_masks}"], "kept weights are exactly zero"),
    (["finetune", "--checkpoint", "{shape_masks}"], "has shape (3,)"),
    (["finetune", "--checkpoint", "{other_masks}"], "but the file records a sparsity of"),
    # paths checked before compute (class 3)
    (["train", "--out", "{dense}/run"], "which is a file, not a folder"),
    (["demo", "--out", "{dense}/demo"], "which is a file, not a folder"),
    (["train", "--out", "{out}/" + "n" * 256], "at most 255"),
    (["prune", "--ratio", "0.5", "--out", "{taken}"], "is a folder where the run writes a file"),
    (["export", "--checkpoint", "{pruned}", "--name", "../x"], "must be a plain file name"),
    # wrong types and families (class 5)
    (["prune", "--checkpoint", "{dense}", "--task", "lane", "--ratio", "0.5"], "was made by --task classification"),
    (["prune", "--spec", "{rules_int}"], "'rules' must be a list"),
    (["evaluate", "--checkpoint", "{list_masks}"], "field 'masks' is a list"),
    (["evaluate", "--checkpoint", "{tensor_model}"], "neither a slr_prune file nor a state dict"),
    (["prune", "--config", "{latin1_config}"], "is not UTF-8 text"),
    # a crafted pickle is refused and named as such (class 6)
    (["evaluate", "--checkpoint", "{evil}"], "refused because loading them could run code"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from fixtures import write_image_folders

    root = tmp_path_factory.mktemp("bad")
    assert main(["train", "--epochs", "0", "--no-progress", "--out", str(root / "d")]) == 0
    dense = root / "d" / "dense.pt"
    assert main(["prune", "--checkpoint", str(dense), "--method", "magnitude", "--ratio", "0.5", "--finetune-epochs",
                 "0", "--no-progress", "--bn-batches", "0", "--out", str(root / "p")]) == 0
    state = load_artifact(dense)  # rewritten through the artifact path, so their digests are valid
    state.state_dict["features.0.weight"][0, 0, 0, 0] = math.nan
    save_artifact(state, root / "nan.pt")
    pruned = load_artifact(root / "p" / "pruned.pt")
    pruned.masks = {k: v.float() * 0.5 for k, v in pruned.masks.items()}
    save_artifact(pruned, root / "float_masks.pt")
    _write_bad_masks(load_artifact(root / "p" / "pruned.pt"), root)
    _write_wrong_types(load_artifact(dense), root)
    (root / "taken" / "pruned.pt").mkdir(parents=True)
    (root / "corrupt.pt").write_bytes(b"\x00not a checkpoint")
    (root / "bad.yaml").write_text("rules:\n  - {pattern: '*', ratio: 0.5\n")
    (root / "wrong.yaml").write_text("rules: []\nexlude: []\n")
    (root / "notes.txt").write_text("ratio 0.5\n")
    (root / "list.yaml").write_text("- epochs: 3\n")
    (root / "inline.yaml").write_text("spec:\n  rules:\n    - {pattern: '*', form: rows, ratio: 0.5}\n")
    (root / "inline_good.yaml").write_text("spec:\n  rules:\n    - {pattern: '*', ratio: 0.5}\n")
    (root / "first_no.yaml").write_text("rules:\n  - {pattern: '*', ratio: 0.5}\ninclude_first: 'no'\n")
    (root / "good.yaml").write_text("rules:\n  - {pattern: '*', ratio: 0.5}\n")
    write_image_folders(root / "folders")
    broken = write_image_folders(root / "broken")
    next((broken / "val").rglob("*.png")).write_bytes(b"not a png")
    return {"dense": dense, "pruned": root / "p" / "pruned.pt", "nan": root / "nan.pt",
            "float_masks": root / "float_masks.pt", "corrupt": root / "corrupt.pt", "missing": root / "missing.yaml",
            "bad_yaml": root / "bad.yaml", "wrong_keys": root / "wrong.yaml", "text_file": root / "notes.txt",
            "list_config": root / "list.yaml", "inline_bad_spec": root / "inline.yaml", "folders": root / "folders",
            "broken_folders": root / "broken", "inline_good_spec": root / "inline_good.yaml",
            "include_first_no": root / "first_no.yaml", "good_spec": root / "good.yaml",
            "taken": root / "taken",
            **{k: root / f"{k}.pt" for k in ("inverted_masks", "zero_masks", "stale_masks", "shape_masks",
                                                "other_masks", "list_masks", "tensor_model", "evil")},
            "rules_int": root / "rules_int.yaml", "latin1_config": root / "latin1.yaml",
            "out": root / "o"}


def _write_bad_masks(pruned, root):
    """Pruned files whose masks disagree with their weights: inverted (pruned weights regrew, kept
    ones zeroed), all-False for one layer, stale (the mask keeps zeros), of the wrong shape."""
    import copy

    name = next(iter(pruned.masks))
    inverted = copy.deepcopy(pruned)
    for k, m in inverted.masks.items():
        w = inverted.state_dict[k]
        inverted.state_dict[k] = torch.where(m, torch.zeros_like(w), torch.full_like(w, 0.1))
        inverted.masks[k] = m
    save_artifact(inverted, root / "inverted_masks.pt")
    zero = copy.deepcopy(pruned)
    zero.masks[name] = torch.zeros_like(zero.masks[name])
    zero.state_dict[name] = torch.zeros_like(zero.state_dict[name])
    save_artifact(zero, root / "zero_masks.pt")
    stale = copy.deepcopy(pruned)
    stale.masks[name] = torch.ones_like(stale.masks[name])
    stale.state_dict[name].view(-1)[stale.state_dict[name].numel() // 4:] = 0
    save_artifact(stale, root / "stale_masks.pt")
    shape = copy.deepcopy(pruned)
    shape.masks[name] = torch.ones(3, dtype=torch.bool)
    save_artifact(shape, root / "shape_masks.pt")
    other = copy.deepcopy(pruned)  # consistent with its weights, not with the recorded sparsity
    big = max(other.masks, key=lambda k: other.masks[k].numel())
    other.masks[big] = torch.ones_like(other.masks[big])
    other.state_dict[big] = torch.where(other.state_dict[big] == 0, 0.01, other.state_dict[big])
    save_artifact(other, root / "other_masks.pt")


class _Evil:
    """Unpickling it would call os.system."""

    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def _write_wrong_types(dense, root):
    """Fields of the wrong type, a non-UTF-8 config, a pickle that would run code."""
    torch.save({"model": dense.state_dict, "epoch": 1, "masks": [torch.ones(3, dtype=torch.bool)]},
               root / "list_masks.pt")
    torch.save({"model": torch.ones(3), "epoch": 1}, root / "tensor_model.pt")
    torch.save({"model": dense.state_dict, "hook": _Evil()}, root / "evil.pt")
    (root / "rules_int.yaml").write_text("rules: 5\n")
    (root / "latin1.yaml").write_bytes("ratio: 0.5 # r\xe9duit\n".encode("latin-1"))


@pytest.mark.parametrize(("argv", "message"), CLI_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_command_line_input(files, capsys, tmp_path, argv, message):
    argv = [a.format(**files) for a in argv]
    if "--out" not in argv and argv[0] in ("train", "prune", "compare", "finetune", "structured", "search", "export"):
        argv += ["--out", str(tmp_path / "out")]
    try:
        code = main([*argv, "--no-progress"] if argv[0] not in ("describe", "evaluate", "export") else argv)
    except SystemExit as e:  # argparse: usage + one error line
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert lines and "Traceback" not in err, err
    assert message in lines[-1], err
    assert not (tmp_path / "out" / "pruned.pt").exists()


def test_a_malformed_spec_names_its_line(files, capsys):
    code = main(["describe", "--spec", str(files["bad_yaml"])])
    assert code == 2 and "bad.yaml' line 3: not valid YAML" in capsys.readouterr().err


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 4 * 4, 10))


def _api_cases():
    import slr_prune
    from slr_prune import ADMM, NM, SLR, Magnitude, PruneSpec, Rule, Unstructured
    from slr_prune.adapters import ClassificationTask
    from slr_prune.data.tusimple import parse_label
    from slr_prune.engine import TrainConfig, prune
    from slr_prune.errors import SpecError, StateError
    from slr_prune.evaluate import sparsity_sweep
    from slr_prune.masks import Masks
    from slr_prune.metrics.coco import check_coco
    from slr_prune.models import create_model
    from slr_prune.registry import UnknownNameError
    from slr_prune.structured import make_criterion
    from slr_prune.task import create_task

    spec = PruneSpec.uniform(0.5, include_first=True)
    task = lambda: ClassificationTask("digits_cnn", "digits")  # noqa: E731
    return [
        (lambda: PruneSpec.uniform(1.5), SpecError, "prune ratio 1.5"),
        (lambda: Rule("*", form="rows"), SpecError, "unknown form 'rows'"),
        (lambda: Rule("*", form="filter", scope="world"), SpecError, "scope 'world'"),
        (lambda: Unstructured(ratio=2.0), SpecError, "prune ratio 2.0"),
        (lambda: NM(n=3, m=2), SpecError, "N:M needs integers"),
        (lambda: PruneSpec.from_dict({"rules": [], "exlude": []}), SpecError, "unknown spec keys"),
        (lambda: SLR(_model(), "90%"), TypeError, "spec must be a PruneSpec"),
        (lambda: SLR(_model(), spec, rho=-1), ValueError, "rho must be a positive number"),
        (lambda: SLR(_model(), spec, M=1), ValueError, "M must be > 1"),
        (lambda: ADMM(_model(), spec, interval=0), ValueError, "interval must be a positive integer"),
        (lambda: Magnitude(_model(), spec, schedule="linear"), ValueError, "schedule must be"),
        (lambda: SLR(_model(), {"9.weight": Unstructured(0.5)}), ValueError, "'9.weight' is not a parameter"),
        (lambda: SLR(_model(), {"0.weight": 0.5}), TypeError, "must be a ConstraintSet"),
        (lambda: prune(_model(), task(), spec, "obd"), UnknownNameError, "unknown solver 'obd'"),
        (lambda: prune(_model(), task(), spec, "slr", solver_options={"rhoo": 1}), TypeError, "unknown option 'rhoo'"),
        (lambda: prune(_model(), task(), spec, "slr", bn_batches=-1), ValueError, "bn_batches"),
        (lambda: TrainConfig(optimizer="lion"), ValueError, "optimizer must be"),
        (lambda: TrainConfig(seed=-3), ValueError, "seed must be an integer"),
        (lambda: TrainConfig(epochs=-1), ValueError, "epochs must be ≥ 0"),
        (lambda: Masks({"w": torch.ones(3)}), StateError, "must be a boolean tensor"),
        (lambda: create_model("resnet19"), ValueError, "unknown model 'resnet19'"),
        (lambda: create_task("detect"), UnknownNameError, "unknown task 'detect'"),
        (lambda: ClassificationTask(batch_size=0), ValueError, "batch_size must be an integer ≥ 1"),
        (lambda: ClassificationTask(image_size=-1), ValueError, "image_size must be an integer ≥ 1"),
        (lambda: make_criterion("taylor"), UnknownNameError, "unknown criterion 'taylor'"),
        (lambda: make_criterion("lfe", keep_prob=2), ValueError, "keep_prob"),
        (lambda: check_coco({"images": [{"id": "1", "file_name": "a.jpg", "width": 4, "height": 4}],
                             "annotations": [], "categories": []}, "gt.json"), ValueError, "images[0].id must be int"),
        (lambda: check_coco({"images": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                                           "bbox": [0, 0, -3, 2]}], "categories": []}, "gt.json"),
         ValueError, "annotations[0].bbox must be [x, y, w, h]"),
        (lambda: parse_label({"raw_file": "a.jpg", "lanes": [[float("nan")]], "h_samples": [160]}, "l.json:1"),
         ValueError, "l.json:1: lane 0 holds NaN or Inf"),
        (lambda: slr_prune.structured.structured_prune(_model(), example_input=torch.randn(1, 1, 8, 8),
                                                       flops_target=2.0), ValueError, "flops_target 2.0"),
        # round 2, class 4: a value is never reinterpreted, an option that does not apply is refused
        (lambda: PruneSpec.from_dict({"rules": [{"pattern": "*", "ratio": 0.5}], "include_first": "no"}), SpecError,
         "include_first must be true or false, got 'no'"),
        (lambda: PruneSpec.uniform(0.5, exclude=[3]), SpecError, "exclude must be a list of parameter globs"),
        (lambda: SLR(_model(), spec, update_every=50).begin(2, 10), ValueError,
         "--update-every 50 is longer than an epoch of 10 batches"),
        (lambda: ClassificationTask(data="/nonexistent/path"), ValueError, "reads no --data"),
        (lambda: ClassificationTask(image_size=1000000), ValueError, "--image-size must be 8"),
        (lambda: sparsity_sweep(task(), _model(), [0.1, 0.9], form="2:4"), SpecError,
         "form '2:4' fixes its own density"),
        # round 2, class 7: the Python API
        (lambda: SLR(_meta_model(), spec), ValueError, "the model's parameters are on the meta device"),
        (lambda: prune(_meta_model(), task(), spec, "slr"), ValueError, "materialise them (to_empty + load weights)"),
        (lambda: SLR(_model(), PruneSpec.uniform(0.7, include_first=True)).load_state_dict(
            SLR(_model(), spec).state_dict()), StateError, "ratio=0.5"),
        (lambda: SLR(_model(), spec).load_state_dict({"rho": 1.0}), StateError, "not a solver state: dict without"),
        (lambda: TrainConfig(epochs=1.5), TypeError, "epochs must be an integer ≥ 0, got 1.5"),
        (lambda: TrainConfig(probe_batches=True), TypeError, "probe_batches must be an integer"),
        (lambda: TrainConfig(lr="0.1"), TypeError, "lr must be a number, got '0.1'"),
        (lambda: SLR(_model(), spec, update_every=True), ValueError, "update_every must be an integer ≥ 0"),
        (lambda: PruneSpec.uniform(True), SpecError, "prune ratio True is a bool"),
        (lambda: SLR(_tied_model(), PruneSpec([Rule("1.*", ratio=0.5), Rule("2.*", ratio=0.7)])), SpecError,
         "'2.weight' and '1.weight' are one tied tensor"),
    ]


def _meta_model() -> torch.nn.Module:
    with torch.device("meta"):
        return _model()


def _tied_model() -> torch.nn.Module:
    """Four linear layers, the second and third sharing one weight."""
    model = torch.nn.Sequential(*(torch.nn.Linear(8, 8) for _ in range(4)))
    model[2].weight = model[1].weight
    return model


@pytest.mark.parametrize("i", range(46))
def test_bad_api_input(i):
    build, error, message = _api_cases()[i]
    with pytest.raises(error) as e:
        build()
    assert message in str(e.value) and "\n" not in str(e.value).strip()


def test_the_api_corpus_is_all_parametrized():
    assert len(_api_cases()) == 46
