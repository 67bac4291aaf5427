"""A run killed with SIGKILL after an epoch and resumed ends bit-identical to an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

ARGS = ["model.space=digits_small",
        "model.arch={layer1: k3_d2, layer2: zero, layer3: zero, layer4: zero, layer5: zero, layer6: zero}",
        "train.epochs=4", "train.batch_size=8", "train.lr=0.05", "train.schedule=cosine",
        "data.augment=true", "seed=3"]
ENV = dict(os.environ, NASDISTILL_PROGRESS="0", OMP_NUM_THREADS="1")


def teacher(*extra):
    return [sys.executable, "-m", "nasdistill", "teacher", *extra]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.Popen(teacher(*ARGS, "--out-dir", str(killed)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists() and not (killed / "model.safetensors").exists()
    done = metrics.read_text().count("\n")
    assert 1 <= done < 4
    subprocess.run(teacher(*ARGS, "--out-dir", str(full)), env=ENV, check=True,
                   capture_output=True, timeout=120)
    out = subprocess.run(teacher("--resume", "--out-dir", str(killed)), env=ENV, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert "resuming" in out
    a = load_file(str(full / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    rows = [line for line in metrics.read_text().splitlines() if line]
    assert len(rows) == 4 and [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]
