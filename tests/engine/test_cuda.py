"""The CUDA code paths at tiny size, under the engine's CUDA defaults (bf16 autocast, channels_last,
whole-step CUDA graphs where safe): kill + resume, export of CUDA-trained weights, the shrunk main
job on CIFAR-100-format files, and graphed == eager steps. Every training command (search full and
two, each teacher, each distiller, the logit cache) runs in the ``cuda`` profile of test_bf16.py.

Skipped (with the reason) where no GPU is present. ``NASDISTILL_TEST_DEVICE=cpu`` runs the same
tests on the CPU with ``train.amp=bf16`` to check the tests themselves; GPU-only assertions (graph
replays) are then skipped.

    python -m pytest -m cuda -q          # on a machine with a GPU
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nasdistill.engine.run import RunFolder
from nasdistill.cli import main

DEVICE = os.environ.get("NASDISTILL_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (none here); NASDISTILL_TEST_DEVICE=cpu runs "
                                        "these tests on the CPU under bf16 autocast")]
# the CUDA defaults (amp auto = bf16, channels_last auto, cuda_graphs auto); on the CPU: bf16 too
COMMON = [f"train.device={DEVICE}", "train.batch_size=64"] + ([] if ON_GPU else ["train.amp=bf16"])
ENV = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")


def _result(out):
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["teacher", "examples/digits_teacher.yaml", *COMMON, "train.epochs=2",
                 "--out-dir", str(out)]) == 0
    return out


def test_kill_and_resume(tmp_path):
    args = [sys.executable, "-m", "nasdistill", "teacher", "examples/digits_teacher.yaml", *COMMON,
            "train.epochs=4", "--out-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "result.json").exists()
    done = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and _result(tmp_path / "run")["epochs"] == 4


def test_export_of_cuda_trained_weights(tmp_path, teacher_dir):
    from nasdistill import load
    from nasdistill.network.export import export_model, onnx_available
    from nasdistill.network import load_pt2
    from nasdistill.network.record import ModelRecord

    model = load(teacher_dir, device=DEVICE)
    result = export_model(model, tmp_path / "e", record=ModelRecord.read(teacher_dir), onnx="auto", verbose=False)
    assert result["max_abs_diff"]["safetensors"] <= 1e-5 and result["max_abs_diff"]["pt2"] <= 1e-4
    if onnx_available() is None:
        assert result["max_abs_diff"]["onnx"] <= 1e-3
    x = torch.randn(3, 1, 8, 8)
    cpu = load(tmp_path / "e")
    with torch.no_grad():
        assert (cpu(x) - model.float()(x.to(DEVICE)).cpu()).abs().max() <= 1e-4
        assert (load_pt2(tmp_path / "e")(x.to(DEVICE)).cpu() - cpu(x)).abs().max() <= 1e-4


def test_shrunk_main_job_on_cifar100_files_with_kill_and_rerun(tmp_path):
    from nasdistill.data.cifar import write_synthetic_cifar100

    write_synthetic_cifar100(tmp_path / "data", n_train=1024, n_test=256)
    shrink = [f"data.root={tmp_path / 'data'}", "data.val_size=256", "search.targets=[60000000]",
              "search.train.epochs=2", "search.search.warmup_epochs=1", "search.train.batch_size=64",
              "students.sampled=1", "teachers.train.epochs=2", "teachers.seeds=[0]", "distill.seeds=[0]",
              "distill.train.epochs=2", "workers=1", "export.onnx=false", "teachers.model.name=resnet8",
              f"search.train.device={DEVICE}", f"teachers.train.device={DEVICE}",
              f"distill.train.device={DEVICE}"]
    if not ON_GPU:
        shrink += ["search.train.amp=bf16", "teachers.train.amp=bf16", "distill.train.amp=bf16"]
    args = [sys.executable, "-m", "nasdistill", "run", "examples/cifar100_gtn.yaml", *shrink,
            "--out-dir", str(tmp_path / "job")]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    teachers = tmp_path / "job" / "teachers"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not teachers.exists():
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "job" / "report.md").read_text()
    assert "GTN+KD" in report and "CE+KD" in report
    again = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "to run" not in again.stdout  # every stage reused


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs exist on CUDA only")
def test_graphed_step_equals_eager_step():
    from nasdistill.data import load_dataset, loaders_for
    from nasdistill.distill import build_distiller
    from nasdistill.distill.task import DistillTask
    from nasdistill.engine import TrainConfig, Trainer
    from nasdistill.models import create_model

    splits = load_dataset("synthetic", size=32, channels=3, num_classes=100, n_train=1024, val_size=0)
    train, _, _ = loaders_for(splits, 64, DEVICE, seed=0, augment=True)

    def run(graphs: bool):
        torch.manual_seed(0)
        teacher = create_model("resnet8", num_classes=100, in_channels=3)
        student = create_model("resnet8", num_classes=100, in_channels=3)
        cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="cosine", milestones=[], amp="off",
                          device=DEVICE, cuda_graphs=graphs, channels_last=False)
        trainer = Trainer(cfg, DistillTask(student, build_distiller("kd", student, teacher)), train, None,
                          verbose=False)
        trainer.fit()
        return trainer

    eager, graphed = run(False), run(True)
    assert graphed.graphed is not None and graphed.graphed.replays > 0 and graphed.graphed.captures == 2
    for (k, a), b in zip(eager.task.model.state_dict().items(), graphed.task.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-4), k


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs exist on CUDA only")
def test_graphed_step_stops_on_a_non_finite_loss(tmp_path):
    from nasdistill.data import load_dataset, loaders_for
    from nasdistill.engine import TrainConfig, Trainer
    from nasdistill.models import create_model
    from nasdistill.teachers.ce import CETask

    splits = load_dataset("digits")
    train, val, _ = loaders_for(splits, 64, DEVICE, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e6, schedule="constant", milestones=[], device=DEVICE,
                      cuda_graphs=True, check_every=5)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        Trainer(cfg, CETask(create_model("resnet8", 10, 1)), train, val, folder=RunFolder.at(tmp_path / "run"),
                verbose=False).fit()
