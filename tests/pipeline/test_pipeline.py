"""`nasdistill run` at a tiny size: every stage, the report, the exports, and stage reuse."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import nasdistill
from nasdistill.config import ConfigError, load_config
from nasdistill.pipeline import PipelineConfig, run_pipeline

# Two targets and two seeds are what the tests below tell apart; everything else is as small as a
# stage allows (one teacher epoch, whole-epoch batches of 256 so a run is a handful of steps).
TINY = ["search.targets=[500000,2000000]", "search.train.epochs=2", "search.search.warmup_epochs=1",
        "students.sampled=1", "teachers.train.epochs=1", "distill.train.epochs=1",
        "distill.seeds=[0,1]", "workers=1", "export.onnx=false", "search.train.batch_size=256",
        "teachers.train.batch_size=256", "distill.train.batch_size=256"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(PipelineConfig, None, TINY)
    summary = run_pipeline(cfg, out, verbose=False)
    return out, summary


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


def test_finished_stages_are_reused(run):
    out, _ = run
    stamps = {p: p.stat().st_mtime for p in out.glob("*/**/result.json")}
    cfg = load_config(PipelineConfig, None, TINY)
    run_pipeline(cfg, out, verbose=False)
    assert stamps and all(p.stat().st_mtime == t for p, t in stamps.items())


def test_a_damaged_or_partial_export_is_exported_again(run):
    """An export killed midway or damaged since (a file missing, a file of other bytes) is not
    reused on rerun: it is written again and reloads to the source run's outputs."""
    out, summary = run
    first, second = (out / "students" / s["student"] for s in summary["students"][:2])
    (first / "model.pt2").unlink()
    (second / "model.safetensors").write_bytes(b"not a safetensors file")
    untouched = {p: p.stat().st_mtime_ns for s in summary["students"][2:]
                 for p in (out / "students" / s["student"]).iterdir() if p.name != ".lock"}
    run_pipeline(load_config(PipelineConfig, None, TINY), out, verbose=False)
    x = torch.randn(3, 1, 8, 8)
    for folder in (first, second):
        info = json.loads((folder / "export.json").read_text())
        assert (folder / "model.pt2").is_file()
        with torch.no_grad():
            assert torch.allclose(nasdistill.load(folder)(x), nasdistill.load(out / info["source"])(x), atol=1e-5)
    assert all(p.stat().st_mtime_ns == t for p, t in untouched.items())  # complete exports are reused


def test_bad_pipeline_configs_are_refused():
    with pytest.raises(ConfigError, match="teachers.methods"):
        load_config(PipelineConfig, None, ["teachers.methods=[ce,gnt]"]).check()
    with pytest.raises(ConfigError, match="search.targets"):
        load_config(PipelineConfig, None, ["search.search.target=5"]).check()
    with pytest.raises(ConfigError, match="distil"):
        load_config(PipelineConfig, None, ["distil.seeds=[0]"])


def test_run_with_another_value_is_refused_or_recomputed_never_reused(run, tmp_path):
    """A changed key is refused, naming it; --restart recomputes exactly the runs it changes (the KD
    runs for a KD temperature) and reuses the others (the students alone, teachers, search)."""
    out = tmp_path / "copy"  # a copy: the restart below rewrites it, and the shared run stays as it was
    shutil.copytree(run[0], out, copy_function=shutil.copy2)
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


def test_a_search_stage_killed_before_its_result_is_finished_on_rerun(run):
    out, _ = run
    stage = out / "search" / "shared"  # one search run for every target
    before = json.loads((stage / "result.json").read_text())
    (stage / "result.json").unlink()
    run_pipeline(load_config(PipelineConfig, None, TINY), out, verbose=False)
    after = json.loads((stage / "result.json").read_text())
    assert after["students"] == before["students"] and after["weights_sha256"] == before["weights_sha256"]


def test_non_finite_loss_names_the_stage_and_what_to_do(tmp_path, capsys):
    from nasdistill.cli import main

    rc = main(["run", *TINY, "search.targets=[]", "teachers.train.lr=1e8", "--out-dir", str(tmp_path / "nan")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "teachers stopped in" in err and str(tmp_path / "nan" / "teachers") in err
    assert "teachers.train.lr" in err and "--restart" in err and "Traceback" not in err


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def kill_and_finish(run, out, procs, marks, seed_stages: bool = False, extra=(), daemons: tuple = ()) -> None:
    """SIGKILL the main job as soon as each path of ``marks`` exists (a file a stage writes while
    its runs are in progress), one fresh job per mark, then rerun to the end: no worker outlives a
    killed job, and every result equals the uninterrupted run's."""
    ref_out, summary = run
    # the shared run without its sampled student and with one distillation seed of its two: each run
    # left (the searched students and the random ones of their bands, seed 0) equals the shared run's
    args = [sys.executable, "-m", "nasdistill", "run",
            *[a for a in TINY if not a.startswith(("workers", "distill.seeds", "students.sampled"))],
            "workers=2", "distill.seeds=[0]", "students.sampled=0", *extra, "--resume", "--out-dir", str(out)]
    env = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")
    if seed_stages:
        # the search and the seed-0 teachers are the shared run's (the same runs: reused as they are),
        # so the killed jobs spend their time where the kills are
        out.mkdir(parents=True)
        shutil.copytree(ref_out / "search", out / "search", copy_function=shutil.copy2)
        for folder in (ref_out / "teachers").glob("*_s0"):
            shutil.copytree(folder, out / "teachers" / folder.name, copy_function=shutil.copy2)
    for mark in [out / m for m in marks]:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        children = set()
        while time.time() < deadline and proc.poll() is None and not mark.exists():
            time.sleep(0.02)
        time.sleep(0.5 if mark.name == "distill" else 0.05)  # let the distillation workers start
        children |= procs.children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed = time.time()
        children = {c for c in children if not _cmdline(c).startswith(daemons)} if daemons else children
        end = killed + 10
        while time.time() < end and any(procs.alive(c) for c in children):
            time.sleep(0.1)
        assert not [c for c in children if procs.alive(c)], "a worker outlived the killed main job"
        # and nothing writes into the job's folder from 3 s after the kill on
        time.sleep(max(0.0, killed + 3 - time.time()))
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        time.sleep(1.0)
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    key = lambda r: (r["student"], r["teacher"], r["method"], r["seed"])  # noqa: E731
    searched = {s["student"] for s in summary["students"] if s["kind"] in ("searched", "random")}
    ref = {key(r): r for r in csv.DictReader(open(ref_out / "results.csv"))
           if r["seed"] == "0" and r["student"] in searched}
    got = {key(r): r for r in csv.DictReader(open(out / "results.csv"))}
    assert ref and ref.keys() == got.keys()
    for k in ref:
        for col in ("test_acc", "best_acc", "last_acc"):
            assert got[k][col] == ref[k][col], (k, col)
    # the distillation's time counts the part done before each kill; nothing is left in progress
    times = json.loads((out / "stage_times.json").read_text())
    assert "partial" not in times and times["distill"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_job_killed_while_its_workers_distill_finishes_equal(run, tmp_path, procs):
    """The kill harness at small scale (every default run): one kill while both workers distill."""
    kill_and_finish(run, tmp_path / "killed", procs, ["distill"], seed_stages=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_ray_backend_gives_the_local_results_and_a_killed_driver_leaves_no_task(run, tmp_path, procs):
    """backend=ray on a local Ray instance (ray.address=local): the driver killed while its tasks
    distill leaves no task running and nothing writing (the instance dies with it), and the rerun
    reuses what was finished and gives the results of the local backend's run, value for value."""
    pytest.importorskip("ray", reason="the ray extra is part of the test extra: pip install -e '.[test]'")
    # (Ray's node agents, which never write into a run's folder, notice the dead node on their own
    # within a minute; every task and every other process of the instance ends at once)
    kill_and_finish(run, tmp_path / "ray", procs, ["distill"], seed_stages=True,
                    extra=["backend=ray", "ray.cpus_per_run=1"],
                    daemons=("ray::DashboardAgent", "ray::RuntimeEnvAgent"))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_harness_every_stage_finishes_equal_and_no_process_outlives_its_parent(run, tmp_path, procs):
    """A kill inside every stage (the search, with the teachers training beside it; the teachers;
    the distillation), a fresh job after each."""
    kill_and_finish(run, tmp_path / "killed", procs,
                    ["search/shared/metrics.jsonl", "teachers/ce_s0/last.ckpt", "distill"])


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
