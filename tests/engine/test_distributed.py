"""Two CPU processes under torchrun (gloo) end with the weights of one process on the same global batch.

The network has no BatchNorm: BN batch statistics are per shard, so a BN network legitimately
differs. Its running statistic ``seen`` (per-shard, like BN's) must be averaged over the ranks at the
end of each epoch: the ranks end equal, and equal to one process (the EMA is linear in the shards).
A parameter (``extra``) is only used on a rank whose shard holds a sample of class 0, so on many
steps one rank has no gradient for it while the other has; ``never`` gets no gradient anywhere and
must stay untouched (a zero gradient would let weight decay move it). A fixed model whose every
parameter gets a gradient at every step (``ddp_safe``) trains through DistributedDataParallel
instead, with the same result. This file is also the worker script:
``torchrun --nproc_per_node 2 tests/test_distributed.py OUT_DIR [masked|ddp ...]``; one launch
trains each kind in turn (into ``OUT_DIR/KIND``), so the tests share the process start-up.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nasdistill.engine.run import RunFolder
from nasdistill.data import load_dataset, loaders_for
from nasdistill.engine import (
    StepOutput,
    TrainConfig,
    Trainer,
    TrainTask,
    init_distributed,
    world,
)
from nasdistill.engine.distributed import shutdown_distributed


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)
        self.extra = nn.Parameter(torch.zeros(10))
        self.never = nn.Parameter(torch.ones(3))
        # a running statistic of each rank's shard (like BatchNorm's): averaged over ranks per epoch
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.seen.mul_(0.9).add_(0.1 * x.mean())
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class MaskedTask(TrainTask):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__(TinyNet())
        self.used_extra: list[bool] = []

    def training_step(self, batch, ctx):
        x, y, _ = batch
        logits = self.model(x)
        mask = y == 0
        self.used_extra.append(bool(mask.any()))
        if mask.any():  # otherwise `extra` gets no gradient on this rank
            logits = logits + mask[:, None].float() * self.model.extra
        loss = nn.functional.cross_entropy(logits, y)
        return StepOutput(loss, logits)


class FixedTask(TrainTask):
    """Every parameter gets a gradient every step: trained through DDP under torchrun."""

    ddp_safe = True

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(TinyNet())
        self.model.extra.requires_grad_(False)
        self.model.never.requires_grad_(False)
        self.used_extra: list[bool] = []

    def training_step(self, batch, ctx):
        x, y, _ = batch
        logits = self.model(x)
        return StepOutput(nn.functional.cross_entropy(logits, y), logits)


def train(out_dir: Path, kind: str = "masked") -> dict:
    w = world()
    splits = load_dataset("digits", seed=0)
    tr, val, _ = loaders_for(splits, 16, "cpu", seed=0, rank=w.rank, world_size=w.world_size)
    task = MaskedTask() if kind == "masked" else FixedTask()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, nesterov=True, weight_decay=5e-4,
                      schedule="cosine", device="cpu")
    trainer = Trainer(cfg, task, tr, val, folder=RunFolder.at(out_dir / "run"), verbose=False)
    result = trainer.fit()
    torch.save({k: v.detach().clone() for k, v in task.model.state_dict().items()},
               out_dir / f"rank{w.rank}.pt")
    (out_dir / f"used{w.rank}.json").write_text(json.dumps(task.used_extra))
    (out_dir / f"ddp{w.rank}.json").write_text(json.dumps(trainer.ddp is not None))
    return result


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One torchrun launch of two CPU ranks that trains both kinds: OUT/masked and OUT/ddp."""
    out = tmp_path_factory.mktemp("two_ranks")
    env = dict(os.environ, OMP_NUM_THREADS="1", NASDISTILL_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, str(out), "masked", "ddp"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _single(out: Path, kind: str) -> dict:
    out.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each worker: avoids thread thrashing on a busy 2-core machine
    try:
        return train(out, kind)
    finally:
        torch.set_num_threads(threads)


def test_fixed_model_trains_through_ddp_and_equals_one_process(tmp_path, two_ranks):
    two = two_ranks / "ddp"
    single = _single(tmp_path / "one", "ddp")
    assert json.loads((two / "ddp0.json").read_text()) is True
    assert json.loads((tmp_path / "one" / "ddp0.json").read_text()) is False  # one process: no DDP
    ref = torch.load(tmp_path / "one" / "rank0.pt")
    r0 = torch.load(two / "rank0.pt")
    r1 = torch.load(two / "rank1.pt")
    for k in ref:
        assert torch.equal(r0[k], r1[k]), f"ranks diverged on {k}"
        assert torch.allclose(r0[k], ref[k], atol=1e-5), f"{k} differs from the 1-process run"
    logged = json.loads((two / "run" / "result.json").read_text())
    assert abs(logged["last_acc"] - single["last_acc"]) < 1.0


def test_two_cpu_ranks_equal_one_process(tmp_path, two_ranks):
    two = two_ranks / "masked"
    one = tmp_path / "one"
    single = _single(one, "masked")
    assert json.loads((two / "ddp0.json").read_text()) is False  # sampled paths: flat all-reduce
    ref = torch.load(one / "rank0.pt")
    r0 = torch.load(two / "rank0.pt")
    r1 = torch.load(two / "rank1.pt")
    for k in ref:
        assert torch.equal(r0[k], r1[k]), f"ranks diverged on {k}"
        assert torch.allclose(r0[k], ref[k], atol=1e-5), f"{k} differs from the 1-process run"
    assert not torch.equal(ref["extra"], torch.zeros(10))
    assert torch.equal(r0["never"], torch.ones(3)) and torch.equal(ref["never"], torch.ones(3))
    used0 = json.loads((two / "used0.json").read_text())
    used1 = json.loads((two / "used1.json").read_text())
    assert any(a != b for a, b in zip(used0, used1)), "no step had a gradient on one rank only"
    # only rank 0 wrote the run directory; the logged accuracy is the same as one process
    logged = json.loads((two / "run" / "result.json").read_text())
    assert abs(logged["last_acc"] - single["last_acc"]) < 1.0


if __name__ == "__main__":
    init_distributed("cpu")
    try:
        for kind in sys.argv[2:] or ["masked"]:
            out = Path(sys.argv[1]) / kind
            out.mkdir(parents=True, exist_ok=True)
            train(out, kind)
    finally:
        shutdown_distributed()
