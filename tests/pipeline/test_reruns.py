"""Reruns of the tiny main job (a copy of the session's run each): finished stages reused, damaged
or missing results redone, a changed key refused or recomputed."""
import json

import pytest
import torch

import nasdistill
from nasdistill.config import ConfigError, load_config
from nasdistill.pipeline import PipelineConfig, run_pipeline

from tiny_job import TINY, copy_job


def test_a_rerun_reuses_what_is_finished_and_redoes_what_is_damaged_or_missing(run, tmp_path):
    """On a rerun of the same job: a search killed before its result (result.json missing) is
    finished, to the same students and weights; an export killed midway or damaged since (a file
    missing, a file of other bytes) is written again and reloads to the source run's outputs; every
    teacher, distillation and other export is reused as it is (its files untouched)."""
    summary = run[1]
    out = copy_job(run[0], tmp_path / "job")
    search = out / "search" / "shared"  # one search run for every target
    before = json.loads((search / "result.json").read_text())
    (search / "result.json").unlink()
    first, second = (out / "students" / s["student"] for s in summary["students"][:2])
    (first / "model.pt2").unlink()
    (second / "model.safetensors").write_bytes(b"not a safetensors file")
    stamps = {p: p.stat().st_mtime_ns for stage in ("teachers", "distill") for p in out.glob(f"{stage}/**/result.json")}
    untouched = {p: p.stat().st_mtime_ns for s in summary["students"][2:]
                 for p in (out / "students" / s["student"]).iterdir() if p.name != ".lock"}
    run_pipeline(load_config(PipelineConfig, None, TINY), out, verbose=False)
    after = json.loads((search / "result.json").read_text())
    assert after["students"] == before["students"] and after["weights_sha256"] == before["weights_sha256"]
    x = torch.randn(3, 1, 8, 8)
    for folder in (first, second):
        info = json.loads((folder / "export.json").read_text())
        assert (folder / "model.pt2").is_file()
        with torch.no_grad():
            assert torch.allclose(nasdistill.load(folder)(x), nasdistill.load(out / info["source"])(x), atol=1e-5)
    assert len(stamps) > 30 and all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # runs reused
    assert untouched and all(p.stat().st_mtime_ns == t for p, t in untouched.items())  # complete exports too


def test_run_with_another_value_is_refused_or_recomputed_never_reused(run, tmp_path):
    """A changed key is refused, naming it; --restart recomputes exactly the runs it changes (the KD
    runs for a KD temperature) and reuses the others (the students alone, teachers, search)."""
    out = copy_job(run[0], tmp_path / "job")  # the restart below rewrites it
    stamps = {p: p.stat().st_mtime for p in out.glob("*/**/result.json")}
    changed = TINY + ["distill.kd.temperature=2.0", "export.enabled=false"]  # (export: no identity key)
    cfg = load_config(PipelineConfig, None, changed)
    with pytest.raises(ConfigError, match=r"distill\.kd\.temperature = 4\.0 in the run, 2\.0 now.*--restart"):
        run_pipeline(cfg, out, verbose=False)
    assert all(p.stat().st_mtime == t for p, t in stamps.items())  # nothing was touched
    summary = run_pipeline(cfg, out, verbose=False, mode="restart")
    kd = [p for p in stamps if "distill" in p.parts and p.parent.name.split("_")[1:2] == ["kd"]]
    assert len(kd) == 2 * 2 * len(summary["students"])  # (ce, gtn) x 2 seeds per student
    for p in kd:  # recomputed with the new value ...
        assert p.stat().st_mtime != stamps[p]
        assert "temperature: 2.0" in (p.parent / "config.yaml").read_text()
    rest = [p for p in stamps if p not in kd]
    assert any(p.parent.name.startswith("none_") for p in rest)
    assert all(p.stat().st_mtime == stamps[p] for p in rest)  # ... the rest reused
