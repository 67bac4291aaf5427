"""Every training command under the CUDA path's dtype and layout: ``train.amp=bf16`` with
``train.channels_last=true`` on the CPU, in the default suite (the dtype class of bugs of the CUDA
path, bf16 activations against fp32 weights, recomputations outside autocast, buffers of the wrong
dtype, and views that a channels_last tensor refuses, shows up here at tiny size), and the same
commands under the CUDA defaults (bf16 autocast, channels_last, CUDA graphs where safe) in the
``cuda`` profile, which needs a GPU (``python -m pytest -m cuda``; ``NASDISTILL_TEST_DEVICE=cpu``
runs it on the CPU in bf16 with the contiguous layout).

The methods come from the registries, so a new teacher or distiller is covered when it registers.
"""
import json
import math
import os

import pytest
import torch

from nasdistill import load
from nasdistill.cli import main
from nasdistill.data import load_dataset, loaders_for
from nasdistill.distill.registry import DISTILLERS
from nasdistill.engine import (
    StepOutput,
    TrainConfig,
    Trainer,
    TrainTask,
    evaluate,
    read_metrics,
)
from nasdistill.engine.precision import autocast_dtype
from nasdistill.space import load_space
from nasdistill.teachers import TEACHERS

GPU = os.environ.get("NASDISTILL_TEST_DEVICE", "cuda")
PROFILES = [
    # bf16 autocast in channels_last, as on CUDA by default (and on a CPU the layout that has bf16
    # convolution kernels: 3x faster here than the contiguous layout's fallback)
    pytest.param(["train.device=cpu", "train.amp=bf16", "train.channels_last=true"], id="cpu-bf16"),
    # the CUDA defaults: amp auto (bf16), channels_last auto, cuda_graphs auto
    pytest.param([f"train.device={GPU}"] + ([] if GPU.startswith("cuda") else ["train.amp=bf16"]), id="cuda",
                 marks=[pytest.mark.cuda,
                        pytest.mark.skipif(GPU.startswith("cuda") and not torch.cuda.is_available(),
                                           reason="needs a CUDA GPU (none here); NASDISTILL_TEST_DEVICE=cpu "
                                                  "runs this profile on the CPU under bf16 autocast")]),
]
# bf16 training on a CPU costs several times fp32's, and dtype bugs show at any size: three training
# steps an epoch, and small val and test splits
DATA = {"test_size": 0.1, "train_size": 192}
TINY = ["train.threads=1", "train.batch_size=64", f"data.options={json.dumps(DATA)}", "data.val_size=96"]
TEACHER_CASES = [(m, ["gtn.mode=full"] if m == "gtn" else ["sftn.student.name=resnet8"] if m == "sftn" else [])
                 for m in TEACHERS.names()] + [("gtn", ["gtn.mode=two"])]
DISTILL_CASES = DISTILLERS.names() + ["kd-cached"]


@pytest.fixture(scope="module", params=PROFILES)
def profile(request):
    return request.param + TINY


def _result(out):
    return json.loads((out / "result.json").read_text())


#: the same command in fp32 on the CPU: the run a bf16 run must track
FP32 = ["train.device=cpu", "train.amp=off"]


def _trains_like_fp32(command: list, profile: list, out) -> None:
    """Runs ``command`` under ``profile`` and again in fp32 (the reference, same seed and batches):
    the bf16 run learns as the fp32 run does, epoch by epoch (training accuracy within 10 points,
    training loss within 15%), and the fp32 run did learn (+5 points or more over its epochs), so a
    bf16 run whose updates were lost or wrong would not pass. (Test accuracy after a handful of steps
    says little here: a student's batch-norm statistics after six steps put many at chance.)"""
    assert main([*command, *profile, "--out-dir", str(out / "bf16")]) == 0
    assert main([*command, *profile, *FP32, "--out-dir", str(out / "fp32")]) == 0
    low, ref = read_metrics(out / "bf16"), read_metrics(out / "fp32")
    assert len(low) == len(ref) >= 2
    assert ref[-1]["train_acc"] >= ref[0]["train_acc"] + 5
    for a, b in zip(low, ref):
        assert math.isfinite(a["train_loss"]) and a["train_loss"] == pytest.approx(b["train_loss"], rel=0.15), (a, b)
        assert abs(a["train_acc"] - b["train_acc"]) <= 10, (a, b)


def test_bf16_means_bf16_on_every_device():
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cuda"), "auto") is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "off") is None

    seen = []

    class Probe(TrainTask):
        def training_step(self, batch, ctx):
            x, y, _ = batch
            logits = self.model(x)
            seen.append(logits.dtype)
            return StepOutput(torch.nn.functional.cross_entropy(logits.float(), y), logits)

    train, _, _ = loaders_for(load_dataset("digits"), 256, "cpu")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    Trainer(TrainConfig(epochs=1, amp="bf16", device="cpu"), Probe(model), train, verbose=False).fit()
    assert seen and all(d is torch.bfloat16 for d in seen)


@pytest.mark.parametrize("mode", ["full", "two"])
def test_search(tmp_path, profile, mode):
    out = tmp_path / mode
    # two epochs: the first warms the weights up, the second alternates weight and phi steps
    assert main(["search", "examples/digits_search.yaml", *profile, f"search.mode={mode}", "train.epochs=2",
                 "search.warmup_epochs=1", "search.target=800000", "--out-dir", str(out)]) == 0
    result = _result(out)
    space = load_space(result["space"])
    assert {k: result[k] for k in ("macs", "params")} == space.cost(result["arch"])
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and "train_arch_ce" in rows[1]
    assert result["best_acc"] == max(r["val_acc"] for r in rows)
    # the saved student is the one evaluated before training: same test accuracy, measured here in fp32
    splits = load_dataset("digits", seed=0, **DATA)
    _, _, test = loaders_for(splits, 256, "cpu")
    one_image = 1e-9 if "train.device=cpu" in profile else 100 / len(splits.test)  # GPU: other kernels
    assert evaluate(load(out), test, torch.device("cpu"))["top1"] == pytest.approx(
        result["student_test_acc_before_training"], abs=one_image)


@pytest.mark.parametrize("method,extra", TEACHER_CASES, ids=[f"{m}-{'-'.join(e) or 'default'}" for m, e in TEACHER_CASES])
def test_teacher(tmp_path, profile, method, extra):
    _trains_like_fp32(["teacher", "examples/digits_teacher.yaml", f"method={method}", *extra, "train.epochs=2"],
                      profile, tmp_path)
    assert _result(tmp_path / "bf16")["method"] == method


@pytest.mark.parametrize("method", DISTILL_CASES)
def test_distill(tmp_path, profile, resnet8_teacher, method):
    # the session's resnet8 run (conftest.py) is the teacher: test_teacher trains one under this profile
    teacher_dir = resnet8_teacher
    extra = ["method=kd", "cache_teacher_logits=true"] if method == "kd-cached" else [f"method={method}"]
    if method == "crd":
        extra.append("crd.num_negatives=256")
    _trains_like_fp32(["distill", "examples/digits_distill.yaml", f"teacher={teacher_dir}", *extra, "train.epochs=2"],
                      profile, tmp_path)
    assert _result(tmp_path / "bf16")["method"] == extra[0].split("=")[1]
