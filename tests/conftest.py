"""Test-suite wide settings and shared fixtures.

Tests use tiny tensors: one torch thread is fastest, and two threads spin badly on a busy 2-core
machine (observed 10-30x slowdowns), so the suite pins one thread, and puts it back after any test
whose run changed it (``train.threads``). Progress bars and TensorBoard files are off (the CLI and
subprocesses inherit the environment).
"""
import os

import pytest
import torch
from built_once import built_once

os.environ.setdefault("NASDISTILL_PROGRESS", "0")
os.environ.setdefault("NASDISTILL_TENSORBOARD", "0")
torch.set_num_threads(1)


#: The test files that take longest (``--durations``), collected first: the suite runs in two
#: processes, a file at a time each, and a long file started last would leave one process idle
#: while the other finishes it. The main job's first file builds the tiny job that the kill harness
#: (third) and the reruns share, while the other process runs the bf16 file.
LONGEST_FIRST = ("pipeline/test_pipeline.py", "engine/test_bf16.py", "pipeline/test_kill.py",
                 "pipeline/test_workers.py", "network/test_records.py", "pipeline/test_reruns.py",
                 "network/test_model_source.py", "search/test_shared_search.py", "bench/test_pool.py",
                 "engine/test_lifecycle.py", "report/test_report.py", "network/test_export.py",
                 "engine/test_distributed.py", "examples/test_examples_pipeline.py", "report/test_report_branches.py",
                 "space/test_space.py", "engine/test_resume.py", "space/test_space_graph.py",
                 "pipeline/test_refusals.py", "engine/test_advice.py", "test_extending.py", "distill/test_distill_task.py",
                 "engine/test_disk_full.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        path = item.nodeid.split("::")[0]
        name = path.split("tests/", 1)[-1]
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: the other files keep their order, and tests within a file too


@pytest.fixture(autouse=True)
def one_thread():
    """Puts the suite's one intra-op thread back after a test whose run set another count."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def resnet8_teacher(tmp_path_factory):
    """A finished `nasdistill teacher` run (zoo resnet8, CE, digits, one epoch), trained once for the
    session (:func:`built_once`). Shared read-only: tests that distill from it must not write into it."""
    from nasdistill.cli import main

    def build(out):
        assert main(["teacher", "model.name=resnet8", "data.name=digits", "train.epochs=1",
                     "train.batch_size=128", "train.lr=0.1", "--out-dir", str(out)]) == 0

    return built_once(tmp_path_factory, "resnet8_teacher", build)[0]


@pytest.fixture
def run_example(capsys, monkeypatch):
    """``run_example("examples/x.py", *args)``: stdout of ``python examples/x.py args``, run in this
    process as ``__main__`` (no fresh interpreter importing torch again); a non-zero exit or an
    exception fails the test."""
    import runpy
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def run(example: str, *args: str) -> str:
        script = str(root / example)
        monkeypatch.setattr(sys, "argv", [script, *args])
        capsys.readouterr()
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:
            assert exit_.code in (0, None), f"{example} exited with {exit_.code}: {capsys.readouterr()}"
        return capsys.readouterr().out

    return run


@pytest.fixture
def drawn_figure(monkeypatch):
    """``drawn_figure(plot, *args, **kwargs)``: run a report plot function, check it wrote a PNG,
    and return the matplotlib Figure it saved (so a test reads back what was drawn)."""
    from matplotlib.figure import Figure

    def draw(plot, *args, **kwargs):
        captured = {}
        original = Figure.savefig

        def spy(self, *a, **k):
            captured["fig"] = self
            return original(self, *a, **k)

        monkeypatch.setattr(Figure, "savefig", spy)
        path = plot(*args, **kwargs)
        assert path is not None and path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return captured["fig"]

    return draw
