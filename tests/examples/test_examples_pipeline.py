"""The examples a user copies run at a tiny size (define_space and export_student have their own).

They run in the test process (``run_example`` in conftest.py: as ``__main__``, with their own command
line), so the suite does not pay a fresh interpreter's torch and scikit-learn imports for each.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    from nasdistill.config import load_config
    from nasdistill.distill import distill_config_class
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


def _example_module(name):
    import importlib.util

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return module


def test_kd_variants_compare_per_student_and_tabulate_each_variant():
    variants = _example_module("kd_variants")
    rows = [{"student": s, "seed": str(k), "teacher": t, "method": m, "test_acc": acc}
            for s, base in (("a", 60.0), ("b", 70.0)) for k in (0, 1)
            for t, m, acc in (("ce", "kd", base + 2 + k), ("gtn", "kd", base + k), ("none", "none", base - 1))]
    test = variants.compare(variants.by_student(rows, "gtn", "kd"), variants.by_student(rows, "ce", "kd"))
    assert test["n_students"] == 2 and test["mean_diff"] == pytest.approx(-2.0)  # per student: -2, -2
    shifted = [dict(r, test_acc=r["test_acc"] + (1.0 if r["teacher"] == "gtn" else 0.0)) for r in rows]
    analysis = variants.analyse({"plain": rows, "standardized": shifted}, ["ce", "gtn"])
    # students alone: a 59, b 69 -> 64; GTN plain: a mean(60, 61) = 60.5, b 70.5 -> 65.5
    assert analysis["means"]["students alone"] == pytest.approx(64.0)
    assert analysis["means"]["gtn plain"] == pytest.approx(65.5)
    assert analysis["minus_alone"]["gtn plain"]["mean_diff"] == pytest.approx(1.5)  # 1 + seed
    assert analysis["minus_plain"]["gtn standardized"]["mean_diff"] == pytest.approx(1.0)
    assert analysis["minus_reference"]["gtn standardized"]["mean_diff"] == pytest.approx(-1.0)
    table = variants.table(analysis, ["ce", "gtn"], ["plain", "standardized"])
    assert "| standardized | 67.50 | 66.50 | -1.00 (" in table


def test_gtn_scale_ladder_tabulates_each_rung():
    ladder = _example_module("gtn_scale")
    # GTN's weight steps are one iteration in two: 500 steps on 2,000 images (32 batches an epoch);
    # the distillations stop at --distill-steps (2,500 = 8 epochs of 313 batches on 20,000 images)
    assert ladder.rung_schedule(500, 2000) == (32, 16)
    assert ladder.rung_schedule(12500, 20000) == (80, 8)
    assert ladder.rung_schedule(12500, 20000, distill_steps=20000) == (80, 40)
    diff = {"n_students": 2, "mean_diff": -2.0, "boot_ci_low": -2.5, "boot_ci_high": -1.5, "t_pvalue": 0.0}
    means = {"students alone": 60.0, **{f"{t} {v}": 63.0 for t in ladder.TEACHERS for v in ("plain", "standardized")}}
    rung = {"weight_steps": 500, "n_train": 2000, "epochs": {"teacher": 32, "distill": 16}, "means": means,
            "minus_ce": {f"{t} {v}": diff for t in ladder.TEACHERS if t != "ce" for v in ("plain", "standardized")},
            "teachers": {t: {"sampled_branch_acc": 66.0, "teacher_logit_std": 0.98, "teacher_train_acc": 90.0,
                             "unstable_runs": 0} for t in ladder.TEACHERS}}
    table = ladder.table([rung], ["plain", "standardized"])
    assert "### 500 weight steps, 2,000 images (teacher/KD epochs 32/16)" in table
    assert "| plain | 63.00 | -2.00 (-2.50 to -1.50, p < 0.001) | -2.00 (-2.50 to -1.50, p < 0.001) |" in table
    assert "sampled branches 66.0% train acc" in table and "unstable teacher runs: ce 0" in table
