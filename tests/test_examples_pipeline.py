"""The examples a user copies run at a tiny size (define_space and export_student have their own).

They run in the test process (``run_example`` in conftest.py: as ``__main__``, with their own command
line), so the suite does not pay a fresh interpreter's torch and scikit-learn imports for each.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_search_then_distill_example(tmp_path, run_example):
    out = run_example("examples/search_then_distill.py", "--quick", "--out", str(tmp_path / "api"))
    assert "searched student" in out and "student gtn+kd" in out
    assert "reloaded max |diff| = 0.00e+00" in out


def test_synthetic_teachers_example(run_example):
    # every teacher of the example, one epoch on 200 images (--quick is 3 epochs on 1000)
    out = run_example("examples/synthetic_teachers.py", "--epochs", "1", "--n-train", "200")
    for name in ("ce", "mse", "soteacher", "sftn", "gtn"):
        assert f"| {name}" in out
    assert "KL(p || teacher)" in out


def test_teacher_cache_bench_example(resnet8_teacher, run_example):
    # the session's resnet8 teacher: what the example trains itself with --teacher-model resnet8
    out = run_example("examples/bench_teacher_cache.py", "--teacher", str(resnet8_teacher), "--epochs", "1",
                      "--repeats", "1", "--batch-size", "128")
    assert "ratio cached/live" in out
    # the cache changes where the teacher's logits come from, not the student's training
    live = [l for l in out.splitlines() if l.startswith("live teacher")][0].split("test acc")[1]
    cached = [l for l in out.splitlines() if l.startswith("cached logits")][0].split("test acc")[1]
    assert live.strip() == cached.strip()


def test_every_example_config_loads():
    """The YAML files a user copies are valid configurations of their command."""
    from nasdistill.distill import distill_config_class
    from nasdistill.engine import load_config
    from nasdistill.pipeline import pipeline_config_class
    from nasdistill.search import SearchConfig
    from nasdistill.teachers import teacher_config_class

    classes = {"digits_search.yaml": SearchConfig, "digits_teacher.yaml": teacher_config_class(),
               "digits_distill.yaml": distill_config_class()}
    files = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        cfg = load_config(classes.get(path.name, pipeline_config_class()), str(path))
        if hasattr(cfg, "teachers"):
            cfg.check()
