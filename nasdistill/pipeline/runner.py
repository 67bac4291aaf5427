"""The main job: search -> teachers -> distill -> report -> export.

Every stage writes its own run directory under ``out_dir`` (``search/target_<T>``,
``teachers/<method>_s<seed>``, ``distill/<student>/<teacher>_<method>_s<seed>``) through the one run
lifecycle (:func:`~nasdistill.engine.run.run_training`): a stage whose directory holds a finished
run of the same configuration is reused, an interrupted one resumes from its last checkpoint, and
one of another configuration is refused -- or, with ``--restart``, recomputed. The main folder's
own ``run.json`` records the whole job's configuration: rerunning with other values is refused
(naming the keys) unless ``--restart`` asks to recompute the stages they change. The folder is
locked while the job runs, and worker processes end with it (:mod:`.workers`).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..atomic import write_json
from ..engine import distributed
from ..engine.config import ModelConfig, save_yaml, to_dict
from ..engine.run import ConfigMismatch, config_identity, describe_diff, fingerprint, identity_diff
from ..engine.rundir import RunDirectory, read_metrics
from ..record import ModelRecord
from .workers import run_jobs

#: Keys of the main job's configuration that never change a result.
NOT_IDENTITY = ("out_dir", "threads", "workers", "export", "data.root", "about")
_RUN_KEYS = ("device", "threads", "compile", "cuda_graphs", "check_every")


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


def job_identity(cfg) -> dict:
    """The keys of the main job's configuration that decide its results."""
    flat = config_identity(cfg, ignore=NOT_IDENTITY)
    return {k: v for k, v in flat.items() if not (".train." in f".{k}" and k.rsplit(".", 1)[-1] in _RUN_KEYS)}


class Stage:
    """Runs one stage's jobs and turns a run's failure into a sentence that names the stage."""

    def __init__(self, cfg, mode: str, log: Progress):
        self.cfg, self.mode, self.log = cfg, mode, log
        self.ran = 0   # runs executed (not reused) so far

    def payload(self, kind: str, stage_cfg, run_dir: Path) -> dict:
        return {"kind": kind, "config": to_dict(stage_cfg), "run_dir": str(run_dir), "mode": self.mode,
                "threads": self.cfg.threads}

    def run(self, name: str, payloads: list[dict], section: str) -> list[dict]:
        todo = [p for p in payloads if not _is_reusable(p)]
        self.ran += len(todo)
        world = distributed.world()
        parallel = self.cfg.workers > 1 and not world.distributed
        if payloads:
            how = (f"{min(self.cfg.workers, len(todo))} worker processes" if parallel and len(todo) > 1
                   else f"on {world.world_size} ranks" if world.distributed else "one at a time")
            self.log.say(f"{name}: {len(payloads)} runs, {len(payloads) - len(todo)} reused"
                         + (f", {len(todo)} to run ({how})" if todo else ""))
        bar = self.log.bar(len(todo), name) if todo else None
        try:
            run_jobs(todo, self.cfg.workers, on_done=lambda i, r: bar.update(1) if bar else None,
                     parallel=parallel)
        except FloatingPointError as err:
            raise _stage_error(err, name, section) from None
        finally:
            if bar is not None:
                bar.close()
        return [RunDirectory(p["run_dir"]).finished_result() for p in payloads]


def _is_reusable(payload: dict) -> bool:
    """A finished run whose configuration is this one (checked again, under its lock, by the run)."""
    rd = RunDirectory(payload["run_dir"])
    if rd.finished_result() is None:
        return False
    manifest = rd.read_manifest() or {}
    return bool(manifest) and manifest.get("kind") == payload["kind"] and \
        _payload_fingerprint(payload) == manifest.get("fingerprint")


def _payload_fingerprint(payload: dict) -> str:
    from ..engine.config import from_dict

    kind = payload["kind"]
    if kind == "search":
        from ..search import SearchConfig
        from ..search.runner import SEARCH_RUN as method
        cls = SearchConfig
    elif kind == "teacher":
        from ..teachers import teacher_config_class
        from ..teachers.runner import TEACHER_RUN as method
        cls = teacher_config_class()
    else:
        from ..distill import distill_config_class
        from ..distill.runner import DISTILL_RUN as method
        cls = distill_config_class()
    cfg = from_dict(cls, payload["config"])
    identity = method.identity(cfg) if method.identity is not None else config_identity(cfg)
    return fingerprint(identity)


def _stage_error(err: FloatingPointError, stage: str, section: str) -> FloatingPointError:
    detail = getattr(err, "detail", None) or str(err)
    where = getattr(err, "run_dir", None)
    out = FloatingPointError(
        f"{stage} stopped{f' in {where}' if where else ''}: {detail} Lower {section}.train.lr (or check the "
        f"data) and rerun `nasdistill run` with the new value and --restart: the stages whose "
        "configuration changed are recomputed, the others reused.")
    out.detail, out.run_dir = detail, where
    return out


# ---------------------------------------------------------------------------- stages
def search_students(cfg, out: Path, space, stage: Stage) -> list[dict]:
    from ..search import SearchConfig

    payloads = []
    for target in cfg.search.targets:
        section = dataclasses.replace(cfg.search.search, space=cfg.space, target=float(target),
                                      cost_metric="macs")
        scfg = SearchConfig(seed=cfg.seed, out_dir=str(out / "search" / f"target_{int(target)}"),
                            data=cfg.data, train=cfg.search.train, search=section)
        payloads.append(stage.payload("search", scfg, Path(scfg.out_dir)))
    results = stage.run("search", payloads, "search")
    students = []
    for target, result in zip(cfg.search.targets, results):
        arch = result["arch"]
        arch_id = space.arch_id(arch)
        cost = space.cost(arch)
        stage.log.say(f"  target {int(target):,} MACs -> {arch_id}: {cost['macs']:,} MACs "
                      f"({cost['macs'] / target:.2f}x target), {cost['params']:,} params")
        if any(s["student"] == arch_id for s in students):
            stage.log.say("  (same network as an earlier target's: kept once)")
            continue
        students.append({"student": arch_id, "kind": "searched", "arch": arch, "macs": cost["macs"],
                         "params": cost["params"], "target_macs": float(target)})
    return students


def sample_students(cfg, space, taken: set) -> list[dict]:
    out, seed = [], cfg.students.sample_seed
    attempts = 0
    while len(out) < cfg.students.sampled:
        arch = space.sample(seed=seed + attempts)
        attempts += 1
        if attempts > 1000 * max(cfg.students.sampled, 1):
            raise ValueError(f"could not sample {cfg.students.sampled} distinct students from {space.name} "
                             f"({space.size():,} networks); lower students.sampled")
        arch_id = space.arch_id(arch)
        if arch_id in taken:
            continue
        taken.add(arch_id)
        cost = space.cost(arch)
        out.append({"student": arch_id, "kind": "sampled", "arch": arch, "macs": cost["macs"],
                    "params": cost["params"], "target_macs": None})
    return out


def teacher_dir(out: Path, method: str, seed: int) -> Path:
    return out / "teachers" / f"{method}_s{seed}"


def train_teachers(cfg, out: Path, students, stage: Stage) -> dict:
    """Every teacher method once per teacher seed; ``{(method, seed): {"dir", "result"}}``."""
    from ..teachers import TEACHERS, teacher_config_class

    cls = teacher_config_class()
    names = {f.name for f in dataclasses.fields(cls)}
    sections = {name: getattr(cfg.teachers, name) for name in TEACHERS if name in names}
    if "gtn" in sections:
        sections["gtn"] = dataclasses.replace(sections["gtn"], space=cfg.space)
    if "sftn" in sections and cfg.teachers.sftn_student_from_search and students:
        sections["sftn"] = dataclasses.replace(
            sections["sftn"], student=ModelConfig(space=cfg.space, arch=dict(students[0]["arch"])))
    keys, payloads = [], []
    for method in cfg.teachers.methods:
        for seed in cfg.teacher_seeds():
            run_dir = teacher_dir(out, method, seed)
            tcfg = cls(seed=seed, out_dir=str(run_dir), method=method, model=cfg.teachers.model,
                       data=cfg.data, train=cfg.teachers.train, **sections)
            keys.append((method, seed))
            payloads.append(stage.payload("teacher", tcfg, run_dir))
    results = stage.run("teachers", payloads, "teachers")
    teachers = {}
    for (method, seed), p, result in zip(keys, payloads, results):
        teachers[(method, seed)] = {"dir": Path(p["run_dir"]), "result": result}
        stage.log.say(f"  {method} (seed {seed}): test {_pct(result.get('test_acc'))}, "
                      f"{result.get('wall_time_s', 0):.1f}s")
    return teachers


def _pct(x) -> str:
    return f"{x:.2f}%" if isinstance(x, (int, float)) else "n/a"


def distill_students(cfg, out: Path, students, teachers, stage: Stage) -> list[dict]:
    """Every student x teacher x method x seed (+ the baseline); one result row per run."""
    from ..distill import distill_config_class

    cls = distill_config_class()
    names = {f.name for f in dataclasses.fields(cls)}
    sections = {name: getattr(cfg.distill, name) for name in names if hasattr(cfg.distill, name)
                and name not in ("seed", "out_dir", "teacher", "method", "student", "data", "train",
                                 "cache_teacher_logits")}
    metas, payloads = [], []
    methods = sorted({m for m, _ in teachers}, key=cfg.teachers.methods.index)
    for st in students:
        for seed in cfg.distill.seeds:
            tseed = cfg.teacher_seed_for(seed)
            pairs = [(t, m) for t in methods for m in cfg.distill.methods]
            if cfg.distill.baseline:
                pairs.append(("none", "none"))
            for teacher, method in pairs:
                name = "none" if teacher == "none" else f"{teacher}_{method}"
                run_dir = out / "distill" / st["student"] / f"{name}_s{seed}"
                tdir = None if teacher == "none" else teachers[(teacher, tseed)]["dir"]
                dcfg = cls(seed=seed, out_dir=str(run_dir), teacher=None if tdir is None else str(tdir),
                           method=method, student=ModelConfig(space=cfg.space, arch=dict(st["arch"])),
                           data=cfg.data, train=cfg.distill.train,
                           cache_teacher_logits=cfg.distill.cache_teacher_logits and method != "none",
                           **sections)
                metas.append({"student": st, "teacher": teacher, "method": method, "seed": seed,
                              "teacher_seed": None if teacher == "none" else tseed})
                payloads.append(stage.payload("distill", dcfg, run_dir))
    results = stage.run("distill", payloads, "distill")
    rows = []
    for meta, result in zip(metas, results):
        st = meta["student"]
        rows.append({"student": st["student"], "student_kind": st["kind"], "target_macs": st["target_macs"],
                     "macs": st["macs"], "params": st["params"], "teacher": meta["teacher"],
                     "method": meta["method"], "seed": meta["seed"], "teacher_seed": meta["teacher_seed"],
                     "best_acc": result.get("best_acc"), "last_acc": result.get("last_acc"),
                     "test_acc": result.get("test_acc"), "wall_time_s": result.get("wall_time_s")})
    return rows


def teacher_rows(cfg, teachers: dict, splits, device) -> list[dict]:
    from ..analysis import evaluate_teacher_quality
    from ..artifact import load

    rows = []
    for (method, seed), info in teachers.items():
        result = info["result"]
        model = load(info["dir"], device=device)
        quality = evaluate_teacher_quality(model, splits.test, device, mean=splits.mean, std=splits.std)
        row = {"teacher": method, "seed": seed, "model": cfg.teachers.model.name,
               "test_acc": result.get("test_acc"), "best_acc": result.get("best_acc"),
               "wall_time_s": result.get("wall_time_s"), "epochs": result.get("epochs"),
               "ece": quality.get("ece")}
        if "posterior_mse" in quality:
            row["posterior_mse"] = quality["posterior_mse"]
        rows.append(row)
    return rows


def gtn_histories(teachers: dict) -> tuple[list[dict], list[dict], dict]:
    """Per GTN epoch and teacher seed: gate statistics, teacher / branch accuracies; the gate info."""
    entropy, accuracy, info = [], [], None
    for (method, seed), t in sorted(teachers.items(), key=lambda kv: kv[0][1]):
        if method != "gtn":
            continue
        for r in read_metrics(t["dir"]):
            keep = ("phi_entropy", "param_free_mass", "sampled_macs", "pool_macs")
            entropy.append({"epoch": r["epoch"], "teacher_seed": seed,
                            **{k: v for k, v in r.items() if k.startswith(keep)}})
            accuracy.append({"epoch": r["epoch"], "teacher_seed": seed, "teacher_acc": r.get("val_acc"),
                             **{k: v for k, v in r.items() if k.startswith("branch") and k.endswith("_acc")}})
        phi = Path(t["dir"]) / "phi.json"
        if info is None and phi.is_file():
            data = json.loads(phi.read_text())
            data = data[0] if isinstance(data, list) else data
            info = {"labels": data.get("labels_used_by_branches"),
                    "choices": {l: len(p) for l, p in (data.get("probabilities") or {}).items()},
                    "param_free": data.get("param_free") or {},
                    "entropy_floor_frac": data.get("entropy_floor_frac", 0.5),
                    "mass_cap": data.get("mass_cap", 0.6)}
    return entropy, accuracy, info or {}


def export_students(cfg, out: Path, students, rows, splits, log: Progress) -> list[dict]:
    """Export, per student, the first seed's weights of its best teacher/method (by mean test acc)."""
    from ..artifact import load
    from ..export import export_model
    from ..report import describe_source

    exported = []
    seed = cfg.distill.seeds[0]
    for st in students:
        mine = [r for r in rows if r["student"] == st["student"] and r["test_acc"] is not None]
        if not mine:
            continue
        by_pair: dict = {}
        for r in mine:
            by_pair.setdefault((r["teacher"], r["method"]), []).append(r["test_acc"])
        teacher, method = max(by_pair, key=lambda k: sum(by_pair[k]) / len(by_pair[k]))
        name = "none" if teacher == "none" else f"{teacher}_{method}"
        src = out / "distill" / st["student"] / f"{name}_s{seed}"
        target = out / "students" / st["student"]
        digest = RunDirectory(src).finished_result()["weights_sha256"]
        previous = target / "export.json"
        info = json.loads(previous.read_text()) if previous.is_file() else {}
        if info.get("source_weights_sha256") != digest:
            model = load(src)
            x = splits.test.images[:8].float()
            x = (x / 255.0 if splits.test.images.dtype == torch.uint8 else x)
            mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
            std = torch.tensor(splits.std).view(1, -1, 1, 1)
            info = export_model(model, target, record=ModelRecord.read(src), example_input=(x - mean) / std,
                                onnx=cfg.export.onnx, verbose=False,
                                source={"source": str(src.relative_to(out)), "teacher": teacher,
                                        "method": method, "seed": seed, "source_weights_sha256": digest})
        row = {"student": st["student"], "folder": str(target.relative_to(out)), "teacher": teacher,
               "method": method, "seed": seed, "formats": info.get("max_abs_diff", {})}
        exported.append(row)
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in row["formats"].items() if v is not None)
        log.say(f"  {row['folder']}: {describe_source(teacher, method, seed)} (reload max |diff| {diffs})")
    return exported


def describe_task(cfg, splits) -> str:
    """The report's "Task" paragraph: the data, and what makes the comparison meaningful."""
    c, h, w = splits.input_size
    text = (f"Data: `{splits.name}`, {len(splits.train):,} training, {len(splits.val):,} validation and "
            f"{len(splits.test):,} test images of {c}x{h}x{w}, {splits.num_classes} classes.")
    if splits.test.posterior is not None:
        bayes = 100.0 * float((splits.test.posterior.argmax(1) == splits.test.labels).float().mean())
        text += (f" The images are drawn from known class-conditional distributions, so the exact "
                 f"posterior p(y|x) of every image is known: the Bayes-optimal classifier reaches "
                 f"{bayes:.1f}% on the test split. The classes overlap, so a teacher's soft labels can "
                 f"carry what the hard labels do not, and a teacher's distance to p(y|x) (teacher table) "
                 f"measures how much of it a teacher has.")
    if cfg.about:
        text += "\n\n" + cfg.about.strip()
    return text


# ---------------------------------------------------------------------------- the job
def check_job(cfg, out: Path, mode: str) -> tuple[dict, str]:
    """Compare the job with the one that wrote ``out``; return (manifest, stage mode)."""
    identity = job_identity(cfg)
    rd = RunDirectory(out)
    manifest = rd.read_manifest()
    stage_mode = "update" if mode == "restart" else "resume"
    if manifest is not None and mode != "restart":
        diff = identity_diff(manifest.get("identity") or {}, identity)
        if diff:
            raise ConfigMismatch(
                f"{out} holds a main job with another configuration: {describe_diff(diff)}. Rerun with "
                f"those values to reuse it, choose another --out-dir, or add --restart to recompute "
                "the stages these keys change (the others are reused)")
    return {"kind": "pipeline", "fingerprint": fingerprint(identity), "identity": identity}, stage_mode


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
    rd = RunDirectory(out)
    if world.is_main:
        rd.lock()
    try:
        return _run(cfg, out, rd, mode, world, verbose)
    finally:
        rd.unlock()


def _run(cfg, out: Path, rd: RunDirectory, mode: str, world, verbose: bool) -> dict:
    from ..engine.threads import use_threads
    from ..report import write_report
    from ..space import load_space

    manifest, stage_mode = check_job(cfg, out, mode)
    if world.is_main:
        rd.write_manifest(manifest)
        save_yaml(cfg, out / "config.yaml")
    use_threads(cfg.threads)
    log = Progress(verbose and world.is_main)
    device = distributed.resolve_device(cfg.teachers.train.device, world.local_rank)
    t_start = time.perf_counter()
    times: dict = {}
    splits = cfg.data.load()
    space = load_space(cfg.space, splits.num_classes, splits.input_size)
    log.say(f"nasdistill run: data {cfg.data.name} ({len(splits.train)} train images), space {space.name} "
            f"({space.size():,} architectures) -> {out}")
    previous_path = out / "stage_times.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    stage = Stage(cfg, stage_mode, log)

    def timed(name: str, fn):
        t0, ran = time.perf_counter(), stage.ran
        value = fn()
        # a stage reused from an earlier invocation keeps the time it took then
        reused = stage.ran == ran and name in previous
        times[name] = previous[name] if reused else time.perf_counter() - t0
        if world.is_main:
            write_json(previous_path, {**previous, **times})
        return value

    students = timed("search", lambda: search_students(cfg, out, space, stage))
    students += sample_students(cfg, space, {s["student"] for s in students})
    if world.is_main:
        write_json(out / "students.json", students)
    teachers = timed("teachers", lambda: train_teachers(cfg, out, students, stage))
    rows = timed("distill", lambda: distill_students(cfg, out, students, teachers, stage))
    if not world.is_main:  # rank 0 evaluates, reports and exports
        return {"out_dir": str(out), "rank": world.rank}

    t0 = time.perf_counter()
    exported = []
    if cfg.export.enabled:
        log.say("export:")
        exported = export_students(cfg, out, students, rows, splits, log)
    times["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trows = teacher_rows(cfg, teachers, splits, device)
    entropy, branch_acc, gate_info = gtn_histories(teachers)
    report = write_report(out, rows, trows, students, times, entropy, config_summary=to_dict(cfg),
                          branch_history=branch_acc, gate_info=gate_info or None,
                          exports=exported if cfg.export.enabled else None,
                          about=describe_task(cfg, splits))
    times["report"] = time.perf_counter() - t0
    write_json(previous_path, {**previous, **times})
    log.say(f"report: {report}")
    times["total"] = time.perf_counter() - t_start
    summary = {"out_dir": str(out), "students": students, "teachers": trows, "stage_times_s": times,
               "report": str(report), "exported": {e["student"]: str(out / e["folder"]) for e in exported}}
    write_json(out / "summary.json", summary)
    log.say(f"done in {times['total']:.0f}s: {report}")
    return summary
