"""Fixtures of the main job's process tests."""
import os
from types import SimpleNamespace

import pytest
from built_once import built_once

from tiny_job import TINY


def _children(pid: int) -> set:
    """Every descendant of ``pid`` (children, their children, ...)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left to read


@pytest.fixture
def procs():
    """``procs.children(pid)``: the PIDs descending from ``pid`` (from /proc); ``procs.alive(pid)``:
    whether ``pid`` still runs."""
    return SimpleNamespace(children=_children, alive=_alive)


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """``(folder, summary)``: the tiny main job (:data:`tiny_job.TINY`, every stage, a handful of
    steps each), run once for the session by the first test process that needs it
    (:func:`built_once`). Read only: a test that changes it works on :func:`tiny_job.copy_job`."""
    from nasdistill.config import load_config
    from nasdistill.pipeline import PipelineConfig, run_pipeline

    return built_once(tmp_path_factory, "tiny_job",
                      lambda out: run_pipeline(load_config(PipelineConfig, None, TINY), out, verbose=False))
