"""A run killed with SIGKILL after an epoch and resumed ends bit-identical to an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import torch
from safetensors.torch import load_file

from nasdistill.cli import main

# batch 32: about 40 steps an epoch, so three epochs remain to kill the run in after the first
ARGS = ["model.space=digits_small",
        "model.arch={layer1: k3_d2, layer2: zero, layer3: zero, layer4: zero, layer5: zero, layer6: zero}",
        "train.epochs=4", "train.batch_size=32", "train.lr=0.05", "train.schedule=cosine",
        "data.augment=true", "seed=3"]
ENV = dict(os.environ, NASDISTILL_PROGRESS="0", OMP_NUM_THREADS="1")


def test_sigkill_then_resume_is_bit_identical(tmp_path, capsys):
    full, killed = tmp_path / "full", tmp_path / "killed"
    # only the killed run needs a process of its own; the uninterrupted and the resumed run go in this
    # one (whose RNG state is anything: the resumed run must take its state from the checkpoint alone)
    proc = subprocess.Popen([sys.executable, "-m", "nasdistill", "teacher", *ARGS, "--out-dir", str(killed)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "metrics.jsonl"

    def kill_after_first_epoch():
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and metrics.read_text().count("\n") >= 1:
                proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_after_first_epoch, daemon=True)
    watcher.start()  # the uninterrupted run trains meanwhile
    try:
        assert main(["teacher", *ARGS, "--out-dir", str(full)]) == 0
    finally:
        watcher.join(timeout=120)
        if proc.poll() is None:  # the watcher gave up without a first epoch: never left running
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()}"
    assert not (killed / "result.json").exists() and not (killed / "model.safetensors").exists()
    done = metrics.read_text().count("\n")
    assert 1 <= done < 4
    capsys.readouterr()
    assert main(["teacher", "--resume", "--out-dir", str(killed)]) == 0
    assert "resuming" in capsys.readouterr().out
    a = load_file(str(full / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    rows = [line for line in metrics.read_text().splitlines() if line]
    assert len(rows) == 4 and [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]
