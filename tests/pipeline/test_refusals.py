"""A refusal writes nothing: every check of a configuration (values, data present, the space, the
search targets against the costs the space reaches) runs before any file of the run is written,
so the corrected command simply runs; messages name the key the user typed."""
import json

import pytest

from nasdistill.cli import main
from nasdistill.engine.rundir import RUN_FILES

from small_data import TENTH_OF_DIGITS

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
    # a split the dataset cannot make names the option the user set, the defaults it meets, and the source
    (["data.options={test_size: 0.95}"], "command-line override 'data.options={test_size: 0.95}': config key "
                                         "'data.options.test_size' does not fit dataset 'digits': test_size=0.95 "
                                         "and val_size=0.1 leave no training samples out of 1797"),
    (["data.options.train_size=1300"], "override 'data.options.train_size=1300': config key 'data.options.train_size'"
                                       " does not fit dataset 'digits': train_size=1300 asks for 1300 training "
                                       "samples; test_size=0.2 and val_size=0.1 leave 1 to 1258"),
    (["data.val_size=1700"], "'data.val_size=1700': config key 'data.val_size' does not fit dataset 'digits'"),
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
                 "search.train.batch_size=128", TENTH_OF_DIGITS, "--out-dir", str(out)]) == 0
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


# ---------------------------------------------------------------------------- every key, up front
def _wrong_type(tp):
    """A value no parser of the type ``tp`` accepts (None where every value is accepted)."""
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any or typing.Any in args:
        return None
    if tp is str or (origin is typing.Union and str in args):
        return "[1, 2]"
    if origin is list or tp is list or (origin is typing.Union and any(typing.get_origin(a) is list for a in args)):
        return "{a: 1}"
    if tp is dict or origin is dict:
        return "[1]"
    return "{a: 1}" if tp is bool else "banana"


def _key_types():
    import dataclasses
    import typing

    from nasdistill.pipeline import pipeline_config_class

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, prefix + f.name + ".")
            else:
                yield prefix + f.name, tp
    return list(walk(pipeline_config_class()))


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a run of the job starts to train (in this process: ``workers=1``)."""
    import nasdistill.engine.run as run

    def train(*args, **kwargs):
        raise AssertionError("a run trained although the job should have been refused")
    monkeypatch.setattr(run, "_train", train)


def test_every_key_of_the_main_job_refuses_a_value_of_the_wrong_type_up_front(tmp_path, capsys, no_training):
    """Each of the main job's keys (every section, every registered method's section), given a value
    of the wrong type, is refused before anything is written, naming the key and the override."""
    keys = [(k, _wrong_type(tp)) for k, tp in _key_types()]
    assert len(keys) > 150 and any(k == "distill.train.device" for k, _ in keys)
    for key, value in keys:
        if value is None:  # (a free-form key, e.g. teachers.model.arch: checked by building the model below)
            continue
        out = tmp_path / key
        override = f"{key}={value}"
        assert main(["run", "workers=1", override, "--out-dir", str(out)]) == 2, override
        err = capsys.readouterr().err
        assert f"command-line override {override!r}: config key '{key}" in err, (override, err)
        assert "Traceback" not in err and not out.exists(), override


#: Values of the right type that the job can only refuse from the data, the space, the machine or
#: a method's model: (overrides, the key the message must name).
SEMANTIC = [
    (["space=no_such_space"], "space"),
    (["threads=0"], "threads"),
    (["workers=0"], "workers"),
    (["runs_per_gpu=0"], "runs_per_gpu"),
    (["data.val_size=0"], "data.val_size"),
    (["search.targets=[100]"], "search.targets"),
    (["search.train.device=cuda:99"], "search.train.device"),
    (["search.search.tolerance=2"], "search.search.tolerance"),
    (["search.search.space=gtn_cifar"], "search.search.space"),
    (["students.sampled=100000"], "students.sampled"),
    (["students.random_per_target=500"], "students.random_per_target"),
    (["students.sampled=-1"], "students.sampled"),
    (["teachers.model.name=resnet9"], "teachers.model.name"),
    (["teachers.model.options={depth: 3}"], "teachers.model.options"),
    (["teachers.methods=[]"], "teachers.methods"),
    (["teachers.methods=[nope]"], "teachers.methods"),
    (["teachers.seeds=[]"], "teachers.seeds"),
    (["teachers.train.device=cuda:99"], "teachers.train.device"),
    (["teachers.gtn.blocks=9"], "teachers.gtn"),
    (["teachers.gtn.temperature=0"], "teachers.gtn.temperature"),
    (["teachers.methods=[ce,sftn]", "teachers.sftn.student.name=foo"], "teachers.sftn.student"),
    (["teachers.methods=[ce,sftn]", "teachers.student_from_search=false", "teachers.sftn.student.name=foo"],
     "teachers.sftn.student.name"),
    (["teachers.methods=[gtn]", "teachers.init_from_ce=true"], "teachers.init_from_ce"),
    (["teachers.calibrate=true", "data.val_size=0", "search.targets=[]"], "teachers.calibrate"),
    (["distill.train.device=cuda:99"], "distill.train.device"),
    (["distill.seeds=[]"], "distill.seeds"),
    (["distill.kd.temperature=0"], "distill.kd.temperature"),
    (["distill.methods=[fitnet]", "distill.fitnet.hint_pair=9"], "distill.fitnet"),
    (["distill.methods=[crd]", "distill.crd.feat_dim=0"], "distill.crd.feat_dim"),
    (["distill.methods=[]", "distill.baseline=false"], "distill.methods"),
    (["backend=ray", "ray.gpus_per_run=-1"], "ray.gpus_per_run"),
]


@pytest.mark.parametrize("bad,key", SEMANTIC, ids=[" ".join(b) for b, _ in SEMANTIC])
def test_a_value_the_job_can_only_refuse_later_is_refused_before_anything_is_written(tmp_path, capsys, no_training,
                                                                                        bad, key):
    out = tmp_path / "job"
    assert main(["run", "workers=1", *bad, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"config key '{key}" in err and "command-line override '" in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_refusal_names_the_yaml_line_the_value_came_from(tmp_path, capsys, no_training):
    config = tmp_path / "job.yaml"
    config.write_text("workers: 1\ndistill:\n  seeds: [0]\n  train:\n    epochs: 2\n    device: cuda:99\n")
    out = tmp_path / "job"
    assert main(["run", str(config), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{config}, line 6: config key 'distill.train.device' is 'cuda:99'" in err, err
    assert not out.exists()
    # the command line is the later source: it wins, and a refusal then names it
    assert main(["run", str(config), "distill.train.device=cuda:98", "--out-dir", str(out)]) == 2
    assert "command-line override 'distill.train.device=cuda:98'" in capsys.readouterr().err


def test_the_ray_backend_without_ray_is_refused_before_anything_is_written(tmp_path, capsys, no_training,
                                                                           monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    out = tmp_path / "job"
    assert main(["run", "workers=1", "backend=ray", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "command-line override 'backend=ray': config key 'backend'" in err
    assert "pip install 'nasdistill[ray]'" in err and not out.exists()
