"""The run lifecycle: finished means finished, configuration identity, one writer at a time, clear
errors for bad input, file permissions (issue: runs you can trust)."""
import errno
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from nasdistill.cli import main
from nasdistill.engine import RunDirectory

from teacher_run import TEACHER  # the arguments of the finished run (fixture ``finished``)
ENV = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")


def _copy(src, dst):
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ---------------------------------------------------------------------------- finished = finished
@pytest.mark.parametrize("lost", [("result.json",), ("model.safetensors",), ("result.json", "model.safetensors")])
def test_a_complete_checkpoint_without_its_finish_is_finished_on_resume(finished, tmp_path, lost, capsys):
    """As after a SIGKILL between the last checkpoint and result.json: --resume evaluates,
    writes the weights and the result, equal to the uninterrupted run's; never "nothing to do"."""
    src, files = finished
    run = _copy(src, tmp_path / "run")
    for name in lost:
        (run / name).unlink()
    assert RunDirectory(run).finished_result() is None
    assert main(["teacher", *TEACHER, "--out-dir", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "finishing the run" in out and "nothing to do" not in out
    assert (run / "model.safetensors").read_bytes() == files["model.safetensors"]
    before, after = json.loads(files["result.json"]), json.loads((run / "result.json").read_text())
    for key in ("test_acc", "best_acc", "last_acc", "epochs", "weights_sha256", "method"):
        assert after[key] == before[key], key
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_finished_run_is_reused_and_returns_the_same_result(finished, tmp_path, capsys):
    src, files = finished
    run = _copy(src, tmp_path / "run")
    assert main(["teacher", *TEACHER, "--out-dir", str(run), "--resume"]) == 0
    assert "finished run reused" in capsys.readouterr().out
    assert (run / "result.json").read_bytes() == files["result.json"]


def test_weights_that_disagree_with_the_result_are_not_finished(finished, tmp_path):
    src, _ = finished
    run = _copy(src, tmp_path / "run")
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights
    (run / "model.safetensors").write_bytes(bytes(data))
    assert RunDirectory(run).finished_result() is None


# ---------------------------------------------------------------------------- configuration identity
def test_resume_with_other_values_is_refused_naming_the_keys(finished, tmp_path, capsys):
    src, files = finished
    run = _copy(src, tmp_path / "run")
    assert main(["teacher", *TEACHER, "train.lr=0.5", "model.name=resnet14", "--out-dir", str(run),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.lr = 0.1 in the run, 0.5 now" in err and "model.name" in err
    assert "--restart" in err and "--out-dir" in err and "--amend" in err
    assert (run / "config.yaml").read_bytes() == files["config.yaml"]  # nothing changed
    # --restart starts over with the new values, and config.yaml says so
    assert main(["teacher", *TEACHER, "train.lr=0.5", "--out-dir", str(run), "--restart"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.5
    assert json.loads((run / "run.json").read_text())["identity"]["train.lr"] == 0.5


def test_amend_records_what_changed_and_resume_with_another_model_says_so(finished, tmp_path, capsys):
    src, _ = finished
    run = _copy(src, tmp_path / "run")
    (run / "result.json").unlink()
    assert main(["teacher", *TEACHER, "model.name=resnet14", "--out-dir", str(run), "--resume", "--amend"]) == 2
    err = capsys.readouterr().err
    assert "was written for another model" in err and "--restart" in err and "Traceback" not in err


def test_keys_that_do_not_change_the_result_do_not_refuse_reuse(finished, tmp_path, capsys):
    src, _ = finished
    run = _copy(src, tmp_path / "run")
    assert main(["teacher", *TEACHER, "train.threads=2", "train.device=cpu", "--out-dir", str(run),
                 "--resume"]) == 0
    assert "finished run reused" in capsys.readouterr().out


# ---------------------------------------------------------------------------- one writer at a time
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = RunDirectory(run).lock()  # this process holds the folder
    try:
        # another process (one interpreter for both commands) asks for the folder: a teacher run, then
        # the main job; each says its exit code and time, and what it wrote to stderr in between
        script = (
            "import json, sys, time\n"
            "from nasdistill.cli import main\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    t0 = time.time()\n"
            "    rc = main(args)\n"
            "    print('@@rc', json.dumps([rc, time.time() - t0]), flush=True)\n"
            "    print('@@end', file=sys.stderr, flush=True)\n")
        # ... and a teacher run in a folder inside the held one (a main job's teachers/ce_s1)
        inner = run / "teachers" / "ce_s1"
        commands = [["teacher", *TEACHER, "--out-dir", str(run)], ["run", "--out-dir", str(run)],
                    ["teacher", *TEACHER, "--out-dir", str(inner)]]
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], env=ENV, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (teacher_rc, teacher_s), (job_rc, _), (inner_rc, _) = [
            json.loads(line[len("@@rc "):]) for line in proc.stdout.splitlines() if line.startswith("@@rc ")]
        teacher_err, job_err, inner_err, _ = proc.stderr.split("@@end\n")
        assert teacher_s < 60 and teacher_rc == 2
        assert f"in use by process {os.getpid()}" in teacher_err and "Traceback" not in teacher_err
        assert job_rc == 2 and f"process {os.getpid()}" in job_err
        assert inner_rc == 2 and f"{inner} lies inside {run}, which process {os.getpid()} holds" in inner_err
        assert "Traceback" not in inner_err and not inner.exists()
    finally:
        holder.unlock()
    assert not (run / "result.json").exists()


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    code = ("import sys, time; from nasdistill.engine import RunDirectory; "
            f"RunDirectory({str(tmp_path / 'run')!r}).lock(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    RunDirectory(tmp_path / "run").lock().unlock()  # free again


# ---------------------------------------------------------------------------- bad input: a sentence
@pytest.mark.parametrize("args,expected", [
    (["train.epochs=0"], "'train.epochs' must be >= 1, got 0"),
    (["train.epochs=-1"], "'train.epochs' must be >= 1, got -1"),
    (["train.eval_every=0"], "'train.eval_every' must be >= 1"),
    (["train.device=banana"], "'train.device' is 'banana', not a device name"),
    (["train.lr=abc"], "'train.lr' expects float"),
    (["trian.epochs=3"], "did you mean 'train.epochs'"),
    (["data.options={size: 16}"], "has no option 'size' for dataset 'digits'"),
])
def test_bad_values_are_refused_by_name_before_anything_runs(tmp_path, capsys, args, expected):
    assert main(["teacher", *args, "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and "command-line override" in err
    assert not (tmp_path / "run").exists()


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    assert main(["teacher", str(bad), "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid YAML (line" in err


def test_yaml_off_and_number_spellings(tmp_path):
    from nasdistill.config import load_config
    from nasdistill.teachers import teacher_config_class

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  amp: off\n  lr: 1e-3\n  weight_decay: 5E-4\n  epochs: 1e1\n")
    cfg = load_config(teacher_config_class(), str(cfg_file), ["train.momentum=9e-1"])
    assert (cfg.train.amp, cfg.train.lr, cfg.train.weight_decay, cfg.train.epochs, cfg.train.momentum) == \
        ("off", 1e-3, 5e-4, 10, 0.9)


def test_a_damaged_checkpoint_is_a_clear_error(finished, tmp_path, capsys):
    src, _ = finished
    run = _copy(src, tmp_path / "run")
    (run / "result.json").unlink()
    ckpt = run / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 3])
    assert main(["teacher", *TEACHER, "--out-dir", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt} is unreadable" in err and "--restart" in err and "Traceback" not in err


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    from nasdistill.engine.rundir import MetricsLog, read_metrics

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "x": 1}\n{"epoch": 2, "x": 2}\n{"epoch": 3, "x"')
    log = MetricsLog(run, resume_epoch=2, tensorboard=False)
    log.log({"epoch": 3, "x": 3})
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


def test_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["teacher", *TEACHER, "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no space left on the device" in err and str(tmp_path / "run") in err and "Traceback" not in err
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".tmp-")]


def test_an_unwritable_folder_names_the_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["teacher", *TEACHER, "--out-dir", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    """A user's mistake is one line; ``--debug`` lets the exception out of ``main``, so that Python
    prints its traceback (``python -m nasdistill`` and the console script call ``main``)."""
    args = ["teacher", "train.epochs=0", "--out-dir", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="train.epochs"):
        main(["--debug", *args])
    assert not (tmp_path / "r").exists()


def test_files_are_readable_by_others_as_the_umask_says(finished):
    run, _ = finished
    for name in ("result.json", "metrics.csv", "metrics.jsonl", "last.ckpt", "model.safetensors", "model.json",
                 "config.yaml", "run.json"):
        mode = os.stat(run / name).st_mode & 0o777
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_sigterm_ends_a_run_with_one_line_and_keeps_its_folder_resumable(tmp_path):
    import signal

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nasdistill", "teacher", *TEACHER, "train.epochs=200",
                             "--out-dir", str(run)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (run / "last.ckpt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["nasdistill teacher: terminated (SIGTERM); rerun the same command to continue"]
    assert (run / "last.ckpt").exists() and not (run / "result.json").exists()
