"""A full disk is a sentence: ENOSPC (or the RuntimeError torch's writer raises for it) in a
checkpoint, a file of the main job or an export names the folder, says the last good files are
kept, and the same command continues once there is space."""
import errno
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
import torch

from nasdistill.atomic import atomic_path
from nasdistill.cli import main

TEACHER = ["teacher", "examples/digits_teacher.yaml", "train.epochs=2", "train.batch_size=128", "train.threads=1"]
JOB = ["run", "search.targets=[]", "students.sampled=1", "teachers.methods=[ce]", "teachers.seeds=[0]",
       "distill.seeds=[0]", "distill.baseline=false", "teachers.train.epochs=2", "distill.train.epochs=1",
       "teachers.train.batch_size=128", "distill.train.batch_size=128", "export.enabled=false", "workers=1"]
ENV = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")


def _fail_second_save(monkeypatch):
    """torch.save of the checkpoints fails from the second one on, as on a disk that filled up:
    a RuntimeError of torch's zip writer whose context is the OSError(ENOSPC) of the write."""
    import nasdistill.engine.checkpoint as checkpoint

    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real(obj, f, *args, **kwargs)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", save)


def test_a_full_disk_during_a_checkpoint_is_a_paragraph_and_resume_continues(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_second_save(m)
        assert main([*TEACHER, "--out-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"no space left on the device holding the run folder {run}" in err
    assert "last.ckpt (epoch 1)" in err and "--resume" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # the paragraph and the --debug hint
    assert not list(run.glob(".tmp-*"))  # no partial file left
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 1  # the last good one
    assert main([*TEACHER, "--out-dir", str(run), "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((run / "result.json").read_text())["epochs"] == 2


def test_a_full_disk_in_the_main_job_names_its_folder_and_the_rerun_continues(tmp_path, monkeypatch, capsys):
    out = tmp_path / "job"
    with monkeypatch.context() as m:
        _fail_second_save(m)
        assert main([*JOB, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"no space left on the device holding the main job's folder {out}" in err
    assert "teachers" in err and "finished runs are reused" in err and "Traceback" not in err
    assert main([*JOB, "--out-dir", str(out)]) == 0
    assert json.loads((out / "teachers" / "ce_s0" / "result.json").read_text())["epochs"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names file descriptors through /proc")
def test_a_full_disk_during_the_export_names_the_folder_and_the_rerun_exports(tmp_path, monkeypatch, capsys):
    out = tmp_path / "job"
    job = [a for a in JOB if not a.startswith("export.")] + ["export.onnx=false"]
    real = os.fsync

    def fsync(fd):  # every file of the exports meets a full disk when it is flushed
        if f"{os.sep}students{os.sep}" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        assert main([*job, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"no space left on the device holding the main job's folder {out}" in err
    assert "students" in err and "Traceback" not in err
    assert not list(out.glob("students/*/.tmp-*"))
    assert main([*job, "--out-dir", str(out)]) == 0
    [export] = list(out.glob("students/*/export.json"))
    assert json.loads(export.read_text())["files"]["safetensors"]["bytes"] > 1000


def test_torch_writer_failures_on_a_path_are_recognised_as_a_full_disk(tmp_path, monkeypatch):
    """torch.export.save and torch.save to a path only say 'unexpected pos': the space left decides."""
    import nasdistill.atomic as atomic

    target = tmp_path / "model.pt2"
    target.write_bytes(b"previous")
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert info.value.errno == errno.ENOSPC and f"holding {tmp_path}" in str(info.value)
    assert target.read_bytes() == b"previous" and not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(RuntimeError, match="something else"):  # other errors keep their words
        with atomic_path(target):
            raise RuntimeError("something else")


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("mount") is None,
                    reason="needs Linux mount")
def test_a_real_full_tmpfs(tmp_path, capsys):
    """A 160 KiB tmpfs holds the run's small files but not its checkpoint (~700 KB): the command
    says so in one paragraph; after growing the tmpfs, --resume finishes the run."""
    mnt = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    ok, why = _mount_tmpfs(mnt, "160k")
    if not ok:
        pytest.skip(f"cannot mount a tmpfs here (not root, or a container without CAP_SYS_ADMIN): {why}")
    try:
        run = mnt / "run"
        cmd = [*TEACHER, "--out-dir", str(run)]  # the CLI in this process: no second torch import
        capsys.readouterr()
        rc = main(cmd)
        err = capsys.readouterr().err
        assert rc == 2, err[-2000:]
        assert f"no space left on the device holding the run folder {run}" in err
        assert "Traceback" not in err and not list(run.glob(".tmp-*"))
        grown = subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], capture_output=True, text=True)
        assert grown.returncode == 0, grown.stderr
        rc = main([*cmd, "--resume"])
        assert rc == 0, capsys.readouterr().err[-2000:]
        assert json.loads((run / "result.json").read_text())["epochs"] == 2
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_while_writing_model_pt2_is_raised_not_recorded_as_a_failed_format(tmp_path, monkeypatch):
    import nasdistill.network.export as export
    from nasdistill.models import create_model

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "_write_pt2", no_space)
    model = create_model("resnet8", num_classes=10, in_channels=1)
    record = export.ModelRecord.zoo("resnet8", 10, (1, 8, 8))
    with pytest.raises(OSError) as info:
        export.export_model(model, tmp_path / "e", record=record, onnx=False, verbose=False)
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / "e" / "export.json").exists()  # never a finished export
