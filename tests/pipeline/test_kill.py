"""The main job killed while it runs (SIGKILL, no chance to clean up), on the local backend and on a
local Ray instance: no worker or task outlives it, nothing writes into its folder after it, and the
rerun finishes with the uninterrupted run's results."""
import sys

import pytest

from tiny_job import distilled, distilling, kill_and_finish


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_job_killed_while_it_distills_on_either_backend_finishes_equal(run, tmp_path, procs):
    """The kill harness at small scale (every default run): the job killed while its two worker
    processes distill; then with ``backend=ray`` (``ray.address=local``), killed after its Ray
    tasks finished 3 runs, while they run more; then in one process (``workers=1``, the uninterrupted
    run's setting) to the end, reusing what both finished: every result, the worker processes' and
    the Ray tasks' included, equals the uninterrupted run's."""
    pytest.importorskip("ray", reason="the ray extra is part of the test extra: pip install -e '.[test]'")
    kill_and_finish(run, tmp_path / "killed", procs,
                    [(distilling, ()), (distilled(3), ["backend=ray", "ray.cpus_per_run=1"])],
                    finish=["workers=1"], seed_stages=True)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_harness_every_stage_finishes_equal_and_no_process_outlives_its_parent(run, tmp_path, procs):
    """A kill inside every stage (the search, with the teachers training beside it; the teachers;
    the distillation), a fresh job after each."""
    kill_and_finish(run, tmp_path / "killed", procs,
                    [("search/shared/metrics.jsonl", ()), ("teachers/ce_s0/last.ckpt", ()), (distilling, ())])
