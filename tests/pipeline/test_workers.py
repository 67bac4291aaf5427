"""Worker processes of the main job: results in order, each reported as it finishes, the first
failure raised with its attributes, and no worker outliving a killed parent by more than a second --
also while the workers are still starting (issue: runs you can trust)."""
import os
import subprocess
import sys
import time

import pytest

from nasdistill.config import load_config, to_dict
from nasdistill.teachers import teacher_config_class

ENV = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")


def teacher_payload(run_dir, *overrides):
    cfg = load_config(teacher_config_class(), "examples/digits_teacher.yaml",
                      ["train.batch_size=128", "train.threads=1", *overrides])
    return {"kind": "teacher", "config": to_dict(cfg), "run_dir": str(run_dir), "mode": "resume", "threads": 1}


def test_runs_are_reported_as_they_finish_in_order_and_a_later_batch_uses_the_free_worker(tmp_path):
    """One pool, as a job uses it: a long run queued first (the search), then a batch of two short
    ones (teachers needing no student). The short ones train on the worker the long one leaves
    free, each reported as it finishes, and their batch returns, in order, while the long run
    still trains; a third batch runs on the same two processes, and closing the pool ends them."""
    from nasdistill.pipeline.workers import JobPool

    long_dir = tmp_path / "long"
    seen = []

    def on_done(i, result):
        seen.append((i, (long_dir / "result.json").exists()))

    with JobPool(2) as pool:
        first = pool.submit([teacher_payload(long_dir, "train.epochs=8")])
        second = pool.submit([teacher_payload(tmp_path / f"short{i}", f"train.epochs={1 + i}") for i in range(2)],
                             on_done)
        pids = [w.proc.pid for w in pool._pool.workers]
        assert [r["epochs"] for r in second.wait()] == [1, 2]
        assert seen == [(0, False), (1, False)]
        assert [r["epochs"] for r in first.wait()] == [8]
        third = pool.submit([teacher_payload(tmp_path / "again", "train.epochs=1")])
        assert [r["epochs"] for r in third.wait()] == [1]
        assert [w.proc.pid for w in pool._pool.workers] == pids
        procs = [w.proc for w in pool._pool.workers]
    assert all(p.poll() is not None for p in procs)


def test_the_first_failure_is_raised_with_its_attributes_naming_its_stage_and_the_rest_never_start(tmp_path):
    """A teacher queued behind the search (the job's order) diverges while the search still trains:
    the search's wait raises it, naming the teachers' stage and the run, and the runs queued
    behind it never start."""
    from types import SimpleNamespace

    from nasdistill.pipeline.stage import Progress, Stage
    from nasdistill.pipeline.workers import JobPool

    cfg = SimpleNamespace(workers=2, threads=1)
    with JobPool(2) as pool:
        stage = Stage(cfg, "resume", Progress(False), pool=pool)
        search = stage.start("search", [teacher_payload(tmp_path / "search", "train.epochs=30")])
        stage.start("teachers", [teacher_payload(tmp_path / "nan", "train.lr=1e8", "train.epochs=3"),
                                 teacher_payload(tmp_path / "ok2", "train.epochs=1"),
                                 teacher_payload(tmp_path / "ok3", "train.epochs=1")])
        with pytest.raises(FloatingPointError) as info:
            search.wait()
    err = info.value
    assert err.run_dir == str(tmp_path / "nan") and "non-finite loss" in err.detail
    assert str(err).startswith(f"teachers stopped in {tmp_path / 'nan'}") and "teachers.train.lr" in str(err)
    assert not (tmp_path / "ok2").exists() and not (tmp_path / "ok3").exists()  # queued: cancelled
    assert not (tmp_path / "search" / "result.json").exists()  # the search was stopped with the job


PARENT = """
import sys
from nasdistill.pipeline.workers import run_jobs
import json
run_jobs(json.loads(sys.argv[1]), workers=2)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])
def test_no_worker_outlives_a_killed_parent_by_a_second_even_while_starting(tmp_path, delay, procs):
    """SIGKILL the parent as soon as its workers exist (they are still importing torch), or a bit
    later: every worker is gone within a second, and nothing warns of leaked semaphores."""
    import json

    payloads = [teacher_payload(tmp_path / f"r{i}", "train.epochs=50") for i in range(3)]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(payloads)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    children = set()
    while time.time() < deadline and len(children) < 2 and parent.poll() is None:
        children = procs.children(parent.pid)
        time.sleep(0.005)
    assert len(children) == 2, "the workers did not start"
    time.sleep(delay)
    parent.kill()
    killed = time.time()
    parent.wait()
    while time.time() - killed < 1.0 and any(procs.alive(c) for c in children):
        time.sleep(0.01)
    assert not [c for c in children if procs.alive(c)], f"a worker outlived its parent by > 1 s (delay {delay})"
    # every holder of the stderr pipe is gone: it ends at once, with no leaked-semaphore warning
    err = parent.stderr.read().decode()
    assert "leaked" not in err and "resource_tracker" not in err, err
