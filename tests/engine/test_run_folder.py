"""The run folder has one owner, the run lifecycle: a task declares the files it writes, the
lifecycle records them in run.json, reuses a finished run only when they exist and removes them on
--restart; the engine names no method's files."""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from nasdistill.data.config import DataConfig
from nasdistill.engine import RunDirectory, TrainConfig, TrainTask
from nasdistill.engine.run import RunMethod, run_training
from nasdistill.teachers.ce import CETask

ENGINE = Path(__file__).resolve().parents[2] / "nasdistill" / "engine"


@dataclass
class ToyConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=128, lr=0.1, threads=1))


class ToyTask(CETask):
    """CE on a linear model that also writes a file and a folder of its own."""

    artifacts = ("toy_notes.json", "toy_parts")

    def save_artifacts(self, run_dir):
        norm = float(self.model[1].weight.detach().norm())
        (Path(run_dir) / "toy_notes.json").write_text(json.dumps({"weight_norm": norm}))
        (Path(run_dir) / "toy_parts").mkdir(exist_ok=True)
        (Path(run_dir) / "toy_parts" / "part0.txt").write_text("x")


class PlainTask(CETask):
    """The same training, no files of its own (what a restart with another task builds)."""


class ForgetfulTask(CETask):
    artifacts = ("never_written.bin",)


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def method(task_class, kind="toy"):
    return RunMethod(kind, lambda cfg, splits, loaders, device, world: task_class(linear()))


@pytest.fixture(scope="module")
def splits():
    return DataConfig().load()


def run(folder, mode, splits, task_class=ToyTask):
    return run_training(ToyConfig(), method(task_class), folder, mode=mode, splits=splits, verbose=True)


def test_declared_artifacts_are_recorded_and_removed_by_restart(splits, tmp_path):
    folder = tmp_path / "run"
    run(folder, "new", splits)
    assert json.loads((folder / "run.json").read_text())["artifacts"] == ["toy_notes.json", "toy_parts"]
    assert (folder / "toy_notes.json").is_file() and (folder / "toy_parts" / "part0.txt").is_file()
    (folder / "my_notes.txt").write_text("the user's own file")
    # the task of the restarted run declares nothing: what the run recorded is removed all the same
    run(folder, "restart", splits, PlainTask)
    assert not (folder / "toy_notes.json").exists() and not (folder / "toy_parts").exists()
    assert (folder / "my_notes.txt").read_text() == "the user's own file"
    assert (folder / "result.json").is_file() and json.loads((folder / "run.json").read_text())["artifacts"] == []


def test_wipe_needs_no_task(splits, tmp_path):
    folder = tmp_path / "run"
    run(folder, "new", splits)
    (folder / "my_notes.txt").write_text("kept")
    RunDirectory(folder).wipe()
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "my_notes.txt"]


def test_a_finished_run_is_reused_only_when_its_artifacts_exist(splits, tmp_path, capsys):
    folder = tmp_path / "run"
    first = run(folder, "new", splits)
    capsys.readouterr()
    assert run(folder, "resume", splits) == first
    assert "finished run reused" in capsys.readouterr().out
    (folder / "toy_notes.json").unlink()
    assert RunDirectory(folder).finished_result() is None
    again = run(folder, "resume", splits)
    assert "finishing the run" in capsys.readouterr().out  # from its checkpoint, not trained again
    assert (folder / "toy_notes.json").is_file() and again["weights_sha256"] == first["weights_sha256"]
    assert RunDirectory(folder).finished_result() == again


def test_a_declared_artifact_that_is_not_written_is_an_error(splits, tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError, match="never_written.bin"):
        run(folder, "new", splits, ForgetfulTask)
    assert not (folder / "result.json").exists()


@pytest.mark.parametrize("name", ["result.json", "model.safetensors", "../outside", "sub/file", ""])
def test_artifact_names_that_a_restart_must_not_remove_are_refused(splits, tmp_path, name):
    class Bad(CETask):
        artifacts = (name,)

    folder = tmp_path / "run"
    with pytest.raises(ValueError, match="Bad.artifacts"):
        run(folder, "new", splits, Bad)
    assert not (folder / "run.json").exists()


def test_a_hand_edited_run_json_never_removes_files_outside_the_run(splits, tmp_path):
    folder = tmp_path / "run"
    run(folder, "new", splits)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the run's")
    manifest = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**manifest, "artifacts": ["../outside.txt", "toy_parts"]}))
    RunDirectory(folder).wipe()
    assert outside.is_file() and not (folder / "toy_parts").exists()


def _declared_names() -> set:
    """Every artifact name a task of the package declares as a class attribute."""
    import nasdistill.teachers  # noqa: F401  (registers the teacher tasks)

    names, todo = set(), [TrainTask]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        declared = cls.__dict__.get("artifacts")
        if isinstance(declared, tuple) and cls.__module__.startswith("nasdistill."):
            names.update(declared)
    return names


def test_no_engine_file_names_a_methods_files():
    names = _declared_names() | {"branches.safetensors", "phi.json"}
    assert {"branches.safetensors", "phi.json"} <= _declared_names()  # declared by the teachers themselves
    for path in ENGINE.glob("*.py"):
        text = path.read_text()
        found = [n for n in names if re.search(re.escape(n), text)]
        assert not found, f"{path.name} names {found}: the task declares its files (TrainTask.artifacts)"


def test_the_checkpoint_epoch_follows_every_new_checkpoint_and_damage(tmp_path):
    """A checkpoint's epoch is read once per version of the file: a newer checkpoint (written and
    renamed into place, as training does), one rewritten in place, and a damaged one are each read
    anew, never answered from an earlier read."""
    import os

    from nasdistill.engine.checkpoint import save_checkpoint

    rd, ckpt = RunDirectory(tmp_path), tmp_path / "last.ckpt"
    assert rd.checkpoint_epoch() is None
    save_checkpoint(ckpt, {"epoch": 3, "w": torch.zeros(100)})
    assert rd.checkpoint_epoch() == 3 and rd.checkpoint_epoch() == 3
    save_checkpoint(ckpt, {"epoch": 4, "w": torch.zeros(100)})  # same size, a new file
    assert rd.checkpoint_epoch() == 4
    stamp = ckpt.stat().st_mtime_ns
    with open(ckpt, "wb") as f:  # rewritten in place (same inode, same size), its time 1 ns after the last
        torch.save({"epoch": 7, "w": torch.zeros(100)}, f)
    os.utime(ckpt, ns=(stamp, stamp + 1))
    assert rd.checkpoint_epoch() == 7
    data = bytearray(ckpt.read_bytes())
    ckpt.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert rd.checkpoint_epoch() is None
