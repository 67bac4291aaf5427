"""The main job: search -> teachers -> distill -> report -> export.

Every stage writes its own run directory under ``out_dir`` (``search/target_<T>``,
``teachers/<method>``, ``distill/<student>/<teacher>_<method>_s<seed>``); a stage whose directory
already holds a finished run is reused, an interrupted one is resumed from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ..engine.config import ModelConfig, from_dict, save_yaml, to_dict
from ..engine.rundir import read_metrics, read_result, write_json
from .config import TEACHER_METHODS, PipelineConfig


class Progress:
    """Stage headers and one progress bar per stage (tqdm), cheap and quiet otherwise."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def bar(self, total: int, desc: str):
        import os

        from tqdm import tqdm
        disable = not self.verbose or os.environ.get("NASDISTILL_PROGRESS", "1") == "0"
        return tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=True)


def _finished(run_dir: Path):
    return read_result(run_dir) if (run_dir / "result.json").exists() else None


def _world():
    from ..engine import distributed

    return distributed.world()


def _barrier() -> None:
    from ..engine import distributed

    distributed.barrier()


# ---------------------------------------------------------------------------- stages
def search_students(cfg: PipelineConfig, out: Path, splits, space, log: Progress) -> list[dict]:
    from ..search import SearchConfig, run_search

    students = []
    for target in cfg.search.targets:
        run_dir = out / "search" / f"target_{int(target)}"
        result = _finished(run_dir)
        if result is None:
            log.say(f"search: MACs target {int(target):,} -> {run_dir}")
            section = dataclasses.replace(cfg.search.search, space=cfg.space, target=float(target),
                                          cost_metric="macs")
            scfg = SearchConfig(seed=cfg.seed, out_dir=str(run_dir), data=cfg.data,
                                train=cfg.search.train, search=section)
            run_dir.mkdir(parents=True, exist_ok=True)
            result = run_search(scfg, run_dir, resume=True, splits=splits, verbose=False, world=_world())
            _barrier()
        else:
            log.say(f"search: reusing {run_dir}")
        arch = result["arch"]
        cost = space.cost(arch)
        log.say(f"  found {space.arch_id(arch)}: {cost['macs']:,} MACs "
                f"({cost['macs'] / target:.2f}x target), {cost['params']:,} params")
        arch_id = space.arch_id(arch)
        if any(s["student"] == arch_id for s in students):
            log.say("  (same network as an earlier target's: kept once)")
            continue
        students.append({"student": arch_id, "kind": "searched", "arch": arch,
                         "macs": cost["macs"], "params": cost["params"], "target_macs": float(target)})
    return students


def sample_students(cfg: PipelineConfig, space, taken: set) -> list[dict]:
    out, seed = [], cfg.students.sample_seed
    attempts = 0
    while len(out) < cfg.students.sampled:
        arch = space.sample(seed=seed + attempts)
        attempts += 1
        if attempts > 1000 * max(cfg.students.sampled, 1):
            raise ValueError(f"could not sample {cfg.students.sampled} distinct students from {space.name}")
        arch_id = space.arch_id(arch)
        if arch_id in taken:
            continue
        taken.add(arch_id)
        cost = space.cost(arch)
        out.append({"student": arch_id, "kind": "sampled", "arch": arch, "macs": cost["macs"],
                    "params": cost["params"], "target_macs": None})
    return out


def train_teachers(cfg: PipelineConfig, out: Path, splits, students, log: Progress) -> dict:
    from ..teachers import teacher_config_class
    from ..teachers.runner import run_teacher

    teachers = {}
    cls = teacher_config_class()
    for method in cfg.teachers.methods:
        run_dir = out / "teachers" / method
        result = _finished(run_dir)
        if result is None:
            log.say(f"teacher: {method} ({cfg.teachers.model.name}) -> {run_dir}")
            fields = {f.name for f in dataclasses.fields(cls)}
            sections = {name: getattr(cfg.teachers, name) for name in TEACHER_METHODS if name in fields}
            if method == "gtn":
                sections["gtn"] = dataclasses.replace(cfg.teachers.gtn, space=cfg.space)
            if method == "sftn" and cfg.teachers.sftn_student_from_search:
                first = students[0]
                sections["sftn"] = dataclasses.replace(
                    cfg.teachers.sftn, student=ModelConfig(space=cfg.space, arch=first["arch"]))
            tcfg = cls(seed=cfg.seed, out_dir=str(run_dir), method=method, model=cfg.teachers.model,
                       data=cfg.data, train=cfg.teachers.train, **sections)
            run_dir.mkdir(parents=True, exist_ok=True)
            result = run_teacher(tcfg, run_dir, resume=True, splits=splits, verbose=False, world=_world())
            _barrier()
        else:
            log.say(f"teacher: reusing {run_dir}")
        log.say(f"  {method}: test {result.get('test_acc', float('nan')):.2f}%, "
                f"{result.get('wall_time_s', 0):.1f}s")
        teachers[method] = {"dir": run_dir, "result": result}
    return teachers


def _distill_config(cfg: PipelineConfig, student: dict, teacher_dir, method: str, seed: int, run_dir):
    from ..distill.config import DistillConfig

    return DistillConfig(seed=seed, out_dir=str(run_dir),
                         teacher=None if teacher_dir is None else str(teacher_dir), method=method,
                         student=ModelConfig(space=cfg.space, arch=dict(student["arch"])),
                         data=cfg.data, train=cfg.distill.train, kd=cfg.distill.kd, dkd=cfg.distill.dkd,
                         cache_teacher_logits=cfg.distill.cache_teacher_logits and method != "none")


def _distill_job(payload: dict) -> dict:
    """One distillation run (in this process or a worker process)."""
    from ..distill.config import DistillConfig
    from ..distill.runner import run_distill

    if payload.get("threads"):
        torch.set_num_threads(payload["threads"])
    dcfg = from_dict(DistillConfig, payload["config"])
    run_dir = Path(payload["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_distill(dcfg, run_dir, resume=True, verbose=False, world=_world())


def distill_students(cfg: PipelineConfig, out: Path, students, teachers, log: Progress):
    """Run (or reuse) every distillation; return the result rows and how many runs were executed."""
    jobs = []
    for st in students:
        for seed in cfg.distill.seeds:
            pairs = [(t, m) for t in teachers for m in cfg.distill.methods]
            if cfg.distill.baseline:
                pairs.append(("none", "none"))
            for teacher, method in pairs:
                name = "none" if teacher == "none" else f"{teacher}_{method}"
                run_dir = out / "distill" / st["student"] / f"{name}_s{seed}"
                tdir = None if teacher == "none" else teachers[teacher]["dir"]
                dcfg = _distill_config(cfg, st, tdir, method, seed, run_dir)
                jobs.append(({"student": st, "teacher": teacher, "method": method, "seed": seed},
                             {"config": to_dict(dcfg), "run_dir": str(run_dir), "threads": cfg.threads}))
    rows = []
    todo = [(meta, p) for meta, p in jobs if _finished(Path(p["run_dir"])) is None]
    parallel = cfg.workers > 1 and len(todo) > 1 and not _world().distributed
    how = (f"{cfg.workers} worker processes" if parallel else
           f"one at a time on {_world().world_size} ranks" if _world().distributed else "one at a time")
    log.say(f"distill: {len(jobs)} runs ({len(students)} students x {len(cfg.distill.seeds)} seeds x "
            f"{len(jobs) // max(1, len(students) * len(cfg.distill.seeds))} teacher/method pairs), "
            f"{len(jobs) - len(todo)} reused, {how}")
    bar = log.bar(len(todo), "distill")
    try:
        if parallel:
            import multiprocessing as mp
            with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as pool:
                for _ in pool.map(_distill_job, [p for _, p in todo]):
                    bar.update(1)
        else:
            for _, payload in todo:
                _distill_job(payload)
                _barrier()
                bar.update(1)
    finally:
        bar.close()
    for meta, payload in jobs:
        result = read_result(Path(payload["run_dir"]))
        st = meta["student"]
        rows.append({"student": st["student"], "student_kind": st["kind"],
                     "target_macs": st["target_macs"], "macs": st["macs"], "params": st["params"],
                     "teacher": meta["teacher"], "method": meta["method"], "seed": meta["seed"],
                     "best_acc": result.get("best_acc"), "last_acc": result.get("last_acc"),
                     "test_acc": result.get("test_acc"), "wall_time_s": result.get("wall_time_s")})
    return rows, len(todo)


def teacher_rows(cfg: PipelineConfig, teachers: dict, splits, device) -> list[dict]:
    from ..analysis import evaluate_teacher_quality
    from ..engine.modelspec import load_model_record

    rows = []
    for method, info in teachers.items():
        result = info["result"]
        model = load_model_record(info["dir"], device=device)
        quality = evaluate_teacher_quality(model, splits.test, device, mean=splits.mean, std=splits.std)
        rows.append({"teacher": method, "model": cfg.teachers.model.name, "test_acc": result.get("test_acc"),
                     "best_acc": result.get("best_acc"), "wall_time_s": result.get("wall_time_s"),
                     "epochs": result.get("epochs"), "ece": quality.get("ece")})
    return rows


def gtn_histories(teachers: dict) -> tuple[list[dict], list[dict]]:
    """Per GTN epoch: the gate entropies, and the teacher / branch accuracies."""
    if "gtn" not in teachers:
        return [], []
    entropy, accuracy = [], []
    for r in read_metrics(teachers["gtn"]["dir"]):
        entropy.append({"epoch": r["epoch"], **{k: v for k, v in r.items() if k.startswith("phi_entropy")}})
        accuracy.append({"epoch": r["epoch"], "teacher_acc": r.get("val_acc"),
                         **{k: v for k, v in r.items() if k.startswith("branch") and k.endswith("_acc")}})
    return entropy, accuracy


def export_students(cfg: PipelineConfig, out: Path, students, rows, space, splits, log: Progress) -> dict:
    """Export, per student, the seed-0 weights of its best teacher/method (by mean test accuracy)."""
    from ..engine.modelspec import load_model_record
    from ..export import export_model

    exported = {}
    for st in students:
        mine = [r for r in rows if r["student"] == st["student"] and r["test_acc"] is not None]
        if not mine:
            continue
        by_pair: dict = {}
        for r in mine:
            by_pair.setdefault((r["teacher"], r["method"]), []).append(r["test_acc"])
        teacher, method = max(by_pair, key=lambda k: sum(by_pair[k]) / len(by_pair[k]))
        seed = cfg.distill.seeds[0]
        name = "none" if teacher == "none" else f"{teacher}_{method}"
        src = out / "distill" / st["student"] / f"{name}_s{seed}"
        target = out / "students" / st["student"]
        if (target / "export.json").exists():
            exported[st["student"]] = json.loads((target / "export.json").read_text())
            continue
        model = load_model_record(src)
        x = splits.test.images[:8].float()
        x = (x / 255.0 if splits.test.images.dtype == torch.uint8 else x)
        mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
        std = torch.tensor(splits.std).view(1, -1, 1, 1)
        info = export_model(model, target, space=space, arch=st["arch"], example_input=(x - mean) / std,
                            onnx=cfg.export.onnx, verbose=False)
        info["source"] = str(src.relative_to(out))
        info["teacher"], info["method"] = teacher, method
        write_json(target / "export.json", info)
        exported[st["student"]] = info
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in info.get("max_abs_diff", {}).items() if v is not None)
        log.say(f"  {st['student']}: {teacher}+{method} -> {target} (max |diff| {diffs})")
    return exported


# ---------------------------------------------------------------------------- the job
def run_pipeline(cfg: PipelineConfig, out_dir=None, verbose: bool = True) -> dict:
    """Run every stage; return a summary (also written to ``summary.json``)."""
    from ..data import load_dataset
    from ..engine import distributed
    from ..search.runner import space_for

    cfg.check()
    world = _world()
    out = Path(out_dir or cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        save_yaml(cfg, out / "config.yaml")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log = Progress(verbose and world.is_main)
    device = distributed.resolve_device(cfg.teachers.train.device, 0)
    t_start = time.perf_counter()
    times = {}
    d = cfg.data
    splits = load_dataset(d.name, root=d.root, seed=d.split_seed, val_size=d.val_size)
    space = space_for(cfg.space, splits)
    log.say(f"nasdistill run: data {d.name} ({len(splits.train)} train images), space {space.name} "
            f"({space.size():,} architectures) -> {out}")

    previous = json.loads((out / "stage_times.json").read_text()) if (out / "stage_times.json").exists() else {}

    def record(stage: str, t0: float, reused: bool) -> None:
        # a stage reused from an earlier invocation keeps the time it took then
        times[stage] = previous.get(stage, 0.0) if reused and stage in previous else time.perf_counter() - t0
        if world.is_main:
            write_json(out / "stage_times.json", {**previous, **times})

    t0 = time.perf_counter()
    reused = all(_finished(out / "search" / f"target_{int(t)}") for t in cfg.search.targets)
    students = search_students(cfg, out, splits, space, log)
    students += sample_students(cfg, space, {s["student"] for s in students})
    record("search", t0, reused)
    if world.is_main:
        write_json(out / "students.json", students)

    t0 = time.perf_counter()
    reused = all(_finished(out / "teachers" / m) for m in cfg.teachers.methods)
    teachers = train_teachers(cfg, out, splits, students, log)
    record("teachers", t0, reused)

    t0 = time.perf_counter()
    rows, ran = distill_students(cfg, out, students, teachers, log)
    record("distill", t0, ran == 0)

    from ..report import write_report

    if not world.is_main:  # rank 0 evaluates, reports and exports
        return {"out_dir": str(out), "rank": world.rank}
    t0 = time.perf_counter()
    trows = teacher_rows(cfg, teachers, splits, device)
    entropy, branch_acc = gtn_histories(teachers)
    report = write_report(out, rows, trows, students, times, entropy, config_summary=to_dict(cfg),
                          branch_history=branch_acc)
    record("report", t0, False)
    log.say(f"report: {report}")

    exported = {}
    if cfg.export.enabled:
        t0 = time.perf_counter()
        log.say("export:")
        exported = export_students(cfg, out, students, rows, space, splits, log)
        record("export", t0, False)
    times["total"] = time.perf_counter() - t_start
    summary = {"out_dir": str(out), "students": students, "teachers": trows, "stage_times_s": times,
               "report": str(report), "exported": {k: str(out / "students" / k) for k in exported}}
    write_json(out / "summary.json", summary)
    log.say(f"done in {times['total']:.0f}s: {report}")
    return summary
