"""The examples a user copies run at a tiny size (define_space and export_student have their own)."""
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def _run(args, timeout=300):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "NASDISTILL_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_search_then_distill_example(tmp_path):
    out = _run(["examples/search_then_distill.py", "--quick", "--out", str(tmp_path / "api")])
    assert "searched student" in out and "student gtn+kd" in out
    assert "reloaded max |diff| = 0.00e+00" in out


def test_synthetic_teachers_example():
    out = _run(["examples/synthetic_teachers.py", "--quick"])
    for name in ("ce", "mse", "soteacher"):
        assert f"| {name}" in out
    assert "KL(p || teacher)" in out


def test_teacher_cache_bench_example():
    out = _run(["examples/bench_teacher_cache.py", "--epochs", "1", "--repeats", "1",
                "--teacher-model", "resnet8"])
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
