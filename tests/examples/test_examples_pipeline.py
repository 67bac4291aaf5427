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


def _rung(ladder, steps=500, images=2000, variants=("plain", "standardized")):
    diff = {"n_students": 2, "mean_diff": -2.0, "boot_ci_low": -2.5, "boot_ci_high": -1.5, "t_pvalue": 0.0}
    means = {"students alone": 60.0, **{f"{t} {v}": 63.0 for t in ladder.TEACHERS for v in variants}}
    return {"weight_steps": steps, "n_train": images, "epochs": {"teacher": 32, "distill": 16}, "means": means,
            "minus_ce": {f"{t} {v}": diff for t in ladder.TEACHERS if t != "ce" for v in variants},
            "teachers": {t: {"sampled_branch_acc": 66.0, "teacher_logit_std": 0.98, "teacher_train_acc": 90.0,
                             "teacher_test_acc": 71.5, "unstable_runs": 0} for t in ladder.TEACHERS}}


def test_gtn_scale_ladder_tabulates_each_rung():
    ladder = _example_module("gtn_scale")
    # GTN's weight steps are one iteration in two: 500 steps on 2,000 images (32 batches an epoch);
    # the distillations stop at --distill-steps (2,500 = 8 epochs of 313 batches on 20,000 images)
    assert ladder.rung_schedule(500, 2000) == (32, 16)
    assert ladder.rung_schedule(12500, 20000) == (80, 8)
    assert ladder.rung_schedule(12500, 20000, distill_steps=20000) == (80, 40)
    table = ladder.table([_rung(ladder)], ["plain", "standardized"])
    rows = table.splitlines()
    assert rows[0] == ("| weight steps | images | teacher/KD epochs | KD | alone | CE+KD | MSE+KD - CE+KD | "
                       "SFTN+KD - CE+KD | GTN+KD - CE+KD |")
    assert rows[2] == "| 500 | 2,000 | 32/16 | plain | 60.00 | 63.00 | " + " | ".join(
        ["-2.00 (-2.50 to -1.50, p < 0.001)"] * 3) + " |"
    assert rows[3].startswith("|  |  |  | standardized |  | 63.00 | -2.00 (")
    assert "teachers' test accuracy (mean over seeds) CE 71.50%, MSE 71.50%" in table
    assert "sampled branches 66.0% train acc" in table and "unstable teacher runs: ce 0" in table


def test_the_readme_ladder_block_comes_from_the_ladders_runs_as_the_benchmark_is_now(tmp_path):
    """``readme_figures.py --ladder`` tabulates a ladder.json only when each of its jobs' config.yaml
    is examples/synthetic_gtn.yaml with the rung's and variant's overrides, as the benchmark is now."""
    import json

    from nasdistill.config import load_config, save_yaml
    from nasdistill.pipeline import PipelineConfig

    ladder, figures = _example_module("gtn_scale"), _example_module("readme_figures")
    args = ladder.parse_args(["--rungs", "500:2000"])
    overrides = ladder.job_overrides(args, 500, 2000)
    rung = dict(_rung(ladder, variants=("plain",)), folder="steps500_n2000", overrides=overrides,
                variants={"plain": []})
    (tmp_path / "ladder.json").write_text(json.dumps([rung]))
    job = tmp_path / "steps500_n2000" / "plain"
    job.mkdir(parents=True)
    config = load_config(PipelineConfig, str(ROOT / "examples" / "synthetic_gtn.yaml"), overrides)
    save_yaml(config, job / "config.yaml")
    assert figures.ladder_block(tmp_path / "ladder.json") == ladder.table([rung], ["plain"])
    # a job run with another value of a key that decides results is not this ladder's
    save_yaml(load_config(PipelineConfig, str(ROOT / "examples" / "synthetic_gtn.yaml"),
                          [*overrides, "distill.kd.temperature=2"]), job / "config.yaml")
    with pytest.raises(SystemExit, match="not a run of examples/synthetic_gtn.yaml as it is now"):
        figures.ladder_block(tmp_path / "ladder.json")
    # a ladder.json of an earlier version (no overrides recorded) says what to do
    (tmp_path / "ladder.json").write_text(json.dumps([_rung(ladder)]))
    with pytest.raises(SystemExit, match="rerun it"):
        figures.ladder_block(tmp_path / "ladder.json")
