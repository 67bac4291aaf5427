"""`nasdistill run` at a tiny size: every stage, the report, the exports, and stage reuse."""
import csv
import json

import pytest
import torch

import nasdistill
from nasdistill.engine.config import ConfigError, load_config
from nasdistill.pipeline import PipelineConfig, run_pipeline

TINY = ["search.targets=[500000,2000000]", "search.train.epochs=2", "search.search.warmup_epochs=1",
        "students.sampled=1", "teachers.train.epochs=2", "distill.train.epochs=1",
        "distill.seeds=[0,1]", "workers=1", "export.onnx=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(PipelineConfig, None, TINY)
    summary = run_pipeline(cfg, out, verbose=False)
    return out, summary


def test_every_stage_writes_its_runs(run):
    out, summary = run
    students = summary["students"]
    assert 2 <= len(students) <= 3  # 1-2 searched (duplicates kept once) + 1 sampled
    assert {s["kind"] for s in students} == {"searched", "sampled"}
    for seed in (0, 1):  # one teacher per distillation seed
        assert (out / "teachers" / f"ce_s{seed}" / "model.safetensors").exists()
        assert (out / "teachers" / f"gtn_s{seed}" / "phi.json").exists()
    rows = list(csv.DictReader(open(out / "results.csv")))
    # per student: (ce, gtn) x kd + baseline, for 2 seeds
    assert len(rows) == len(students) * 3 * 2
    assert {(r["teacher"], r["method"]) for r in rows} == {("ce", "kd"), ("gtn", "kd"), ("none", "none")}
    # the distillation of seed s used the teacher of seed s
    assert all(r["teacher_seed"] == r["seed"] for r in rows if r["teacher"] != "none")


def test_report_has_gtn_rows_and_confidence_intervals(run):
    out, _ = run
    report = (out / "report.md").read_text()
    for section in ("## Summary", "## Teachers", "## Accuracy by teacher", "## Gain GTN", "## Time per stage"):
        assert section in report
    assert "GTN+KD" in report and "±" in report and "95% CI" in report
    assert "statistically significant" in report  # stated either way
    for png in ("accuracy_vs_macs.png", "gain_gtn_vs_ce_kd.png", "phi_entropy.png", "branch_accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exported_students_reload_without_supernet(run):
    out, summary = run
    for student in summary["students"]:
        folder = out / "students" / student["student"]
        model = nasdistill.load(folder)
        assert not any("supernet" in type(m).__module__ for m in model.modules())
        info = json.loads((folder / "export.json").read_text())
        source = nasdistill.load(out / info["source"])
        x = torch.randn(3, 1, 8, 8)
        assert torch.allclose(model(x), source(x), atol=1e-5)
        assert (folder / "model.pt2").exists()


def test_finished_stages_are_reused(run):
    out, _ = run
    stamps = {p: p.stat().st_mtime for p in out.glob("*/**/result.json")}
    cfg = load_config(PipelineConfig, None, TINY)
    run_pipeline(cfg, out, verbose=False)
    assert stamps and all(p.stat().st_mtime == t for p, t in stamps.items())


def test_bad_pipeline_configs_are_refused():
    with pytest.raises(ConfigError, match="teachers.methods"):
        load_config(PipelineConfig, None, ["teachers.methods=[ce,gnt]"]).check()
    with pytest.raises(ConfigError, match="search.targets"):
        load_config(PipelineConfig, None, ["search.search.target=5"]).check()
    with pytest.raises(ConfigError, match="distil"):
        load_config(PipelineConfig, None, ["distil.seeds=[0]"])
