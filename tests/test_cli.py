import json

import pytest
from fixtures import write_cifar10

from slr_prune.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_describe(capsys):
    code, out, _ = run(capsys, "describe", "--model", "resnet56", "--form", "filter", "--ratio", 0.5)
    assert code == 0 and "layer3.8.conv2.weight" in out and "filter" in out


def test_train_prune_evaluate_finetune_chain(capsys, tmp_path):
    dense = tmp_path / "dense" / "dense.pt"
    code, out, err = run(capsys, "train", "--epochs", 2, "--no-progress", "--out", tmp_path / "dense")
    assert code == 0, err
    assert dense.exists() and "dense accuracy" in out and "train 2/2  loss" in out
    assert not (tmp_path / "dense" / "train.state.pt").exists()  # removed without --keep-checkpoints
    code, out, err = run(capsys, "prune", "--checkpoint", dense, "--method", "admm", "--ratio", 0.8,
                         "--epochs", 1, "--finetune-epochs", 1, "--no-progress", "--out", tmp_path / "p")
    assert code == 0, err
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["settings"]["options"]["ratio"] == 0.8 and report["environment"]["torch"]
    assert report["settings"]["solver_options"]["admm"]["rho"] == 0.1  # resolved defaults recorded
    result = report["results"][0]
    assert result["method"] == "admm" and abs(result["sparsity"] - 0.8) < 1e-3
    assert (tmp_path / "p" / "args.yaml").read_text().startswith("command: prune")
    assert "admm 1/1  loss" in out and "hard-prune" in out and "distance" in out and "ρ" in out
    assert not (tmp_path / "p" / "admm.pt").exists() and (tmp_path / "p" / "pruned.pt").exists()
    assert (tmp_path / "p" / "hard_prune.png").stat().st_size > 0
    code, out, err = run(capsys, "evaluate", "--checkpoint", tmp_path / "p" / "pruned.pt", "--sweep", "0.9,0.95")
    assert code == 0, err
    assert "ratio 0.950: accuracy" in out
    assert "features.7 " in out and "accuracy" in out and "sparse MACs" in out
    code, out, err = run(capsys, "finetune", "--checkpoint", tmp_path / "p" / "pruned.pt", "--epochs", 1,
                         "--no-progress", "--out", tmp_path / "ft")
    assert code == 0, err
    import torch
    ft = torch.load(tmp_path / "ft" / "finetuned.pt", weights_only=True)
    for name, mask in ft["masks"].items():
        assert torch.all(ft["state_dict"][name][~mask] == 0)  # fine-tuning kept the zeros


def test_compare_from_a_config_file(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: digits_cnn\nmethods: slr,magnitude\nepochs: 1\nfinetune-epochs: 0\n"
                      "spec:\n  rules:\n    - {pattern: 'features.*', ratio: 0.5}\n")
    code, out, err = run(capsys, "compare", "--config", config, "--no-progress", "--out", tmp_path / "cmp")
    assert code == 0, err
    methods = [r["method"] for r in json.loads((tmp_path / "cmp" / "report.json").read_text())["results"]]
    assert methods == ["slr", "magnitude"] and "hard-prune accuracy" in out


# ---- clear errors -------------------------------------------------------------------------
def test_missing_dataset_path(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "cifar10", "--data", tmp_path / "nope", "--epochs", 1)
    assert code == 2 and "CIFAR-10 root" in err and "does not exist" in err


def test_wrong_dataset_format(capsys, tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x00junk")
    code, _, err = run(capsys, "train", "--dataset", "cifar10", "--data", tmp_path, "--epochs", 1)
    assert code == 2 and "data_batch_3' is not a CIFAR-10 python batch" in err


def test_unknown_model(capsys):
    code, _, err = run(capsys, "describe", "--model", "resnet19", "--ratio", 0.5)
    assert code == 2 and "unknown model 'resnet19'" in err and "resnet18" in err


def test_spec_that_does_not_fit_the_model(capsys, tmp_path):
    code, _, err = run(capsys, "prune", "--ratios", "layer9.*=0.5", "--epochs", 0, "--out", tmp_path)
    assert code == 2 and "rule 'layer9.*' matches no parameter" in err
    code, _, err = run(capsys, "describe", "--model", "digits_cnn", "--form", "2:4", "--ratio", 0,
                       "--include-first")
    assert code == 2 and "features.0.weight: 2:4" in err and "1 inputs" in err


def test_checkpoint_of_another_model(capsys, tmp_path):
    dense = tmp_path / "dense.pt"
    assert run(capsys, "train", "--epochs", 0, "--out", tmp_path)[0] == 0
    code, _, err = run(capsys, "evaluate", "--checkpoint", dense, "--model", "resnet20")
    assert code == 2 and "does not fit" in err


def test_bad_config_key(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochz: 3\n")
    with pytest.raises(SystemExit):
        main(["prune", "--config", str(config)])
    assert "unknown key 'epochz'" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted(__import__("pathlib").Path(__file__).parents[1].glob("configs/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_parse_and_fit_their_models(config):
    from slr_prune.cli import build_parser, parse
    from slr_prune.cli.common import make_spec
    from slr_prune.models import create_model

    args = parse(build_parser(), ["prune", "--config", str(config)])
    size = 224 if args.dataset == "imagefolder" else 8 if args.dataset == "digits" else 32
    model = create_model(args.model, image_size=size, in_channels=1 if args.dataset == "digits" else 3)
    assert make_spec(args).resolve(model)
    assert args.epochs > 0 and args.method in ("slr", "admm")


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("include-first: 'false'\n", "include-first must be true or false"),
    ("epochs: 1.5\n", "argument --epochs: invalid int value: '1.5'"),
    ("lr: null\n", "lr has no value"),
    ("method: sllr\n", "argument --method: invalid choice: 'sllr'"),
    ("ratio: [0.5\n", "not valid YAML"),
])
def test_config_values_get_the_command_lines_types(capsys, tmp_path, yaml_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SystemExit) as e:
        main(["prune", "--config", str(config)])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_spec_options_that_do_not_apply_are_refused(capsys):
    code, _, err = run(capsys, "describe", "--form", "2:4", "--ratio", 0.9)
    assert code == 2 and "--form 2:4 fixes its own density, so --ratio 0.9 does not apply" in err
    code, _, err = run(capsys, "describe", "--form", "filter", "--ratio", 0.5, "--global-budget")
    assert code == 2 and "--global-budget takes --ratio with --form unstructured" in err
    code, out, err = run(capsys, "describe", "--model", "resnet20", "--form", "4:8")
    assert code == 0 and "4:8" in out and "for input (1, 8, 8) and 10 classes" in out


def test_train_out_names_a_folder(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--epochs", 0, "--out", tmp_path / "dense.pt")
    assert code == 2 and "--out names a run folder" in err


def test_task_options_from_the_command_line(capsys):
    code, out, err = run(capsys, "describe", "--task", "lane", "--task-option", "hidden=512", "--ratio", 0.5)
    assert code == 0, err
    assert "512×" in out
    code, _, err = run(capsys, "describe", "--task", "lane", "--task-option", "hidden=5x", "--ratio", 0.5)
    assert code == 2 and "--task-option hidden: '5x' is not an integer" in err
    code, _, err = run(capsys, "describe", "--task", "lane", "--task-option", "hiden=1", "--ratio", 0.5)
    assert code == 2 and "KEY one of" in err and "griding_num" in err
    code, _, err = run(capsys, "describe", "--task", "lane", "--augment", "light", "--ratio", 0.5)
    assert code == 2 and "--task lane takes no --augment" in err


def test_a_solver_flag_only_some_compared_methods_use_is_noted_once(capsys, tmp_path):
    code, _, err = run(capsys, "compare", "--methods", "slr,magnitude", "--rho", "0.2", "--ratio", "0.5", "--epochs", 1,
                       "--finetune-epochs", 0, "--bn-batches", 0, "--no-progress", "--out", tmp_path / "cmp")
    assert code == 0, err
    assert err.count("note: --rho applies to slr only; magnitude runs without it") == 1
    options = json.loads((tmp_path / "cmp" / "report.json").read_text())["settings"]["solver_options"]
    assert options["slr"]["rho"] == 0.2 and "rho" not in options["magnitude"]
