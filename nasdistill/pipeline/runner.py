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

import time
from contextlib import nullcontext
from pathlib import Path

from ..atomic import reworded, write_json
from ..engine import distributed
from ..config import flatten, to_dict
from ..engine.run import NOT_IDENTITY as RUN_NOT_IDENTITY
from ..engine.run import (ConfigMismatch, describe_diff, drop_keys, fingerprint, holding, identity_diff,
                          runtime, write_run_files)
from ..engine.rundir import RunDirectory
from .checks import augmented, check_job_inputs
from .stage import Progress, Stage
from .stage_times import INVOCATION, StageTimes
from .steps import (describe_task, distill_students, export_students, teacher_histories, random_students,
                    sample_students,
                    start_search, start_teachers, teacher_rows, teachers_need_students)
from .workers import JobPool

#: Keys of the main job's configuration that never change a result.
NOT_IDENTITY = ("out_dir", "threads", "workers", "runs_per_gpu", "backend", "ray", "export", "data.root", "about")
#: The ``train.*`` keys a run's identity leaves out (:data:`nasdistill.engine.run.NOT_IDENTITY`),
#: left out of every stage's ``train`` section.
_RUN_KEYS = tuple(k.split(".", 1)[1] for k in RUN_NOT_IDENTITY if k.startswith("train."))


def job_identity(cfg) -> dict:
    """The keys of the main job's configuration that decide its results."""
    return deciding_keys(flatten(to_dict(cfg)))


def deciding_keys(flat: dict) -> dict:
    """The entries of a flattened main-job configuration that decide its results (also applied to
    an older job's recorded identity: a key that stopped deciding results is no difference)."""
    flat = drop_keys(flat, NOT_IDENTITY)
    return {k: v for k, v in flat.items() if not (".train." in f".{k}" and k.rsplit(".", 1)[-1] in _RUN_KEYS)}


# ---------------------------------------------------------------------------- the job
def check_job(cfg, out: Path, mode: str) -> tuple[dict, str]:
    """Compare the job with the one that wrote ``out``; return (manifest, stage mode)."""
    identity = job_identity(cfg)
    rd = RunDirectory(out)
    manifest = rd.read_manifest() if mode != "restart" else None  # (--restart rewrites a damaged one)
    stage_mode = "update" if mode == "restart" else "resume"
    if manifest is not None and mode != "restart":
        diff = identity_diff(deciding_keys(manifest.get("identity") or {}), identity)
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
    clock = StageTimes(out / "stage_times.json", write=world.is_main)
    log.say(f"nasdistill run: data {cfg.data.name} ({len(splits.train)} train images), space {space.name} "
            f"({space.size():,} architectures) -> {out}")
    # one set of worker processes for the whole job (started with the first run to do), pinned to GPUs
    pool = backend(cfg, world, log, out)
    clock.placed(pool.describe() if pool is not None else
                 f"{world.world_size} ranks (torchrun)" if world.distributed else "this process, one run at a time")
    with pool if pool is not None else nullcontext():
        stage = Stage(cfg, stage_mode, log, root=out, pool=pool)
        stage.on_run_end = clock.run_ended
        rows, results, teachers, students = _stages(cfg, out, stage, world, splits, space, clock)
        if not world.is_main:  # rank 0 evaluates, reports and exports
            return {"out_dir": str(out), "rank": world.rank}
        t0 = time.perf_counter()
        exported = []
        if cfg.export.enabled:
            log.say("export:")
            exported = export_students(cfg, out, students, rows, results, splits, log, stage)
        clock.timed("export", time.perf_counter() - t0)
    t0 = time.perf_counter()
    trows = teacher_rows(cfg, teachers, splits, device)
    entropy, branch_acc, gate_info = teacher_histories(teachers)
    # (the report's own time is not in its table: it is being written)
    report = write_report(out, rows, trows, students, clock.table(), entropy, config_summary=to_dict(cfg),
                          branch_history=branch_acc, gate_info=gate_info or None,
                          exports=exported if cfg.export.enabled else None,
                          about=describe_task(cfg, splits), num_classes=splits.num_classes,
                          kd_temperature={m: getattr(getattr(cfg.teachers, m, None), "kd_temperature",
                                                     cfg.distill.kd.temperature) for m in cfg.teachers.methods})
    clock.timed("report", time.perf_counter() - t0)
    log.say(f"report: {report}")
    times = clock.table()
    times["total"] = times.pop(INVOCATION)
    summary = {"out_dir": str(out), "students": students, "teachers": trows, "stage_times_s": times,
               "report": str(report), "exported": {e["student"]: str(out / e["folder"]) for e in exported}}
    # the file names the report and the exports relative to the job's folder (records hold no
    # absolute path: a moved folder stays true); the returned summary names them as given
    write_json(out / "summary.json", {**{k: v for k, v in summary.items() if k != "out_dir"},
                                      "report": report.name,
                                      "exported": {e["student"]: e["folder"] for e in exported}})
    log.say(f"done in {times['total']:.0f}s: {report}")
    return summary


def backend(cfg, world, log, out=None):
    """The job's worker processes (:class:`~.workers.JobPool`, placed by :mod:`.placement`), its
    Ray tasks (``backend=ray``: :class:`~.ray_pool.RayPool`), or None when its runs run in this
    process (one worker, or every rank under torchrun)."""
    from .placement import describe, visible_gpus, worker_count, worker_envs

    if world.distributed:
        return None
    if cfg.backend == "ray":
        from .ray_pool import RayPool

        pool = RayPool(cfg.ray, job=out)
        log.say(f"runs on {pool.describe()}")
        return pool
    gpus = visible_gpus()
    n = worker_count(cfg.workers, cfg.runs_per_gpu, gpus)
    if n <= 1 and not gpus:
        return None
    pool = JobPool(n, worker_envs(n, gpus, cfg.runs_per_gpu), describe(n, gpus, cfg.runs_per_gpu))
    log.say(f"runs on {pool.describe()}")
    return pool


def _stages(cfg, out: Path, stage: Stage, world, splits, space, clock: StageTimes):
    """Search, teachers, distillation. Teachers that need no searched student are queued right
    behind the search, so they train while it runs; ``clock`` records each stage's time as its
    runs end (:mod:`.stage_times`) and the teachers' overlap with the search."""
    search = start_search(cfg, out, space, stage)
    # (without worker processes a stage's runs run as it starts: nothing to gain from starting early)
    early = stage.queues and not teachers_need_students(cfg)
    pending = start_teachers(cfg, out, [], stage) if early else None
    students = search.wait()
    search_span = clock.spans.get("search")
    clock.stage_ended("search", had_runs="search" in stage.began)
    students += random_students(cfg, space, students)
    students += sample_students(cfg, space, [s["arch"] for s in students], say=stage.log.say)
    if world.is_main:
        write_json(out / "students.json", students)
    if pending is None:
        pending = start_teachers(cfg, out, students, stage)
    teachers = pending.wait()
    teachers_span = clock.spans.get("teachers")
    clock.stage_ended("teachers", had_runs="teachers" in stage.began)
    clock.overlap(search_span, teachers_span, early)
    rows, results = distill_students(cfg, out, students, teachers, stage, augmented=augmented(cfg, splits))
    clock.stage_ended("distill", had_runs="distill" in stage.began)
    return rows, results, teachers, students
