"""Every training command under ``train.amp=bf16`` on the CPU: the dtype class of bugs of the CUDA
path (bf16 activations against fp32 weights, recomputations outside autocast, buffers of the wrong
dtype) shows up here, at tiny size, in the default suite."""
import json

import pytest
import torch

from nasdistill.cli import main
from nasdistill.engine import StepOutput, TrainConfig, Trainer, TrainTask
from nasdistill.engine.precision import autocast_dtype

BF16 = ["train.amp=bf16", "train.threads=1", "train.batch_size=128"]
ARCH = "model.arch={layer1: k3_d2, layer2: zero, layer3: identity, layer4: zero, layer5: k3_d2, layer6: zero}"




def _result(out):
    return json.loads((out / "result.json").read_text())


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

    from nasdistill.data import load_dataset, loaders_for

    train, _, _ = loaders_for(load_dataset("digits"), 256, "cpu")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    Trainer(TrainConfig(epochs=1, amp="bf16", device="cpu"), Probe(model), train, verbose=False).fit()
    assert seen and all(d is torch.bfloat16 for d in seen)


@pytest.mark.parametrize("mode", ["full", "two"])
def test_search_bf16(tmp_path, mode):
    out = tmp_path / mode
    assert main(["search", "examples/digits_search.yaml", *BF16, f"search.mode={mode}", "train.epochs=2",
                 "search.warmup_epochs=1", "search.target=800000", "--out-dir", str(out)]) == 0
    result = _result(out)
    assert result["macs"] > 0 and result["best_acc"] is not None


@pytest.mark.parametrize("method,extra", [
    ("ce", []), ("mse", []), ("soteacher", []), ("gtn", ["gtn.mode=full"]), ("gtn", ["gtn.mode=two"]),
    ("sftn", ["sftn.student.name=resnet8"]),
])
def test_teacher_bf16(tmp_path, method, extra):
    out = tmp_path / method
    assert main(["teacher", "examples/digits_teacher.yaml", f"method={method}", *BF16, *extra,
                 "train.epochs=2", "--out-dir", str(out)]) == 0
    assert _result(out)["test_acc"] > 0


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "teacher"
    mp = pytest.MonkeyPatch()
    mp.setenv("NASDISTILL_PROGRESS", "0")
    try:
        assert main(["teacher", "examples/digits_teacher.yaml", *BF16, "train.epochs=1",
                     "--out-dir", str(out)]) == 0
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd", "none", "kd-cached"])
def test_distill_bf16(tmp_path, teacher_dir, method):
    extra = ["method=kd", "cache_teacher_logits=true"] if method == "kd-cached" else [f"method={method}"]
    if method == "crd":
        extra.append("crd.num_negatives=256")
    out = tmp_path / method
    assert main(["distill", "examples/digits_distill.yaml", f"teacher={teacher_dir}", *BF16, *extra,
                 "train.epochs=1", "--out-dir", str(out)]) == 0
    result = _result(out)
    assert result["test_acc"] > 0 and result["method"] == extra[0].split("=")[1]
