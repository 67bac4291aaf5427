"""`nasdistill teacher`: full run directory, unknown keys, overwrite protection, model rebuild."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from nasdistill import load
from nasdistill.cli import main
from nasdistill.data import load_dataset, loaders_for
from nasdistill.engine import evaluate, load_checkpoint

TINY = ["model.space=digits_small",
        "model.arch={" + ", ".join(f"layer{i}: zero" for i in range(1, 7)) + "}",
        "train.epochs=2", "train.batch_size=64", "train.lr=0.1", "train.schedule=cosine"]


def test_digits_run_writes_full_run_directory(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["teacher", *TINY, "--out-dir", str(run)]) == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "run.json", "model.json", "metrics.csv", "metrics.jsonl", "last.ckpt",
            "model.safetensors", "result.json"} <= names
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"] == "ce" and config["train"]["epochs"] == 2 and config["out_dir"] == str(run)
    assert config["ce"] == {"label_smoothing": 0.0}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    result = json.loads((run / "result.json").read_text())
    assert result["epochs"] == 2 and result["last_acc"] == rows[-1]["val_acc"] > 30
    ckpt = load_checkpoint(run / "last.ckpt")  # weights_only=True
    assert ckpt["epoch"] == 2 and set(ckpt["optimizers"]) == {"main"} and "numpy" in ckpt["rng"]
    # the run's model can be rebuilt and evaluates to the logged accuracy
    model = load(run)
    weights = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    _, val, _ = loaders_for(load_dataset("digits", seed=0), 64, "cpu")
    assert evaluate(model, val, torch.device("cpu"))["top1"] == pytest.approx(result["last_acc"])
    # an existing run is not overwritten without --resume
    capsys.readouterr()
    assert main(["teacher", *TINY, "--out-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_unknown_key_exits_nonzero_naming_it(tmp_path, capsys):
    # in this process: the exit status of `python -m nasdistill` is main()'s (test_lifecycle.py)
    assert main(["teacher", "train.epoch=3", "--out-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "'train.epoch'" in err and "'train.epochs'" in err
    assert not (tmp_path / "x").exists()


def test_wrong_type_and_unknown_method_exit_nonzero(tmp_path, capsys):
    assert main(["teacher", "train.lr=fast", "--out-dir", str(tmp_path / "a")]) == 2
    assert "'train.lr' expects float" in capsys.readouterr().err
    assert main(["teacher", "method=nope", "--out-dir", str(tmp_path / "a")]) == 2
    assert "unknown teacher method 'nope'" in capsys.readouterr().err
    assert main(["teacher", "ce.label_smothing=0.1", "--out-dir", str(tmp_path / "a")]) == 2
    assert "'ce.label_smoothing'" in capsys.readouterr().err


def test_example_config_loads():
    from nasdistill.config import load_config
    from nasdistill.teachers import teacher_config_class
    cfg = load_config(teacher_config_class(), "examples/digits_teacher.yaml", [])
    assert cfg.data.name == "digits" and cfg.method == "ce" and cfg.train.epochs <= 10


def test_help_lists_overrides(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "key=value" in out and "--resume" in out and "--out-dir" in out
