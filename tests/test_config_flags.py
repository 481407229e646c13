"""One generator turns any config dataclass into command-line flags and back."""

import argparse

import pytest

from slr_prune.cli.common import TRAIN_PHASE, TRAIN_SHARED
from slr_prune.cli.options import add_config_flags, config_values
from slr_prune.engine import TrainConfig
from slr_prune.search import SearchConfig
from slr_prune.structured.workflow import LatencyOptions


def _parser(cls, **kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_config_flags(p.add_argument_group("g"), cls, **kwargs)
    return p


def test_train_config_flags_keep_their_names_defaults_and_choices():
    p = _parser(TrainConfig, only=TRAIN_PHASE + TRAIN_SHARED, defaults={"epochs": 3})
    assert config_values(p.parse_args([]), TrainConfig) == {
        "epochs": 3, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
        "amp": True}
    args = p.parse_args(["--no-amp", "--optimizer", "adam", "--weight-decay", "0"])
    config = TrainConfig(**config_values(args, TrainConfig))
    assert not config.amp and config.optimizer == "adam" and config.weight_decay == 0.0
    with pytest.raises(argparse.ArgumentError):
        p.parse_args(["--schedule", "linear"])
    finetune = _parser(TrainConfig, prefix="finetune-", only=TRAIN_PHASE, defaults={"lr": 0.01})
    assert config_values(finetune.parse_args(["--finetune-epochs", "2"]), TrainConfig, prefix="finetune-") == {
        "epochs": 2, "lr": 0.01}


def test_search_and_latency_configs_use_the_same_generator():
    args = _parser(SearchConfig).parse_args(["--search-epochs", "2", "--ops", "skip_connect, sep_conv_3x3",
                                             "--prune-all"])
    config = SearchConfig(**config_values(args, SearchConfig))
    assert config.epochs == 2 and config.ops == ("skip_connect", "sep_conv_3x3") and config.prune_all
    assert config_values(_parser(SearchConfig).parse_args([]), SearchConfig)["ops"] == SearchConfig().ops
    latency = _parser(LatencyOptions, defaults={"device": None})
    assert config_values(latency.parse_args(["--latency-dtype", "float16"]), LatencyOptions) == {
        "batch_size": 1, "device": None, "dtype": "float16", "repeats": 10}
