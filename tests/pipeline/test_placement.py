"""Local placement: one worker per GPU times runs_per_gpu, each pinned to its GPU before it starts."""
import sys

import pytest

from nasdistill.pipeline.placement import describe, visible_gpus, worker_count, worker_envs


def test_the_visible_gpus_are_the_main_process_s_own(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_auto_starts_a_worker_per_gpu_and_run_and_pins_each_to_one_gpu():
    gpus = ["0", "1"]
    assert worker_count("auto", 2, gpus) == 4
    assert worker_count("auto", 2, [], cpus=6) == 6 and worker_count(3, 2, gpus) == 3
    # worker k on GPU k // runs_per_gpu: 2 GPUs x 2 runs per GPU
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(4, gpus, 2)] == ["0", "0", "1", "1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(3, ["7"], 1)] == ["7", "7", "7"]  # more workers: wrap
    assert worker_envs(2, [], 4) is None
    assert describe(4, gpus, 2) == "4 worker processes on 2 GPUs, 2 runs per GPU"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_each_worker_process_starts_with_its_gpu_only(monkeypatch):
    """The pinning reaches the processes: each worker's environment, read from /proc, holds its one
    GPU (2 faked GPUs x 2 runs per GPU), set before it ran any code."""
    from nasdistill.pipeline.workers import _WorkerPool

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    gpus = visible_gpus()
    pool = _WorkerPool(4, worker_envs(worker_count("auto", 2, gpus), gpus, 2))
    try:
        seen = []
        for w in pool.workers:
            env = dict(kv.split("=", 1) for kv in open(f"/proc/{w.proc.pid}/environ").read().split("\0") if "=" in kv)
            seen.append(env["CUDA_VISIBLE_DEVICES"])
        assert seen == ["4", "4", "6", "6"]
    finally:
        pool.kill()
