"""Configuration: keys, types, overrides, YAML round trip, CLI glue."""
import argparse
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from nasdistill.commands.cli_args import add_config_arguments, config_from_args
from nasdistill.config import ConfigError, load_config, save_yaml, to_dict
from nasdistill.data.config import DataConfig
from nasdistill.models.config import ModelConfig
from nasdistill.engine.config import TrainConfig


@dataclass
class RunConfig:
    seed: int = 0
    out_dir: str = "runs/x"
    mode: Literal["a", "b"] = "a"
    limit: Optional[int] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_defaults_and_overrides_are_typed():
    cfg = load_config(RunConfig, None, ["train.lr=0.2", "train.milestones=[3, 5]", "seed=7",
                                        "train.schedule=cosine", "limit=null", "train.momentum=1",
                                        "model.arch={layer1: zero}"])
    assert cfg.train.lr == 0.2 and cfg.seed == 7 and cfg.train.milestones == [3, 5]
    assert cfg.train.schedule == "cosine" and cfg.limit is None
    assert isinstance(cfg.train.momentum, float) and cfg.train.momentum == 1.0  # int accepted for float
    assert cfg.model.arch == {"layer1": "zero"}
    assert cfg.train.epochs == 240 and cfg.data.name == "digits"


def test_unknown_key_names_full_key_and_closest():
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, ["train.epoch=3"])
    assert "'train.epoch'" in str(err.value) and "'train.epochs'" in str(err.value)
    with pytest.raises(ConfigError, match="'sed'.*'seed'"):
        load_config(RunConfig, None, ["sed=1"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  wieght_decay: 0.1\n")
    with pytest.raises(ConfigError, match="'train.wieght_decay'.*'train.weight_decay'"):
        load_config(RunConfig, str(path), [])


@pytest.mark.parametrize("override, expected", [
    ("train.epochs=3.5", "'train.epochs' expects int"),
    ("train.epochs=true", "'train.epochs' expects int"),
    ("train.lr=fast", "'train.lr' expects float"),
    ("train.nesterov=1", "'train.nesterov' expects bool"),
    ("train.milestones=5", "'train.milestones' expects list"),
    ("train.milestones=[1, x]", "'train.milestones[1]' expects int"),
    ("limit=abc", "'limit' expects Optional[int]"),
    ("mode=c", "'mode': 'c' is not one of"),
    ("train=3", "train must be a mapping"),
])
def test_wrong_type_names_key_and_type(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, [override])
    assert expected in str(err.value)


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(RunConfig, None, ["train.lr"])
    with pytest.raises(ConfigError, match="'seed' expects int"):
        load_config(RunConfig, None, ["seed.x=1"])
    with pytest.raises(ConfigError, match="seed is a value, not a section"):
        load_config(RunConfig, None, ["seed=1", "seed.x=1"])


def test_yaml_round_trip(tmp_path):
    cfg = load_config(RunConfig, None, ["train.lr=0.3", "train.channels_last=true", "data.val_size=0.2",
                                        "model.space=digits_small", "model.arch={layer1: k3_d2}"])
    save_yaml(cfg, tmp_path / "config.yaml")
    again = load_config(RunConfig, str(tmp_path / "config.yaml"), [])
    assert again == cfg
    assert to_dict(again)["train"]["milestones"] == [150, 180, 210]


def test_cli_glue(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    (tmp_path / "c.yaml").write_text("seed: 3\ntrain: {epochs: 2}\n")
    args = parser.parse_args([str(tmp_path / "c.yaml"), "train.lr=0.5", "--out-dir", "somewhere"])
    cfg = config_from_args(RunConfig, args)
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr, cfg.out_dir) == (3, 2, 0.5, "somewhere")
    # overrides alone: the first is taken by argparse as CONFIG and moved back
    cfg = config_from_args(RunConfig, parser.parse_args(["seed=4", "train.epochs=1"]))
    assert (cfg.seed, cfg.train.epochs) == (4, 1)
    # --resume with no CONFIG reads the run's own config.yaml
    run = tmp_path / "run"
    run.mkdir()
    save_yaml(load_config(RunConfig, None, ["seed=9"]), run / "config.yaml")
    cfg = config_from_args(RunConfig, parser.parse_args(["--resume", "--out-dir", str(run)]))
    assert cfg.seed == 9 and cfg.out_dir == str(run)


def test_partial_section_keeps_the_parent_defaults():
    from nasdistill.pipeline import PipelineConfig

    cfg = load_config(PipelineConfig, None, ["search.search.warmup_epochs=7"])
    assert cfg.search.search.warmup_epochs == 7
    # the pipeline's own defaults for that section survive (not SearchSection's class defaults)
    from nasdistill.search import SearchSection

    declared = PipelineConfig().search
    assert cfg.search.search.penalty == declared.search.penalty != SearchSection().penalty
    assert cfg.search.search.arch_lr == declared.search.arch_lr != SearchSection().arch_lr
    assert cfg.search.train.epochs == declared.train.epochs
