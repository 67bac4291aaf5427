"""Fixtures of the engine's tests."""
import pytest

from built_once import built_once

from nasdistill.data import load_dataset, loaders_for

from teacher_run import TEACHER


@pytest.fixture(scope="module")
def digits():
    """Digits as (train, val, test) loaders of batch 64, split and shuffled with seed 0."""
    return loaders_for(load_dataset("digits", seed=0), 64, "cpu", seed=0)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A finished ``nasdistill teacher`` run (:data:`TEACHER`) and its files' bytes, trained once;
    shared read-only: tests copy it before they change anything."""
    from nasdistill.cli import main

    def build(folder):
        assert main(["teacher", *TEACHER, "--out-dir", str(folder)]) == 0

    out, _ = built_once(tmp_path_factory, "finished", build)
    return out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
