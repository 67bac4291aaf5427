"""Advice that works: each "do X" of a lifecycle or main-job error is tested by doing X."""
import json
import shutil

import pytest

from nasdistill.cli import main

from teacher_run import TEACHER as TEACHER_ARGS
from small_data import TENTH_OF_DIGITS

TEACHER = ["teacher", *TEACHER_ARGS]
JOB = ["run", "search.targets=[]", "students.sampled=1", "teachers.methods=[ce]", "teachers.seeds=[0]",
       "distill.seeds=[0]", "distill.baseline=false", "teachers.train.epochs=2", "distill.train.epochs=1",
       "teachers.train.batch_size=128", "distill.train.batch_size=128", "export.enabled=false", "workers=1",
       TENTH_OF_DIGITS]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "job"
    assert main([*JOB, "--out-dir", str(out)]) == 0
    return out


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_restart_moves_an_unreadable_checkpoint_aside_and_starts_over(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    (run / "result.json").unlink()
    _truncate(run / "last.ckpt")
    assert main([*TEACHER, "--out-dir", str(run), "--resume"]) == 2
    assert "Start the run over with --restart" in capsys.readouterr().err
    assert main([*TEACHER, "--out-dir", str(run), "--restart"]) == 0
    aside = list(run.glob("last.ckpt.unreadable-*"))
    assert len(aside) == 1 and f"moved aside to {aside[0]}" in capsys.readouterr().err
    assert json.loads((run / "result.json").read_text())["epochs"] == 2


def test_deleting_an_unreadable_checkpoint_trains_the_run_again(finished, tmp_path):
    run = _copy(finished[0], tmp_path)
    (run / "result.json").unlink()
    (run / "last.ckpt").unlink()  # "(or delete the file)"
    assert main([*TEACHER, "--out-dir", str(run), "--resume"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 2


def test_another_configuration_continues_with_resume_amend(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    assert main([*TEACHER, "train.epochs=3", "--out-dir", str(run), "--resume"]) == 2
    assert "--resume --amend" in capsys.readouterr().err
    assert main([*TEACHER, "train.epochs=3", "--out-dir", str(run), "--resume", "--amend"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 3
    assert json.loads((run / "run.json").read_text())["amendments"][0]["at_epoch"] == 2


def test_a_folder_holding_a_run_is_reused_with_resume(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    assert main([*TEACHER, "--out-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*TEACHER, "--out-dir", str(run), "--resume"]) == 0


def test_a_run_without_run_json_continues_with_resume_amend(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    (run / "run.json").unlink()
    (run / "result.json").unlink()
    assert main([*TEACHER, "--out-dir", str(run), "--resume"]) == 2
    assert "--resume --amend" in capsys.readouterr().err
    assert main([*TEACHER, "--out-dir", str(run), "--resume", "--amend"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 2


def test_fewer_epochs_than_checkpointed_continue_with_as_many_or_more(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    assert main([*TEACHER, "train.epochs=1", "--out-dir", str(run), "--resume", "--amend"]) == 2
    err = capsys.readouterr().err
    assert "continue with train.epochs=2 or more (--resume --amend" in err
    assert main([*TEACHER, "train.epochs=3", "--out-dir", str(run), "--resume", "--amend"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 3


def test_damaged_metrics_start_over_with_restart(finished, tmp_path, capsys):
    run = _copy(finished[0], tmp_path)
    (run / "result.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("{broken\n" + "\n".join(lines[1:]) + "\n")
    # continuing past the checkpoint reads the metrics
    assert main([*TEACHER, "train.epochs=3", "--out-dir", str(run), "--resume", "--amend"]) == 2
    assert "is damaged (not JSON)" in capsys.readouterr().err
    assert main([*TEACHER, "train.epochs=3", "--out-dir", str(run), "--restart"]) == 0
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_non_finite_loss_continues_with_a_lower_lr_and_resume_amend(tmp_path, capsys):
    run = tmp_path / "nan"
    full = [a for a in TEACHER if not a.startswith("data.options")]  # steps enough to overflow in epoch 1
    assert main([*full, "train.lr=1e8", "--out-dir", str(run)]) == 2
    assert "Lower train.lr" in capsys.readouterr().err
    assert main([*full, "train.lr=0.1", "--out-dir", str(run), "--resume", "--amend"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 2


def test_main_job_restart_continues_past_an_unreadable_stage_checkpoint(job, tmp_path, capsys):
    out = _copy(job, tmp_path)
    stage = out / "teachers" / "ce_s0"
    (stage / "result.json").unlink()
    _truncate(stage / "last.ckpt")
    assert main([*JOB, "--out-dir", str(out)]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main([*JOB, "--out-dir", str(out), "--restart"]) == 0
    assert len(list(stage.glob("last.ckpt.unreadable-*"))) == 1
    assert json.loads((stage / "result.json").read_text())["epochs"] == 2


def test_main_job_restart_replaces_a_damaged_run_json(job, tmp_path, capsys):
    out = _copy(job, tmp_path)
    (out / "run.json").write_text("{not json")
    assert main([*JOB, "--out-dir", str(out)]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main([*JOB, "--out-dir", str(out), "--restart"]) == 0
    assert json.loads((out / "run.json").read_text())["kind"] == "pipeline"


def test_main_job_non_finite_loss_continues_with_a_lower_lr_and_restart(tmp_path, capsys):
    out = tmp_path / "job"
    assert main([*JOB, "teachers.train.lr=1e8", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Lower teachers.train.lr" in err and "--restart" in err
    assert main([*JOB, "teachers.train.lr=0.1", "--out-dir", str(out), "--restart"]) == 0
    assert (out / "report.md").is_file()


def test_main_job_restart_sets_aside_a_checkpoint_of_another_model(job, tmp_path, capsys):
    out = _copy(job, tmp_path)
    stage = out / "teachers" / "ce_s0"
    (stage / "result.json").unlink()
    [student_run] = [p for p in out.glob("distill/*/*") if (p / "last.ckpt").is_file()]
    shutil.copyfile(student_run / "last.ckpt", stage / "last.ckpt")  # a checkpoint of the student
    assert main([*JOB, "--out-dir", str(out)]) == 2
    assert "was written for another model" in capsys.readouterr().err
    assert main([*JOB, "--out-dir", str(out), "--restart"]) == 0
    assert len(list(stage.glob("last.ckpt.unused-*"))) == 1
    assert json.loads((stage / "result.json").read_text())["epochs"] == 2
