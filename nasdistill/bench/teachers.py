"""Cost of the teacher-training methods: the same teacher, data and steps with ce, sftn and gtn.

Each round trains one epoch of every method in turn (interleaved, so machine noise hits all three
alike) with the engine's step: ``task.training_step``, backward, the optimizer the step names.
Reported: the median epoch time per method and the ratios to CE; for GTN also the time of its
weight iterations and of its phi iterations, to show where the time goes. With ``--json`` the last
line has ``gtn_over_ce`` and ``sftn_over_ce``.

``--main-job`` times what the main job's teacher table reports instead: whole epochs of the
engine's trainer (steps, evaluation, the method's epoch metrics, the checkpoint: the
``wall_time_s`` of a teacher run) with the main job's teacher settings (``nasdistill run``'s
defaults: resnet8 on digits, batch 64, lr 0.1 cosine, 30 epochs, ``gtn.phi_lr`` 0.02, one
thread), CE and GTN epochs interleaved, and prints the GTN / CE ratio of the summed epoch times
with where GTN's time goes. ``key=value`` overrides of the main job's config apply
(``teachers.train.epochs=5``, ``teachers.gtn.mode=full``).
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from ..registry import register

HELP = "epoch-time ratios of SFTN and GTN teacher training to plain CE"


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="digits", help="digits (default) or synthetic")
    parser.add_argument("--size", type=int, default=8, help="synthetic: image size (e.g. 32)")
    parser.add_argument("--channels", type=int, default=1, help="synthetic: channels (e.g. 3)")
    parser.add_argument("--teacher", default="resnet8", help="zoo teacher (default resnet8)")
    parser.add_argument("--space", default=None, help="GTN space (default: digits_small / gtn_cifar)")
    parser.add_argument("--sftn-student", default=None,
                        help="SFTN student: a zoo name (default: an architecture sampled from the space)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default: full epoch)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gtn-mode", default="two", choices=["two", "full"])
    parser.add_argument("--gtn-branches-per-step", type=int, default=None,
                        help="GTN: random branches per iteration (default: all three)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--main-job", action="store_true",
                        help="time whole trainer epochs of the main job's teacher settings (CE vs GTN)")
    parser.add_argument("--methods", default="ce,gtn", help="--main-job: methods, CE first (default ce,gtn)")
    parser.add_argument("overrides", nargs="*", default=[],
                        help="--main-job: key=value overrides of the main job's config")


def build_tasks(args, splits, device):
    from ..models.config import ModelConfig
    from ..models import create_model
    from ..network.record import ModelRecord
    from ..space import load_space
    from ..teachers.ce import CETask
    from ..teachers.gtn import GTNConfig, GTNTask, build_gtn
    from ..teachers.sftn import SFTNConfig, SFTNTask, graft_student

    name = args.space or ("gtn_cifar" if splits.input_size[1] >= 32 else "digits_small")
    space = load_space(name, splits.num_classes, splits.input_size)

    def teacher():
        torch.manual_seed(0)
        return create_model(args.teacher, num_classes=splits.num_classes, in_channels=splits.input_size[0])

    ce = CETask(teacher())
    if args.sftn_student:
        student = ModelRecord.from_config(ModelConfig(name=args.sftn_student), splits.num_classes,
                                          splits.input_size).build()
    else:
        student = space.build(space.sample(seed=0))
    sftn_cfg = SFTNConfig()
    sftn = SFTNTask(graft_student(teacher(), student, splits.input_size, sftn_cfg.blocks), sftn_cfg)
    gtn_cfg = GTNConfig(mode=args.gtn_mode, branches_per_step=args.gtn_branches_per_step)
    branched, gates = build_gtn(teacher(), space, splits.input_size, gtn_cfg)
    gtn = GTNTask(branched, gates, gtn_cfg)
    tasks = {"ce": ce, "sftn": sftn, "gtn": gtn}
    optimizers = {}
    for k, task in tasks.items():
        task.to(device)
        opts = {"main": torch.optim.SGD(task.main_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)}
        opts.update(task.extra_optimizers())
        optimizers[k] = opts
    return tasks, optimizers, space


def run_epoch(task, opts, loader, epoch: int, steps, device, split_times: dict) -> float:
    from ..engine.task import StepContext
    from ..engine.trainer import apply_step

    loader.set_epoch(epoch)
    task.model.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t_epoch = time.perf_counter()
    for i, batch in enumerate(loader):
        if steps is not None and i >= steps:
            break
        t0 = time.perf_counter()
        ctx = StepContext(epoch, i, i, device)
        out = task.training_step(batch, ctx)
        apply_step(task, opts, out, ctx)
        sync()
        split_times[out.optimizer] = split_times.get(out.optimizer, 0.0) + time.perf_counter() - t0
    return time.perf_counter() - t_epoch


def flops_per_step(task, opts, loader, device, steps: int = 4) -> float:
    """Mean FLOPs (forward + backward, ``torch.utils.flop_counter``) of one training step."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_epoch(task, opts, loader, 99, steps, device, {})
    return counter.get_total_flops() / steps


def run(args) -> int:
    from ..data import DeviceLoader, load_dataset
    from ..engine import distributed

    if args.main_job:
        return run_main_job(args)
    if args.overrides:
        raise ValueError(f"key=value overrides ({' '.join(args.overrides)}) apply only with --main-job")
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = {"size": args.size, "channels": args.channels} if args.dataset == "synthetic" else {}
    splits = load_dataset(args.dataset, **opts)
    device = distributed.resolve_device(args.device, 0)
    loader = DeviceLoader(splits.train, args.batch_size, shuffle=True, augment=splits.augment,
                          mean=splits.mean, std=splits.std, device=device, seed=0, drop_last=True)
    tasks, optimizers, space = build_tasks(args, splits, device)
    times = {k: [] for k in tasks}
    split_times = {k: {} for k in tasks}
    for k in tasks:  # warm-up epoch, not timed
        run_epoch(tasks[k], optimizers[k], loader, 0, 2, device, {})
    for r in range(args.rounds):
        for k in tasks:
            times[k].append(run_epoch(tasks[k], optimizers[k], loader, r + 1, args.steps, device,
                                      split_times[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = {k: flops_per_step(tasks[k], optimizers[k], loader, device) for k in tasks}
    params = {k: sum(p.numel() for p in t.model.parameters()) for k, t in tasks.items()}
    print(f"teacher {args.teacher} on {args.dataset} {tuple(splits.input_size)}, space {space.name}, "
          f"batch {args.batch_size}, {len(loader) if args.steps is None else args.steps} steps/epoch, "
          f"{args.rounds} interleaved rounds, device {device}")
    print(f"{'method':8} {'epoch s (median)':>17} {'x CE':>6} {'GFLOP/step':>11} {'x CE':>6} "
          f"{'params trained':>15}")
    for k in tasks:
        print(f"{k:8} {med[k]:>17.3f} {med[k] / med['ce']:>6.2f} {flops[k] / 1e9:>11.4f} "
              f"{flops[k] / flops['ce']:>6.2f} {params[k]:>15,}")
    print("time ratio close to the FLOP ratio: the extra time is the branches' arithmetic; "
          "time ratio above it: per-step overhead")
    g = split_times["gtn"]
    total = sum(g.values()) or 1.0
    print(f"gtn time split: weight iterations {g.get('main', 0) / total:.0%}, "
          f"phi iterations {g.get('phi', 0) / total:.0%} (phi every {tasks['gtn'].cfg.phi_every} "
          f"iterations, mode {tasks['gtn'].cfg.mode})")
    result = {"ce_epoch_s": round(med["ce"], 4), "sftn_epoch_s": round(med["sftn"], 4),
              "gtn_epoch_s": round(med["gtn"], 4), "sftn_over_ce": round(med["sftn"] / med["ce"], 3),
              "gtn_over_ce": round(med["gtn"] / med["ce"], 3),
              "sftn_flops_over_ce": round(flops["sftn"] / flops["ce"], 3),
              "gtn_flops_over_ce": round(flops["gtn"] / flops["ce"], 3)}
    if args.json:
        print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------- --main-job
class _Clock:
    """Seconds spent in wrapped callables, by name."""

    def __init__(self):
        self.spent: dict = {}

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0
        return timed


def _split_steps(tr, clock: _Clock):
    """``tr._step_tensors`` timed as "steps", and for a task with phi iterations also split into
    "weight steps" and "phi steps"."""
    step = tr._step_tensors
    is_phi = getattr(tr.task, "is_phi_step", None)
    timed = {False: clock.wrap("weight steps", step), True: clock.wrap("phi steps", step)}

    def run(batch):
        t0 = time.perf_counter()
        try:
            if is_phi is None:
                return step(batch)
            return timed[bool(is_phi(tr._ctx.step))](batch)
        finally:
            clock.spent["steps"] = clock.spent.get("steps", 0.0) + time.perf_counter() - t0
    return run


def main_job_trainers(pcfg, methods, root, device):
    """``{method: (trainer, log)}``: the main job's teacher of seed 0 per method, as its stage
    would build it (sections as :func:`~nasdistill.pipeline.steps.train_teachers` sets them)."""
    import dataclasses

    from ..engine.distributed import world as current_world
    from ..engine.checkpoint import seed_everything
    from ..engine.rundir import MetricsLog
    from ..engine.run import RunFolder, default_loaders
    from ..engine.trainer import Trainer
    from ..registry import config_sections
    from ..teachers import TEACHERS, teacher_config_class
    from ..teachers.runner import TEACHER_RUN

    cls = teacher_config_class()
    sections = {name: getattr(pcfg.teachers, name) for name, _ in config_sections(TEACHERS)}
    sections["gtn"] = dataclasses.replace(sections["gtn"], space=pcfg.space)
    world = current_world()
    splits = pcfg.data.load()
    out = {}
    for m in methods:
        cfg = cls(seed=0, out_dir=str(root / m), method=m, model=pcfg.teachers.model, data=pcfg.data,
                  train=pcfg.teachers.train, **sections)
        seed_everything(cfg.seed)
        loaders = default_loaders(cfg, splits, device, world)
        task = TEACHER_RUN.build(cfg, splits, loaders, device, world)
        trainer = Trainer(cfg.train, task, loaders.train, loaders.val, folder=RunFolder.at(root / m),
                          seed=cfg.seed, device=device, verbose=False)
        out[m] = (trainer, MetricsLog(root / m, 0, tensorboard=False))
    return out


def run_main_job(args) -> int:
    """Whole epochs of the main job's CE and GTN teachers, interleaved (module docstring)."""
    import tempfile
    from pathlib import Path

    from ..engine import distributed, trainer as trainer_module
    from ..config import load_config
    from ..pipeline.config import PipelineConfig

    pcfg = load_config(PipelineConfig, None, list(args.overrides))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods[:1] != ["ce"]:
        raise ValueError(f"--methods must start with ce (the reference of the ratio), got {args.methods!r}")
    torch.set_num_threads(args.threads or pcfg.threads or 1)
    device = distributed.resolve_device(args.device, 0)
    epochs = pcfg.teachers.train.epochs
    clocks = {m: _Clock() for m in methods}
    saved = trainer_module.save_checkpoint, trainer_module.evaluate
    with tempfile.TemporaryDirectory(prefix="nasdistill-bench-") as tmp:
        trainers = main_job_trainers(pcfg, methods, Path(tmp), device)
        for m, (tr, _) in trainers.items():
            tr.task.epoch_metrics = clocks[m].wrap("epoch_metrics", tr.task.epoch_metrics)
            tr._step_tensors = _split_steps(tr, clocks[m])
        times = {m: [] for m in methods}
        try:
            for epoch in range(epochs):
                for m in methods:  # interleaved: machine noise hits every method alike
                    tr, log = trainers[m]
                    trainer_module.save_checkpoint = clocks[m].wrap("checkpoint", saved[0])
                    trainer_module.evaluate = clocks[m].wrap("evaluation", saved[1])
                    times[m].append(tr.run_epoch(epoch, log)["epoch_time_s"])
        finally:
            trainer_module.save_checkpoint, trainer_module.evaluate = saved
            for _, log in trainers.values():
                log.close()
    total = {m: sum(v) for m, v in times.items()}
    print(f"main job's teachers ({pcfg.teachers.model.name} on {pcfg.data.name}, batch "
          f"{pcfg.teachers.train.batch_size}, lr {pcfg.teachers.train.lr:g} {pcfg.teachers.train.schedule}, "
          f"gtn.phi_lr {pcfg.teachers.gtn.phi_lr:g}, gtn.mode {pcfg.teachers.gtn.mode}, "
          f"{torch.get_num_threads()} thread(s)), {epochs} epochs interleaved, device {device}")
    print(f"{'method':8} {'wall s (sum of epochs)':>23} {'x CE':>6} {'steps s':>8} {'eval s':>7} "
          f"{'epoch metrics s':>16} {'checkpoint s':>13}")
    for m in methods:
        c = clocks[m].spent
        print(f"{m:8} {total[m]:>23.2f} {total[m] / total['ce']:>6.2f} {c.get('steps', 0):>8.2f} "
              f"{c.get('evaluation', 0):>7.2f} {c.get('epoch_metrics', 0):>16.2f} {c.get('checkpoint', 0):>13.2f}")
    for m in methods:
        c = clocks[m].spent
        if "phi steps" in c:
            print(f"{m} steps: weight iterations {c['weight steps']:.2f} s, phi iterations "
                  f"{c['phi steps']:.2f} s")
    result = {f"{m}_wall_s": round(total[m], 3) for m in methods}
    result.update({f"{m}_over_ce": round(total[m] / total["ce"], 3) for m in methods if m != "ce"})
    if "gtn" in trainers:
        teacher_macs, branch_macs = branch_arithmetic(trainers["gtn"][0].task)
        ratio = branch_macs / teacher_macs
        result.update({"teacher_macs": teacher_macs, "branch_macs": branch_macs})
        print(f"gtn arithmetic per image: the teacher {teacher_macs:,.0f} MACs, its {len(trainers['gtn'][0].task.branched.branches)} "
              f"branches on sampled paths {branch_macs:,.0f} on average ({ratio:.2f}x the teacher). A weight "
              f"step runs teacher and branches forward and backward: {1 + ratio:.2f}x a CE step's arithmetic; "
              f"with one weight step in every {pcfg.teachers.gtn.phi_every} iterations, the weight steps alone are "
              f"{(1 + ratio) / pcfg.teachers.gtn.phi_every:.2f}x a CE epoch, before the phi steps and the branch "
              "evaluation")
    if args.json:
        print(json.dumps(result))
    return 0


@torch.no_grad()
def branch_arithmetic(task, samples: int = 20) -> tuple[float, float]:
    """``(teacher MACs, branch MACs)`` per image of a GTN task: the multiply-accumulates of one
    forward (``torch.utils.flop_counter`` FLOPs / 2, as the spaces count MACs; convolutions and
    matrix products), the branches' averaged over ``samples`` paths sampled from the gates (call
    after the timing: it draws from the gates' generator)."""
    from torch.utils.flop_counter import FlopCounterMode

    branched = task.branched
    was = branched.training
    branched.eval()
    x = torch.randn(1, *task.gates[0].space.input_size)  # the space is adapted to the data
    teacher = branches = 0.0
    try:
        for _ in range(samples):
            for g in task.gates:
                g.sample()
            with FlopCounterMode(display=False) as count:
                feats, _ = branched.teacher_features(x)
            teacher += count.get_total_flops() / 2
            with FlopCounterMode(display=False) as count:
                for i, branch in enumerate(branched.branches):
                    branch(feats[i])
            branches += count.get_total_flops() / 2
    finally:
        branched.train(was)
    return teacher / samples, branches / samples


register("bench", "teachers", run, help=HELP, arguments=add_arguments, doc=__doc__)
