"""Fixtures of the main job's process tests."""
import os
from types import SimpleNamespace

import pytest


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
