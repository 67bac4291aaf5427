"""`nasdistill run` at a tiny size: every stage, the report, the exports (the session's run, read
only: see ``conftest.py``), and the job's refusals."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import nasdistill
from nasdistill.config import ConfigError, load_config
from nasdistill.pipeline import PipelineConfig

from tiny_job import TINY


def test_every_stage_writes_its_runs(run):
    out, summary = run
    students = summary["students"]
    searched = [s for s in students if s["kind"] == "searched"]
    randoms = [s for s in students if s["kind"] == "random"]
    # 1-2 searched (duplicates kept once), a random student of each searched one's band, 1 sampled
    assert len(students) == 2 * len(searched) + 1 and len(randoms) == len(searched)
    assert {s["kind"] for s in students} == {"searched", "random", "sampled"}
    for s, r in zip(searched, randoms):
        lo, hi = r["band"]
        assert r["target_macs"] == s["target_macs"] and lo <= r["macs"] <= hi and r["student"] != s["student"]
        assert s["convergence"]["phi_epochs"] == 1 and not s["convergence"]["converged"]
    for seed in (0, 1):  # one teacher per distillation seed
        assert (out / "teachers" / f"ce_s{seed}" / "model.safetensors").exists()
        assert (out / "teachers" / f"gtn_s{seed}" / "phi.json").exists()
    rows = list(csv.DictReader(open(out / "results.csv")))
    # per student: (ce, gtn) x kd + baseline, for 2 seeds
    assert len(rows) == len(students) * 3 * 2
    assert {(r["teacher"], r["method"]) for r in rows} == {("ce", "kd"), ("gtn", "kd"), ("none", "none")}
    # the distillation of seed s used the teacher of seed s
    assert all(r["teacher_seed"] == r["seed"] for r in rows if r["teacher"] != "none")
    # one process (workers=1): the teachers train after the search, and no overlap is claimed
    times = json.loads((out / "stage_times.json").read_text())
    assert "overlap" not in times and {"search", "teachers", "distill", "export"} <= set(times)


def test_records_hold_no_absolute_path(run):
    """Every record the job writes (results, manifests, metrics, exports, the summary) names
    folders relative to where it lies, although the job was given an absolute --out-dir; only
    the configuration files keep the out_dir the user gave."""
    out, _ = run
    assert out.is_absolute()
    records = [p for p in out.rglob("*") if p.suffix in (".json", ".jsonl", ".csv")]
    assert {"summary.json", "export.json", "result.json", "run.json", "students.json"} <= {p.name for p in records}
    assert [str(p.relative_to(out)) for p in records if str(out) in p.read_text()] == []
    # and what they name resolves from there
    summary = json.loads((out / "summary.json").read_text())
    assert (out / summary["report"]).is_file()
    assert all((out / folder / "model.safetensors").is_file() for folder in summary["exported"].values())


def test_report_has_gtn_rows_and_confidence_intervals(run):
    out, _ = run
    report = (out / "report.md").read_text()
    for section in ("## Summary", "## Teachers", "## Did the search help?", "## Accuracy by teacher",
                    "## Gain GTN", "## Time per stage"):
        assert section in report
    assert "GTN+KD" in report and "±" in report and "95% CI" in report
    assert "statistically significant" in report  # stated either way
    assert "The runs ran on this process, one run at a time." in report  # workers=1: no worker process
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


def test_bad_pipeline_configs_are_refused():
    with pytest.raises(ConfigError, match="teachers.methods"):
        load_config(PipelineConfig, None, ["teachers.methods=[ce,gnt]"]).check()
    with pytest.raises(ConfigError, match="search.targets"):
        load_config(PipelineConfig, None, ["search.search.target=5"]).check()
    with pytest.raises(ConfigError, match="distil"):
        load_config(PipelineConfig, None, ["distil.seeds=[0]"])


def test_non_finite_loss_names_the_stage_and_what_to_do(tmp_path, capsys):
    from nasdistill.cli import main

    full_data = [a for a in TINY if not a.startswith("data.options")]  # steps enough for the loss to overflow
    rc = main(["run", *full_data, "search.targets=[]", "teachers.train.lr=1e8", "--out-dir", str(tmp_path / "nan")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "teachers stopped in" in err and str(tmp_path / "nan" / "teachers") in err
    assert "teachers.train.lr" in err and "--restart" in err and "Traceback" not in err


def test_run_accepts_resume_and_a_second_job_on_the_folder_is_refused(run, tmp_path):
    out, _ = run
    from nasdistill.engine import RunDirectory

    holder = RunDirectory(out).lock()
    try:
        proc = subprocess.run([sys.executable, "-m", "nasdistill", "run", *TINY, "--resume", "--out-dir", str(out)],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, NASDISTILL_PROGRESS="0"))
    finally:
        holder.unlock()
    assert proc.returncode == 2 and f"in use by process {os.getpid()}" in proc.stderr


def test_a_key_that_stopped_deciding_results_does_not_refuse_an_older_job_folder(tmp_path):
    """A job folder written when a key still belonged to the identity (runs_per_gpu) is the same
    job for a version that leaves the key out; a key that decides results still refuses."""
    from nasdistill.engine.run import ConfigMismatch
    from nasdistill.pipeline.runner import check_job, job_identity

    cfg = load_config(PipelineConfig, None, TINY)
    out = tmp_path / "job"
    (out / "teachers" / "ce_s0").mkdir(parents=True)
    (out / "teachers" / "ce_s0" / "last.ckpt").write_bytes(b"progress")  # a stage made progress
    identity = job_identity(cfg)
    (out / "run.json").write_text(json.dumps({"kind": "pipeline", "identity": {**identity, "runs_per_gpu": 3}}))
    check_job(cfg, out, "resume")
    (out / "run.json").write_text(json.dumps({"kind": "pipeline", "identity": {**identity, "seed": 5}}))
    with pytest.raises(ConfigMismatch, match="seed"):
        check_job(cfg, out, "resume")
