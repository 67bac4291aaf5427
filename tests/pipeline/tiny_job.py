"""The main job at a tiny size, shared by the main job's tests (built once per session: see
``conftest.py``), and the kill harness that kills it and finishes it."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from small_data import TENTH_OF_DIGITS

# Two targets and two seeds are what the tests below tell apart; everything else is as small as a
# stage allows (one teacher epoch, a tenth of digits for training in batches of 256, so a run is a
# step or two and its evaluation).
TINY = ["search.targets=[500000,2000000]", "search.train.epochs=2", "search.search.warmup_epochs=1",
        "students.sampled=1", "teachers.train.epochs=1", "distill.train.epochs=1",
        "distill.seeds=[0,1]", "workers=1", "export.onnx=false", "search.train.batch_size=256",
        "teachers.train.batch_size=256", "distill.train.batch_size=256", TENTH_OF_DIGITS]



def copy_job(src, dst):
    """A copy of a finished job folder, or of one of its stages (modification times kept, its
    ``.lock`` files left out)."""
    shutil.copytree(src, dst, copy_function=shutil.copy2, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


#: processes of a local Ray instance that outlive a killed driver by up to a minute, and never write
#: into a run's folder (Ray's node agents notice the dead node on their own)
RAY_DAEMONS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _written_since(paths, since_ns: int) -> int:
    return sum(p.stat().st_mtime_ns > since_ns for p in paths if p.is_file())


def distilling(out, since_ns: int) -> bool:
    """A mark: a distillation run has written a file since the job began (its runs are under way)."""
    return _written_since((out / "distill").rglob("*"), since_ns) > 0


def distilled(n: int):
    """A mark: ``n`` distillation runs have finished since the job began (more are under way)."""
    return lambda out, since_ns: _written_since((out / "distill").glob("*/*/result.json"), since_ns) >= n


def kill_and_finish(run, out, procs, kills, finish=(), seed_stages: bool = False) -> None:
    """For each ``(mark, keys)`` of ``kills``, a fresh job with ``keys`` added, SIGKILLed as soon as
    ``mark`` holds (a path relative to the job that a stage writes while its runs are in progress, or
    ``mark(out, since_ns)``: :func:`distilling`, :func:`distilled`); then the job with ``finish``
    runs to the end. No worker outlives a killed job, nothing writes into its folder after it, and
    every result equals the uninterrupted run's."""
    ref_out, summary = run
    # the shared run without its sampled student, with one distillation seed of its two and without
    # its exports: each run left (the searched students and the random ones of their bands, seed 0)
    # equals the shared run's
    base = [sys.executable, "-m", "nasdistill", "run",
            *[a for a in TINY if not a.startswith(("workers", "distill.seeds", "students.sampled"))],
            "workers=2", "distill.seeds=[0]", "students.sampled=0", "export.enabled=false", "--resume",
            "--out-dir", str(out)]
    env = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")
    if seed_stages:
        # the search and the seed-0 teachers are the shared run's (the same runs: reused as they are),
        # so the killed jobs spend their time where the kills are
        copy_job(ref_out / "search", out / "search")
        for folder in (ref_out / "teachers").glob("*_s0"):
            copy_job(folder, out / "teachers" / folder.name)
    for mark, keys in kills:
        launched = time.time_ns()
        held = (out / mark).exists if isinstance(mark, str) else (lambda: mark(out, launched))
        proc = subprocess.Popen([*base, *keys], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        children = set()
        while time.time() < deadline and proc.poll() is None and not held():
            time.sleep(0.02)
        time.sleep(0.05)
        children |= procs.children(proc.pid)
        assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before {mark} held: nothing was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.time()
        if "backend=ray" in keys:
            children = {c for c in children if not _cmdline(c).startswith(RAY_DAEMONS)}
        end = killed + 10
        while time.time() < end and any(procs.alive(c) for c in children):
            time.sleep(0.1)
        assert not [c for c in children if procs.alive(c)], "a worker outlived the killed main job"
        # and nothing writes into the job's folder from 1.5 s after the kill on
        time.sleep(max(0.0, killed + 1.5 - time.time()))
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        time.sleep(1.0)
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    done = subprocess.run([*base, *finish], env=env, capture_output=True, text=True, timeout=600)
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
