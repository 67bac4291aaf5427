"""The main job: search -> teachers -> distill -> report -> export.

Every stage writes its own run directory under ``out_dir`` (``search/shared/target_<T>``,
``teachers/<method>_s<seed>``, ``distill/<student>/<teacher>_<method>_s<seed>``) through the one run
lifecycle (:func:`~nasdistill.engine.run.run_training`): a stage whose directory holds a finished
run of the same configuration is reused, an interrupted one resumes from its last checkpoint, and
one of another configuration is refused -- or, with ``--restart``, recomputed. The main folder's
own ``run.json`` records the whole job's configuration: rerunning with other values is refused
(naming the keys) unless ``--restart`` asks to recompute the stages they change -- or unless no
stage made progress yet (nothing to keep: the job takes the folder over). The folder is locked
while the job runs, and worker processes end with it (:mod:`.workers`).

Everything that can refuse the job runs before its first file is written: the configuration's
own checks, the data (missing files), the space, the search targets against the costs the space can
reach (:mod:`.checks`). A full disk is one paragraph naming the folder and how to continue.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

from ..atomic import reworded, write_json
from ..engine import distributed
from ..config import to_dict
from ..engine.run import NOT_IDENTITY as RUN_NOT_IDENTITY
from ..engine.run import (ConfigMismatch, config_identity, describe_diff, fingerprint, holding, identity_diff,
                          runtime, write_run_files)
from ..engine.rundir import RunDirectory
from .checks import augmented, check_job_inputs
from .stage import Progress, Stage
from .steps import (describe_task, distill_students, export_students, teacher_histories, random_students,
                    sample_students,
                    start_search, start_teachers, teacher_rows, teachers_need_students)
from .workers import JobPool

#: Keys of the main job's configuration that never change a result.
NOT_IDENTITY = ("out_dir", "threads", "workers", "export", "data.root", "about")
#: The ``train.*`` keys a run's identity leaves out (:data:`nasdistill.engine.run.NOT_IDENTITY`),
#: left out of every stage's ``train`` section.
_RUN_KEYS = tuple(k.split(".", 1)[1] for k in RUN_NOT_IDENTITY if k.startswith("train."))


def job_identity(cfg) -> dict:
    """The keys of the main job's configuration that decide its results."""
    flat = config_identity(cfg, ignore=NOT_IDENTITY)
    return {k: v for k, v in flat.items() if not (".train." in f".{k}" and k.rsplit(".", 1)[-1] in _RUN_KEYS)}


# ---------------------------------------------------------------------------- the job
def check_job(cfg, out: Path, mode: str) -> tuple[dict, str]:
    """Compare the job with the one that wrote ``out``; return (manifest, stage mode)."""
    identity = job_identity(cfg)
    rd = RunDirectory(out)
    manifest = rd.read_manifest() if mode != "restart" else None  # (--restart rewrites a damaged one)
    stage_mode = "update" if mode == "restart" else "resume"
    if manifest is not None and mode != "restart":
        diff = identity_diff(manifest.get("identity") or {}, identity)
        if diff and stages_hold_progress(out):
            raise ConfigMismatch(
                f"{out} holds a main job with another configuration: {describe_diff(diff)}. Rerun with "
                f"those values to reuse it, choose another --out-dir, or add --restart to recompute "
                "the stages these keys change (the others are reused)")
    return {"kind": "pipeline", "fingerprint": fingerprint(identity), "identity": identity}, stage_mode


def stages_hold_progress(out: Path) -> bool:
    """Whether a run of any stage under ``out`` made progress (a job that stopped before holds
    nothing to keep, whatever its configuration)."""
    folders = [*out.glob("search/*"), *out.glob("teachers/*"), *out.glob("distill/*/*")]
    return any(RunDirectory(f).holds_run() for f in folders if f.is_dir())


def job_disk_full(err: OSError, out: Path) -> OSError:
    """A full disk during the main job: one paragraph naming the folder and how to continue."""
    failed = f"writing {err.filename} failed" if err.filename else "a write failed"
    return reworded(err, f"no space left on the device holding the main job's folder {out}: {failed}. The "
                         "job stopped; every finished run and each interrupted run's last good checkpoint "
                         "are kept, and no partial file is left. Free some space, then run the same "
                         "`nasdistill run` command again: finished runs are reused and the others continue "
                         "from their last checkpoint", err.filename or out)


def run_pipeline(cfg, out_dir=None, verbose: bool = True, mode: str = "resume") -> dict:
    """Run every stage; return a summary (also written to ``summary.json``).

    ``mode``: ``resume`` (reuse finished stages, resume interrupted ones, refuse another
    configuration) or ``restart`` (recompute the stages whose configuration changed).
    """
    if mode not in ("resume", "restart"):
        raise ValueError(f"the main job's mode is 'resume' or 'restart', got {mode!r}")
    cfg.check()
    world = distributed.world()
    out = Path(out_dir or cfg.out_dir)
    splits = cfg.data.load()  # missing files are refused before the folder is touched
    space = check_job_inputs(cfg, splits)
    rd = RunDirectory(out)
    if world.is_main:
        rd.lock()
    with holding(rd, lambda err: job_disk_full(err, out)):  # the same lock and full-disk handling as a run
        return _run(cfg, out, rd, mode, world, verbose, splits, space)


def _run(cfg, out: Path, rd: RunDirectory, mode: str, world, verbose: bool, splits, space) -> dict:
    from ..report import write_report

    manifest, stage_mode = check_job(cfg, out, mode)
    if world.is_main:
        write_run_files(rd, manifest, cfg)
    device = runtime(cfg.teachers.train.device, cfg.threads, world)
    log = Progress(verbose and world.is_main)
    t_start = time.perf_counter()
    times: dict = {}
    log.say(f"nasdistill run: data {cfg.data.name} ({len(splits.train)} train images), space {space.name} "
            f"({space.size():,} architectures) -> {out}")
    previous_path = out / "stage_times.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    # one set of worker processes for the whole job (started with the first run to do), pinned to GPUs
    pool = backend(cfg, world, log)
    with pool if pool is not None else nullcontext():
        stage = Stage(cfg, stage_mode, log, root=out, pool=pool)
        rows, results, teachers, students = _stages(cfg, out, stage, world, splits, space, times, previous,
                                                    previous_path)
        if not world.is_main:  # rank 0 evaluates, reports and exports
            return {"out_dir": str(out), "rank": world.rank}
        t0 = time.perf_counter()
        exported = []
        if cfg.export.enabled:
            log.say("export:")
            exported = export_students(cfg, out, students, rows, results, splits, log, stage)
        times["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trows = teacher_rows(cfg, teachers, splits, device)
    entropy, branch_acc, gate_info = teacher_histories(teachers)
    report = write_report(out, rows, trows, students, times, entropy, config_summary=to_dict(cfg),
                          branch_history=branch_acc, gate_info=gate_info or None,
                          exports=exported if cfg.export.enabled else None,
                          about=describe_task(cfg, splits), num_classes=splits.num_classes,
                          kd_temperature={m: getattr(getattr(cfg.teachers, m, None), "kd_temperature",
                                                     cfg.distill.kd.temperature) for m in cfg.teachers.methods})
    times["report"] = time.perf_counter() - t0
    write_json(previous_path, {**previous, **times})
    log.say(f"report: {report}")
    times["total"] = time.perf_counter() - t_start
    summary = {"out_dir": str(out), "students": students, "teachers": trows, "stage_times_s": times,
               "report": str(report), "exported": {e["student"]: str(out / e["folder"]) for e in exported}}
    write_json(out / "summary.json", summary)
    log.say(f"done in {times['total']:.0f}s: {report}")
    return summary


def backend(cfg, world, log):
    """The job's worker processes (:class:`~.workers.JobPool`, placed by :mod:`.placement`), or None
    when its runs run in this process (one worker, or every rank under torchrun)."""
    from .placement import describe, visible_gpus, worker_count, worker_envs

    if world.distributed:
        return None
    gpus = visible_gpus()
    n = worker_count(cfg.workers, cfg.runs_per_gpu, gpus)
    if n <= 1 and not gpus:
        return None
    log.say(f"runs on {describe(n, gpus, cfg.runs_per_gpu)}")
    return JobPool(n, worker_envs(n, gpus, cfg.runs_per_gpu))


def _stages(cfg, out: Path, stage: Stage, world, splits, space, times: dict, previous: dict,
            previous_path: Path):
    """Search, teachers, distillation. Teachers that need no searched student are queued right
    behind the search, so they train while it runs; ``times`` gets each stage's wall time (from
    its start to its last run's end) and ``overlap``, the seconds the teachers trained during the
    search (counted once in the report's total)."""

    def record(name: str, t0: float) -> None:
        # a stage reused from an earlier invocation keeps the time it took then
        reused = not stage.ran_by.get(name) and name in previous
        times[name] = previous[name] if reused else time.perf_counter() - t0
        if world.is_main:
            write_json(previous_path, {**previous, **times})

    t_search = time.perf_counter()
    search = start_search(cfg, out, space, stage)
    # (without worker processes a stage's runs run as it starts: nothing to gain from starting early)
    early = stage.queues and not teachers_need_students(cfg)
    t_teachers = time.perf_counter()
    pending = start_teachers(cfg, out, [], stage) if early else None
    students = search.wait()
    record("search", t_search)
    students += random_students(cfg, space, students)
    students += sample_students(cfg, space, {s["student"] for s in students})
    if world.is_main:
        write_json(out / "students.json", students)
    if pending is None:
        t_teachers = time.perf_counter()
        pending = start_teachers(cfg, out, students, stage)
    search_end = time.perf_counter()
    teachers = pending.wait()
    record("teachers", t_teachers)
    ran_search, ran_teachers = stage.ran_by.get("search"), stage.ran_by.get("teachers")
    if early and ran_search and ran_teachers:
        times["overlap"] = max(0.0, min(search_end, time.perf_counter()) - t_teachers)
    elif not ran_search and not ran_teachers and "overlap" in previous:
        times["overlap"] = previous["overlap"]  # both reused: as they ran then
    else:
        previous.pop("overlap", None)  # one stage ran alone this time
    t0 = time.perf_counter()
    rows, results = distill_students(cfg, out, students, teachers, stage, augmented=augmented(cfg, splits))
    record("distill", t0)
    return rows, results, teachers, students
