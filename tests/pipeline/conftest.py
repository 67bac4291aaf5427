"""Fixtures of the main job's process tests."""
import os
from types import SimpleNamespace

import pytest


def _children(pid: int) -> set:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left to read


@pytest.fixture
def procs():
    """``procs.children(pid)``: the PIDs whose parent is ``pid`` (from /proc); ``procs.alive(pid)``:
    whether ``pid`` still runs."""
    return SimpleNamespace(children=_children, alive=_alive)
