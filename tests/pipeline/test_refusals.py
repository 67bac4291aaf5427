"""A refusal writes nothing: every check of a configuration (values, data present, the space, the
search targets against the costs the space reaches) runs before any file of the run is written,
so the corrected command simply runs; messages name the key the user typed."""
import json

import pytest

from nasdistill.cli import main
from nasdistill.engine.rundir import RUN_FILES

#: a main job of two runs (one CE teacher, one KD student), about 20 s on a CPU core
JOB = ["search.targets=[]", "students.sampled=1", "teachers.methods=[ce]", "teachers.seeds=[0]",
       "distill.seeds=[0]", "distill.baseline=false", "teachers.train.epochs=1", "distill.train.epochs=1",
       "teachers.train.batch_size=128", "distill.train.batch_size=128", "export.enabled=false", "workers=1"]


@pytest.mark.parametrize("bad,expected", [
    (["search.targets=[-5]"], "command-line override 'search.targets=[-5]': config key 'search.targets' must hold"),
    (["search.targets=[100]"], "config key 'search.targets' holds 100, outside the MACs the space 'digits_small' "
                               "can reach for this data (1x8x8 inputs, 10 classes): 43,264 to 14,625,024"),
    (["search.targets=[600000,600000]"], "'search.targets' [600000.0, 600000.0] repeats a target"),
    (["data.name=cifar100", "data.root={tmp}/nowhere"], "cifar100: file 'train' not found"),
    (["distill.methods=[fitnet]", "distill.cache_teacher_logits=true"],
     "distill.cache_teacher_logits=true with method=fitnet: fitnet compares teacher features"),
])
def test_a_refused_main_job_writes_nothing(tmp_path, capsys, bad, expected):
    out = tmp_path / "job"
    bad = [b.replace("{tmp}", str(tmp_path)) for b in bad]
    assert main(["run", *JOB, *bad, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert "'target'" not in err  # the key as typed, not the stage's
    assert not out.exists()


def test_the_corrected_main_job_then_simply_runs(tmp_path, capsys):
    out = tmp_path / "job"
    assert main(["run", *JOB, "search.targets=[100]", "--out-dir", str(out)]) == 2
    capsys.readouterr()
    assert main(["run", *JOB, "search.targets=[600000]", "search.train.epochs=1", "search.search.warmup_epochs=0",
                 "search.train.batch_size=128", "--out-dir", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["search.targets"] == [600000.0]
    assert (out / "report.md").is_file()
    assert "  done teachers/ce_s0: test " in capsys.readouterr().out  # a line per finished run


def test_a_job_that_stopped_before_any_run_progressed_is_taken_over(tmp_path, capsys):
    """A job refused by a stage before any run trained an epoch (here a teacher model that does not
    exist) holds nothing to keep: the corrected command runs instead of being refused as 'another
    configuration'."""
    out = tmp_path / "job"
    assert main(["run", *JOB, "teachers.model.name=resnet9", "--out-dir", str(out)]) == 2
    assert "resnet9" in capsys.readouterr().err
    assert main(["run", *JOB, "--out-dir", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["teachers.model.name"] == "resnet8"


def test_a_refused_search_writes_nothing_and_names_the_range(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["search", "examples/digits_search.yaml", "search.target=10", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("command-line override 'search.target=10': config key 'search.target' holds 10, outside the MACs "
            "the space 'digits_small' can reach for this data (1x8x8 inputs, 10 classes): 43,264 to 14,625,024") in err
    assert not out.exists()


def test_a_run_whose_model_cannot_be_built_writes_no_run_file(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["teacher", "examples/digits_teacher.yaml", "train.epochs=1", "train.batch_size=128"]
    assert main([*args, "model.name=resnet9", "--out-dir", str(out)]) == 2
    assert "resnet9" in capsys.readouterr().err
    assert not [n for n in RUN_FILES if (out / n).exists()]
    assert main([*args, "--out-dir", str(out)]) == 0  # no --resume/--restart needed: nothing was there


def test_a_search_without_a_held_out_split_is_refused_before_its_folder_is_written(tmp_path, capsys):
    from nasdistill.cli import main

    out = tmp_path / "s"
    code = main(["search", "examples/digits_search.yaml", "data.val_size=0", "train.epochs=1",
                 "--out-dir", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "config key 'data.val_size' is needed" in err and "Traceback" not in err
