"""`nasdistill distill` on the command line: run directory, resume, config errors, the example."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from nasdistill import load
from nasdistill.cli import main
from nasdistill.data import load_dataset, loaders_for
from nasdistill.engine import evaluate, read_metrics

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_distill.yaml"


@pytest.fixture(scope="module")
def teacher_dir(resnet8_teacher):
    return resnet8_teacher  # the session's resnet8 CE run (conftest.py)


def test_example_config_distills_and_resumes(teacher_dir, tmp_path, capsys):
    run = tmp_path / "kd"
    args = ["distill", str(EXAMPLE), f"teacher={teacher_dir}", "train.epochs=1",
            "train.batch_size=128", "--out-dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert summary["method"] == "kd"
    for name in ("config.yaml", "run.json", "model.json", "metrics.csv", "metrics.jsonl", "last.ckpt",
                 "model.safetensors", "result.json"):
        assert (run / name).is_file(), name
    record = json.loads((run / "model.json").read_text())
    assert record["kind"] == "space" and record["space"]["name"] == "digits_small"  # the STUDENT
    # the printed test accuracy is the saved student's, measured again here on the test split
    assert json.loads((run / "result.json").read_text())["test_acc"] == summary["test_acc"]
    _, _, test = loaders_for(load_dataset("digits", seed=0), 256, "cpu")
    assert evaluate(load(run), test, torch.device("cpu"))["top1"] == pytest.approx(summary["test_acc"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"] == "kd" and saved["teacher"] == str(teacher_dir)
    # a second run into the same directory needs --resume
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume with another value is refused, naming the key; --amend continues and records it
    assert main(["distill", "train.epochs=2", "--out-dir", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs = 1 in the run, 2 now" in err and "--amend" in err
    assert main(["distill", "train.epochs=2", "--out-dir", str(run), "--resume", "--amend"]) == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    result = json.loads((run / "result.json").read_text())
    assert result["epochs"] == 2 and result["method"] == "kd"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["amendments"][0]["changed"] == {"train.epochs": [1, 2]}
    assert manifest["amendments"][0]["at_epoch"] == 1


def test_method_options_and_cache_flag_from_cli(teacher_dir, tmp_path, capsys):
    run = tmp_path / "dkd"
    assert main(["distill", str(EXAMPLE), f"teacher={teacher_dir}", "method=dkd", "dkd.beta=6",
                 "cache_teacher_logits=true", "train.epochs=1", "train.batch_size=128",
                 "--out-dir", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "dkd" and result["cache_teacher_logits"] is True
    assert 0 < result["teacher_cache_build_s"] < 60  # one pass of the teacher over the training set
    assert yaml.safe_load((run / "config.yaml").read_text())["dkd"]["beta"] == 6.0


def test_config_errors_exit_2_with_named_key(teacher_dir, tmp_path, capsys):
    assert main(["distill", str(EXAMPLE), f"teacher={teacher_dir}", "kd.temprature=2",
                 "--out-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "kd.temprature" in err and "kd.temperature" in err
    assert main(["distill", str(EXAMPLE), f"teacher={tmp_path / 'missing'}",
                 "--out-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "does not exist" in err
    assert main(["distill", "method=kd", "--out-dir", str(tmp_path / "c")]) == 2
    assert "teacher=RUN_DIR" in capsys.readouterr().err
    assert main(["distill", str(EXAMPLE), f"teacher={teacher_dir}", "method=at",
                 "cache_teacher_logits=true", "--out-dir", str(tmp_path / "d")]) == 2
    assert "cache_teacher_logits" in capsys.readouterr().err
    for sub in "abcd":
        assert not (tmp_path / sub).exists()
