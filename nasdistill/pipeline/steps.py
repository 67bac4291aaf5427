"""The steps of the main job: find the students, train the teachers, distill, and gather what the
report and the exports need."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import torch

from ..models.config import ModelConfig
from ..engine.rundir import read_metrics
from ..registry import config_sections
from .export_run import ExportConfig
from .stage import Pending, Progress, Stage


def search_students(cfg, out: Path, space, stage: Stage) -> list[dict]:
    """The searched students. By default one search run, ``search/shared/``, trains one supernet for
    every MACs target and writes each target's student into ``search/shared/target_<T>/``;
    ``search.search.shared=false`` runs one search per target (``search/target_<T>/``)."""
    return start_search(cfg, out, space, stage).wait()


def search_configs(cfg, out: Path) -> list:
    """``[(SearchConfig, run folder)]``: the shared search of every target (``search/shared``), or
    one search per target (``search.search.shared=false``); none without targets."""
    from ..search import SearchConfig, target_folder

    targets = [float(t) for t in cfg.search.targets]
    section = dataclasses.replace(cfg.search.search, space=cfg.space, cost_metric="macs", target=None,
                                  targets=None)
    if not targets:
        return []
    if section.shared:
        run_dir = out / "search" / "shared"
        return [(SearchConfig(seed=cfg.seed, out_dir=str(run_dir), data=cfg.data, train=cfg.search.train,
                              search=dataclasses.replace(section, targets=targets)), run_dir)]
    return [(SearchConfig(seed=cfg.seed, out_dir=str(out / "search" / target_folder(t)), data=cfg.data,
                          train=cfg.search.train, search=dataclasses.replace(section, target=t)),
             out / "search" / target_folder(t)) for t in targets]


def start_search(cfg, out: Path, space, stage: Stage) -> Pending:
    """:func:`search_students`, queued on the stage; ``.wait()`` returns the students."""
    from ..search.students import describe, read_students

    configs = search_configs(cfg, out)
    pending = stage.start("search", [stage.spec("search", scfg, run_dir) for scfg, run_dir in configs])
    if cfg.search.search.shared and configs:
        run_dir = configs[0][1]

        def entries() -> list[dict]:
            [result] = pending.wait()
            return read_students(run_dir, result)
    else:
        entries = pending.wait

    def students() -> list[dict]:
        out_students = []
        for entry in entries():
            arch = entry["arch"]
            arch_id = space.arch_id(arch)
            cost = space.cost(arch)
            stage.log.say(f"  {describe(entry)}, {cost['params']:,} params")
            if any(s["student"] == arch_id for s in out_students):
                stage.log.say("  (same network as an earlier target's: kept once)")
                continue
            out_students.append({"student": arch_id, "kind": "searched", "arch": arch, "macs": cost["macs"],
                                 "params": cost["params"], "target_macs": float(entry["target"]),
                                 "band": entry.get("band"), "convergence": entry.get("convergence")})
        return out_students
    return Pending(students)


def random_students(cfg, space, searched: list[dict]) -> list[dict]:
    """``students.random_per_target`` networks per searched student, drawn uniformly from the
    distinct networks whose MACs lie in its target's band (:func:`nasdistill.space.band.band_networks`),
    none of them a searched student or an earlier draw; fewer when the band holds fewer (said)."""
    from ..space.band import band_networks

    n = cfg.students.random_per_target
    if n <= 0:
        return []
    out: list[dict] = []
    taken = [dict(s["arch"]) for s in searched]
    for k, st in enumerate(searched):
        target = float(st["target_macs"])
        tol = cfg.search.search.tolerance
        lo, hi = st.get("band") or (target * (1 - tol), target * (1 + tol))
        band = band_networks(space, lo, hi, "macs")
        free = band.networks - sum(1 for a in taken if lo <= space.cost(a)["macs"] <= hi)
        if free < n:
            print(f"  the MACs band {lo:,.0f} .. {hi:,.0f} of target {target:,.0f} holds {band.networks} "
                  f"network(s), {free} not yet taken: {free} random student(s) instead of {n}", flush=True)
        for arch in band.sample(min(n, free), seed=cfg.students.sample_seed + 1_000_003 * (k + 1), exclude=taken):
            taken.append(arch)
            cost = space.cost(arch)
            out.append({"student": space.arch_id(arch), "kind": "random", "arch": arch, "macs": cost["macs"],
                        "params": cost["params"], "target_macs": target, "band": [lo, hi],
                        "band_networks": band.networks})
    return out


def sample_students(cfg, space, taken: list[dict], say=print) -> list[dict]:
    """``students.sampled`` distinct networks drawn with :meth:`~nasdistill.space.SearchSpace.sample`
    (seeds ``students.sample_seed``, +1, ...), none of them one of the architectures ``taken``. When
    that keeps drawing networks already taken (a count close to the space's size; the job's checks
    refused one above it), the rest are drawn uniformly from the networks not taken yet."""
    n = cfg.students.sampled
    ids = {space.arch_id(a) for a in taken}
    archs, attempts = [], 0
    while len(archs) < n and attempts < 20 * n + 1000:
        arch = space.sample(seed=cfg.students.sample_seed + attempts)
        attempts += 1
        arch_id = space.arch_id(arch)
        if arch_id not in ids:
            ids.add(arch_id)
            archs.append(arch)
    if len(archs) < n:
        from ..space.band import band_networks

        bounds = space.cost_range()
        rest = band_networks(space, bounds["macs_min"], bounds["macs_max"], "macs")
        say(f"  {len(archs)} of {n} sampled students drawn; the other {n - len(archs)} uniformly from the "
            "networks not taken yet")
        archs += rest.sample(n - len(archs), seed=cfg.students.sample_seed, exclude=[*taken, *archs])
    out = []
    for arch in archs:
        cost = space.cost(arch)
        out.append({"student": space.arch_id(arch), "kind": "sampled", "arch": arch, "macs": cost["macs"],
                    "params": cost["params"], "target_macs": None})
    return out


def teacher_dir(out: Path, method: str, seed: int) -> Path:
    return out / "teachers" / f"{method}_s{seed}"


def distill_dir(out: Path, student: str, teacher: str, method: str, seed: int) -> Path:
    """``distill/<student>/<teacher>_<method>_s<seed>`` (``none_s<seed>`` for the baseline)."""
    name = "none" if teacher == "none" else f"{teacher}_{method}"
    return out / "distill" / student / f"{name}_s{seed}"


def teachers_need_students(cfg) -> bool:
    """Whether a teacher of the job is built from a searched student (metadata ``needs_student``,
    e.g. SFTN, with ``teachers.student_from_search``): the others can train while the search runs."""
    from ..teachers import TEACHERS

    return cfg.teachers.student_from_search and any(TEACHERS.meta(m, "needs_student") for m in cfg.teachers.methods)


def train_teachers(cfg, out: Path, students, stage: Stage) -> dict:
    """Every teacher method once per teacher seed; ``{(method, seed): {"dir", "result"}}``.

    With ``teachers.init_from_ce`` the CE teachers train first, then the GTN / SFTN teachers of
    seed s start from the CE teacher of seed s (``<method>.init_from``).
    """
    return start_teachers(cfg, out, students, stage).wait()


def teacher_configs(cfg, out: Path, students) -> list:
    """``[((method, seed), teacher config, run folder, warm-started)]``: every teacher method once
    per teacher seed, as its metadata says (:func:`start_teachers`)."""
    from ..config import ConfigError
    from ..teachers import TEACHERS, reference_teacher, teacher_config_class

    warm_started = TEACHERS.having("warm_startable")
    reference = reference_teacher()
    cls = teacher_config_class()
    sections = {name: getattr(cfg.teachers, name) for name, _ in config_sections(TEACHERS)}
    for name in sections:
        if TEACHERS.meta(name, "uses_space"):
            sections[name] = dataclasses.replace(sections[name], space=cfg.space)
        if TEACHERS.meta(name, "needs_student") and cfg.teachers.student_from_search and students:
            sections[name] = dataclasses.replace(
                sections[name], student=ModelConfig(space=cfg.space, arch=dict(students[0]["arch"])))
    warm = cfg.teachers.init_from_ce
    if warm:
        for m in warm_started:
            if m in cfg.teachers.methods and getattr(sections.get(m), "init_from", None):
                raise ConfigError(f"config keys 'teachers.init_from_ce' and 'teachers.{m}.init_from' both "
                                  "say where the teacher starts: set only one", "teachers.init_from_ce")
    runs = []
    for method in cfg.teachers.methods:
        for seed in cfg.teacher_seeds():
            run_dir = teacher_dir(out, method, seed)
            own = dict(sections)
            if warm and method in warm_started:
                own[method] = dataclasses.replace(sections[method],
                                                  init_from=str(teacher_dir(out, reference, seed)))
            tcfg = cls(seed=seed, out_dir=str(run_dir), method=method, model=cfg.teachers.model,
                       data=cfg.data, train=cfg.teachers.train, **own)
            runs.append(((method, seed), tcfg, run_dir, warm and method in warm_started))
    return runs


def start_teachers(cfg, out: Path, students, stage: Stage) -> Pending:
    """:func:`train_teachers`, queued: the first wave of runs is handed to the stage now, the
    second (teachers started from the reference ones) when ``.wait()`` has the first. What each
    teacher needs comes from its metadata (:mod:`nasdistill.teachers.registry`): ``uses_space``
    gets the job's space, ``needs_student`` the first searched student, ``warm_startable`` starts
    from the reference teacher with ``teachers.init_from_ce``."""
    from ..teachers import TEACHERS

    warm_started = TEACHERS.having("warm_startable")
    runs = teacher_configs(cfg, out, students)
    keys = [key for key, _, _, _ in runs]
    payloads = [stage.spec("teacher", tcfg, run_dir) for _, tcfg, run_dir, _ in runs]
    later = [warm for _, _, _, warm in runs]
    # the CE teachers (and every teacher that starts from nothing) first, then those started from
    # them; within each wave the branch-trained teachers (several times a CE teacher's time) start
    # first, so that the short runs fill the workers' gaps at the end instead of the long ones
    waves = []
    for wave in (False, True):
        index = [i for i, w in enumerate(later) if w == wave]
        index.sort(key=lambda i: keys[i][0] not in warm_started)  # stable: seeds keep their order
        if index:
            waves.append(index)
    first = stage.start("teachers", [payloads[i] for i in waves[0]]) if waves else None

    def wait() -> dict:
        results: list = [None] * len(payloads)
        for n, index in enumerate(waves):
            pending = first if n == 0 else stage.start("teachers", [payloads[i] for i in index])
            for i, result in zip(index, pending.wait()):
                results[i] = result
        teachers = {}
        for (method, seed), p, result in zip(keys, payloads, results):
            teachers[(method, seed)] = {"dir": Path(p.run_dir), "result": result}
            extra = result.get("init_from_wall_time_s")
            stage.log.say(f"  {method} (seed {seed}): test {_pct(result.get('test_acc'))}, "
                          f"{result.get('wall_time_s', 0):.1f}s"
                          + (f" (+{extra:.1f}s of the teacher it started from)" if extra else ""))
        return teachers
    return Pending(wait)


def _pct(x) -> str:
    return f"{x:.2f}%" if isinstance(x, (int, float)) else "n/a"


def distill_config(cfg, run_dir: Path, arch, teacher_dir_, method: str, seed: int, augmented: bool):
    """The configuration of one distillation of the job: the student ``arch`` of the job's space,
    from the teacher run ``teacher_dir_`` (None: the student alone, ``method`` ``none``)."""
    from ..distill import DISTILLERS, distill_config_class

    sections = {name: getattr(cfg.distill, name) for name, _ in config_sections(DISTILLERS)
                if hasattr(cfg.distill, name)}
    return distill_config_class()(
        seed=seed, out_dir=str(run_dir), teacher=None if teacher_dir_ is None else str(teacher_dir_),
        method=method, student=ModelConfig(space=cfg.space, arch=dict(arch)), data=cfg.data,
        train=cfg.distill.train, cache_teacher_logits=cfg.distill.caches_logits(method, augmented),
        calibrate_teacher=cfg.teachers.calibrate and teacher_dir_ is not None, **sections)


def distill_students(cfg, out: Path, students, teachers, stage: Stage,
                     augmented: bool = False) -> tuple[list[dict], list[dict]]:
    """Every student x teacher x method x seed (+ the baseline); ``(rows, results)``: one result row
    per run (the columns of results.csv) and, beside it, that run's ``result.json``."""
    metas, payloads = [], []
    methods = sorted({m for m, _ in teachers}, key=cfg.teachers.methods.index)
    for st in students:
        for seed in cfg.distill.seeds:
            tseed = cfg.teacher_seed_for(seed)
            pairs = [(t, m) for t in methods for m in cfg.distill.methods]
            if cfg.distill.baseline:
                pairs.append(("none", "none"))
            for teacher, method in pairs:
                run_dir = distill_dir(out, st["student"], teacher, method, seed)
                tdir = None if teacher == "none" else teachers[(teacher, tseed)]["dir"]
                dcfg = distill_config(cfg, run_dir, st["arch"], tdir, method, seed, augmented)
                metas.append({"student": st, "teacher": teacher, "method": method, "seed": seed,
                              "teacher_seed": None if teacher == "none" else tseed})
                payloads.append(stage.spec("distill", dcfg, run_dir))
    results = stage.run("distill", payloads)
    rows = []
    for meta, result in zip(metas, results):
        st = meta["student"]
        rows.append({"student": st["student"], "student_kind": st["kind"], "target_macs": st["target_macs"],
                     "macs": st["macs"], "params": st["params"], "teacher": meta["teacher"],
                     "method": meta["method"], "seed": meta["seed"], "teacher_seed": meta["teacher_seed"],
                     "best_acc": result.get("best_acc"), "last_acc": result.get("last_acc"),
                     "test_acc": result.get("test_acc"), "wall_time_s": result.get("wall_time_s")})
    return rows, results


def teacher_rows(cfg, teachers: dict, splits, device) -> list[dict]:
    from ..analysis import evaluate_teacher_quality, fit_temperature, predict
    from ..network import load

    rows = []
    held_out = len(splits.val) > 0 and splits.val is not splits.test
    for (method, seed), info in teachers.items():
        result = info["result"]
        model = load(info["dir"], device=device)
        quality = evaluate_teacher_quality(model, splits.test, device, mean=splits.mean, std=splits.std)
        temperature = None
        if held_out:  # T_cal on the validation split, as calibrated distillation fits it
            val = predict(model, splits.val, device, mean=splits.mean, std=splits.std)
            temperature = fit_temperature(val["logits"], val["labels"])
        # a teacher started from another run (init_from) costs that run's epochs too
        init_s = result.get("init_from_wall_time_s")
        wall = result.get("wall_time_s")
        row = {"teacher": method, "seed": seed, "model": cfg.teachers.model.name,
               "test_acc": result.get("test_acc"), "best_acc": result.get("best_acc"),
               "wall_time_s": wall, "init_wall_time_s": init_s,
               "total_wall_time_s": None if wall is None else wall + (init_s or 0.0),
               "epochs": result.get("epochs"), "ece": quality.get("ece"), "temperature": temperature,
               "instability": result.get("instability") or []}
        if "posterior_mse" in quality:
            row["posterior_mse"] = quality["posterior_mse"]
        rows.append(row)
    return rows


def teacher_histories(teachers: dict) -> tuple[list[dict], list[dict], dict]:
    """What the teacher runs logged per epoch, as their metadata (``histories``) says: per epoch and
    seed of every teacher with ``"branches"``, teacher and branch accuracies, entropies and logit
    spread (:func:`nasdistill.report.branch_rows`); of every teacher with ``"gates"``, its gate
    statistics, and the gate information its ``phi.json`` gives. Returns ``(gate rows, branch
    rows, gate info)``."""
    from ..report import branch_rows
    from ..teachers import TEACHERS

    entropy, branches, info = [], [], None
    for (method, seed), t in sorted(teachers.items(), key=lambda kv: kv[0][1]):
        histories = TEACHERS.meta(method, "histories", ())
        if not histories:
            continue
        metrics = read_metrics(t["dir"])
        if "branches" in histories:
            branches += branch_rows(metrics, method, seed)
        if "gates" not in histories:
            continue
        for r in metrics:
            keep = ("phi_entropy", "param_free_mass", "sampled_macs", "pool_macs")
            entropy.append({"epoch": r["epoch"], "teacher": method, "teacher_seed": seed,
                            **{k: v for k, v in r.items() if k.startswith(keep)}})
        phi = Path(t["dir"]) / "phi.json"
        if info is None and phi.is_file():
            data = json.loads(phi.read_text())
            data = data[0] if isinstance(data, list) else data
            info = {"labels": data.get("labels_used_by_branches"),
                    "choices": {l: len(p) for l, p in (data.get("probabilities") or {}).items()},
                    "param_free": data.get("param_free") or {},
                    # missing thresholds: the report's defaults (report.gates.DEFAULT_*)
                    "entropy_floor_frac": data.get("entropy_floor_frac"),
                    "mass_cap": data.get("mass_cap")}
    return entropy, branches, info or {}


def export_students(cfg, out: Path, students, rows, results, splits, log: Progress,
                    stage: Optional[Stage] = None) -> list[dict]:
    """Export, per student, the first seed's weights of its best teacher/method (by mean test acc).

    ``results``: each row's run result (``result.json``), in the order of ``rows``. Each export is
    a run of kind ``export`` (:mod:`.export_run`) submitted to the stage like every other run (without
    a stage, run here): its own lifecycle keeps an export folder that holds these weights already."""
    stage = stage if stage is not None else Stage(cfg, "resume", log, root=out)
    from ..report import describe_source

    seed = cfg.distill.seeds[0]
    run_results = {(r["student"], r["teacher"], r["method"], r["seed"]): result
                   for r, result in zip(rows, results)}
    x = splits.test.images[:8].float()
    x = (x / 255.0 if splits.test.images.dtype == torch.uint8 else x)
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    example = ((x - mean) / std).tolist()
    chosen, specs = [], []
    for st in students:
        mine = [r for r in rows if r["student"] == st["student"] and r["test_acc"] is not None]
        if not mine:
            continue
        by_pair: dict = {}
        for r in mine:
            by_pair.setdefault((r["teacher"], r["method"]), []).append(r["test_acc"])
        teacher, method = max(by_pair, key=lambda k: sum(by_pair[k]) / len(by_pair[k]))
        src = distill_dir(out, st["student"], teacher, method, seed)
        target = out / "students" / st["student"]
        digest = run_results[(st["student"], teacher, method, seed)]["weights_sha256"]
        xcfg = ExportConfig(source=str(src), onnx=cfg.export.onnx, example_input=example,
                            provenance={"source": str(src.relative_to(out)), "teacher": teacher, "method": method,
                                        "seed": seed, "source_weights_sha256": digest})
        chosen.append((st, target, teacher, method))
        specs.append(stage.spec("export", xcfg, target))
    exported = []
    for (st, target, teacher, method), info in zip(chosen, stage.run("export", specs) if specs else []):
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
