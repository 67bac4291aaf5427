"""The one training loop shared by teachers, search and distillation.

Per step (:meth:`Trainer._step_tensors`): ``out = task.training_step(batch, ctx)`` under the run's
autocast; the loss and logs go into the on-device :class:`~.meter.EpochMeter`, a non-finite loss
into the :class:`~.meter.NonFiniteGuard` (read every ``train.check_every`` steps: no per-step host
sync); then zero_grad, backward, gradient averaging across ranks (DDP for ``ddp_safe`` tasks, one
flat all-reduce otherwise), the step of the optimizer the output names, and the task's extra steps
the same way. Per epoch: lr from the schedule (main optimizer only), evaluation (top-1/top-5 of
``task.eval_model()``), one metrics row, an atomic ``last.ckpt``. At the end (:meth:`finish`):
test accuracy, ``task.on_fit_end(loaders)``, the final weights, then the run folder's finish
(``model.safetensors``, ``model.json``, the task's artifacts and ``result.json`` last, so a run is
finished exactly when its result exists).

The loop decides nothing about the run folder: the lifecycle (:mod:`.run`) hands it a
:class:`~.run.RunFolder` (where the checkpoint goes, the metrics log, the finish) after deciding
reuse, resume or wipe, and sets the device and threads (:func:`~.runtime.runtime`). Given a
folder, the loop continues from the checkpoint it finds there; given none, it writes nothing.

From Python, with no files at all::

    result = Trainer(TrainConfig(epochs=2, lr=0.1), task, train_loader, val_loader).fit()
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import torch

from . import distributed
from .checkpoint import (UnusableCheckpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint,
                         seed_everything, state_dict_diff)
from .cuda_graphs import graphed_step_for, is_capturing
from .evaluation import evaluate  # noqa: F401  (re-exported: the engine's evaluation)
from .meter import EpochMeter, NonFiniteGuard, step_values
from .optim import build_optimizer, in_warmup, lr_at, set_lr, warmup_factor
from .precision import autocast_for, to_channels_last, use_channels_last
from .rundir import MetricsLog
from .runtime import runtime, where
from .task import Loaders, StepContext, TrainTask


def progress_enabled() -> bool:
    """Progress bars are on unless ``NASDISTILL_PROGRESS=0``."""
    return os.environ.get("NASDISTILL_PROGRESS", "1") != "0"


def apply_step(task: TrainTask, optimizers: dict, out, ctx: StepContext, sync: bool = False,
               clip: Optional[float] = None) -> None:
    """Back-propagate ``out.loss`` and step the optimizer ``out`` names (the engine's step).

    ``sync`` averages that optimizer's gradients over the ranks (one flat all-reduce) before the
    step; parameters trained through DDP are averaged by DDP during backward instead. ``clip``
    (``train.clip_grad_norm``, main optimizer only) scales the gradients so that their global L2
    norm is at most ``clip`` (no host synchronisation: the norm stays on the device).
    """
    opt = optimizers.get(out.optimizer)
    if opt is None:
        raise ValueError(f"{type(task).__name__} named optimizer {out.optimizer!r}; "
                         f"known: {sorted(optimizers)}")
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if sync:
        distributed.sync_gradients(p for g in opt.param_groups for p in g["params"])
    if clip is not None and out.optimizer == "main":
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip,
                                       foreach=True)
    opt.step()
    task.after_optimizer_step(out.optimizer, ctx)


class Trainer:
    """Train ``task`` with ``train_cfg`` (a :class:`~nasdistill.engine.config.TrainConfig`).

    ``folder`` (a :class:`~.run.RunFolder`, or None: nothing is written) is where checkpoints,
    metrics and the finished run go; the loop continues from a checkpoint it finds there, and a
    checkpoint that already holds every epoch is finished (evaluation, weights, result). Whether
    a folder may be trained into, reused or must be cleared is decided by the run lifecycle
    (:func:`~.run.run_training`), never here. ``device`` (default: ``train_cfg.device``) and the
    CPU threads are set by :func:`~.runtime.runtime`. ``test_loader`` (optional) is evaluated once
    at the end and reported as ``test_acc``.
    """

    def __init__(self, train_cfg, task: TrainTask, train_loader, eval_loader=None, *, folder=None,
                 seed: int = 0, test_loader=None, device: Optional[torch.device] = None, verbose: bool = True):
        self.cfg = train_cfg
        self.task = task
        self.loaders = Loaders(train_loader, eval_loader, test_loader)
        self.seed = seed
        self.world = distributed.world()
        if device is None:
            device = runtime(train_cfg.device, train_cfg.threads, self.world)
        self.folder = folder
        self.device = torch.device(device)
        self.verbose = verbose and self.world.is_main
        self.writes = folder is not None and folder.writes
        self.channels_last = use_channels_last(train_cfg.channels_last, self.device)
        task.to(self.device)
        self._use_sync_bn()
        if self.channels_last:
            task.model.to(memory_format=torch.channels_last)
        self.optimizers = {"main": build_optimizer(train_cfg, task.main_parameters())}
        for name, opt in task.extra_optimizers().items():
            if name == "main":
                raise ValueError(f"{type(task).__name__}.extra_optimizers(): the name 'main' is reserved")
            self.optimizers[name] = opt
        if train_cfg.compile:
            if task.compilable:
                task.model.compile()
            else:
                self._say(f"train.compile ignored: {type(task).__name__} trains a model whose graph "
                          "changes per step (compile only fixed models)")
        self.ddp = distributed.DDPStep(task) if self.world.distributed and task.ddp_safe else None
        self.meter = EpochMeter(self.device)
        self.guard = NonFiniteGuard(self.device)
        self.graphed = graphed_step_for(train_cfg, task, self.device, self.world, self.optimizers,
                                        self._step_tensors, self._say)
        self.best_acc = float("-inf")
        self.best_epoch = 0
        self.last_acc = None
        self.elapsed = 0.0

    def _use_sync_bn(self) -> None:
        """``train.sync_bn``: SyncBatchNorm for a task trained through DDP on GPUs."""
        task = self.task
        if self.cfg.sync_bn and self.world.distributed:
            if self.device.type == "cpu":
                raise ValueError("train.sync_bn=true needs GPUs (torch's SyncBatchNorm has no CPU "
                                 "implementation); drop it, or train on CUDA")
            if task.ddp_safe:
                task.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task.model)
            else:
                self._say(f"train.sync_bn ignored: {type(task).__name__} averages gradients with the "
                          "flat all-reduce (BatchNorm statistics are averaged every epoch)")
        elif self.cfg.sync_bn:
            self._say("train.sync_bn ignored: one process (SyncBatchNorm synchronizes ranks under torchrun)")

    # ------------------------------------------------------------------ step execution
    def _forward(self, batch, ctx: StepContext):
        if self.ddp is not None:
            return self.ddp(batch, ctx)
        return self.task.training_step(batch, ctx)

    def _step_tensors(self, batch) -> None:
        """Everything one batch does on the device (the part a CUDA graph captures)."""
        ctx = self._ctx
        x, y, idx = batch
        with autocast_for(self.device, self.cfg.amp, cache_enabled=not is_capturing()):
            out = self._forward((x, y, idx), ctx)
        loss, logs = step_values(out, self.device)  # once for the guard and the meter
        self.guard.observe(loss, logs)
        self.meter.add_step(out, y, loss, logs)
        self._scored = out.logits is not None
        self._apply(out, ctx)
        for extra in self._extra_steps(ctx):
            loss, logs = step_values(extra, self.device)
            self.guard.observe(loss, logs)
            self.meter.add_logs(logs, y.shape[0])
            self._apply(extra, ctx)
        self.guard.tick()

    def _extra_steps(self, ctx: StepContext):
        with autocast_for(self.device, self.cfg.amp, cache_enabled=not is_capturing()):
            return list(self.task.extra_steps(ctx))

    def _apply(self, out, ctx: StepContext) -> None:
        sync = self.world.distributed and not (self.ddp is not None and out.optimizer == "main")
        apply_step(self.task, self.optimizers, out, ctx, sync=sync, clip=self.cfg.clip_grad_norm)

    @property
    def run_dir(self) -> Optional[Path]:
        """The run directory (None: nothing is written)."""
        return self.folder.path if self.folder is not None else None

    # ------------------------------------------------------------------ checkpoint
    @property
    def ckpt_path(self) -> Optional[Path]:
        return self.folder.checkpoint_path if self.folder is not None else None

    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": self.task.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scheduler": {"schedule": self.cfg.schedule, "epoch": epoch, "lr": lr_at(self.cfg, epoch)},
            "rng": capture_rng(),
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "last_acc": self.last_acc,
            "elapsed_s": self.elapsed,
            "task": self.task.state_dict(),
        }

    def restore(self) -> int:
        """Load ``last.ckpt`` (when present: the lifecycle removed or refused any it must not
        continue); return the epoch it ends, else 0."""
        if not (self.ckpt_path is not None and self.ckpt_path.exists()):
            seed_everything(self.seed)
            return 0
        state = load_checkpoint(self.ckpt_path)  # on the CPU: load_state_dict moves it
        where = f"checkpoint {self.ckpt_path}"
        try:
            self.task.model.load_state_dict(state["model"])
        except RuntimeError:
            raise UnusableCheckpoint(
                f"{where} was written for another model {state_dict_diff(self.task.model, state['model'])}: "
                "the run's model or method changed since. Start it over with --restart, or use another "
                "--out-dir") from None
        for name, opt in self.optimizers.items():
            if name not in state["optimizers"]:
                raise UnusableCheckpoint(
                    f"{where}: no state for optimizer {name!r}; it was written by another method: start "
                    "over with --restart or use another --out-dir")
            opt.load_state_dict(state["optimizers"][name])
        restore_rng(state["rng"])
        self.task.load_state_dict(state["task"])
        self.best_acc = state["best_acc"]
        self.best_epoch = state["best_epoch"]
        self.last_acc = state["last_acc"]
        self.elapsed = state["elapsed_s"]
        return int(state["epoch"])

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train to ``train_cfg.epochs``, then :meth:`finish`; return the result dictionary."""
        epochs = self.cfg.epochs
        start = self.restore()
        if start > epochs:
            raise ValueError(f"{self.ckpt_path} already holds {start} epochs but train.epochs={epochs}; "
                             f"continue with train.epochs={start} or more (--resume --amend records the "
                             "change), or start over with --restart")
        if start and start < epochs:
            self._say(f"resuming {self.run_dir} after epoch {start}/{epochs}")
        elif start == epochs:
            self._say(f"{self.run_dir}: training finished ({start} epochs), finishing the run")
        log = self.folder.begin(start) if self.folder is not None and start < epochs else None
        try:
            for epoch in range(start, epochs):
                self.run_epoch(epoch, log)
        finally:
            if log is not None:
                log.close()
        return self.finish(epochs)

    def run_epoch(self, epoch: int, log: Optional[MetricsLog] = None) -> dict:
        """Train one epoch (0-based ``epoch``), evaluate, checkpoint; return its metrics row."""
        t0 = time.perf_counter()
        lr = lr_at(self.cfg, epoch)
        set_lr(self.optimizers["main"], lr)
        self._train_steps(epoch)
        if self.world.distributed:
            distributed.sync_buffers(self.task.model)  # one model on every rank for eval and checkpoints
        row = {"epoch": epoch + 1, "lr": lr, **self.meter.reduce(), **self._validate(epoch)}
        row["best_acc"] = self.best_acc if self.best_epoch else None
        row.update(self.task.epoch_metrics(epoch, self.loaders))
        epoch_time = time.perf_counter() - t0
        self.elapsed += epoch_time
        row["epoch_time_s"] = epoch_time
        if self.writes and log is not None:
            save_checkpoint(self.ckpt_path, self._state(epoch + 1))  # before the row: see MetricsLog
            log.log(row)
        self._say(self._line(row))
        return row

    def _train_steps(self, epoch: int) -> None:
        """Every step of ``epoch``: sums into the meter, non-finite losses checked."""
        train = self.loaders.train
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        self.task.model.train()
        steps = len(train)
        self.meter.reset()
        self.guard.reset(epoch * steps)
        if self.graphed is not None:
            self.graphed.invalidate()  # the lr (and other per-epoch numbers) changed
        # warm-up changes the lr at every step: those epochs run eagerly (a graph bakes the lr in)
        graphed = self.graphed if not in_warmup(self.cfg, epoch) else None
        warming = in_warmup(self.cfg, epoch)
        base_lr = lr_at(self.cfg, epoch)
        bar = self._bar(epoch, steps)
        every = self.cfg.check_every
        try:
            for i, (x, y, idx) in enumerate(train):
                if self.channels_last:
                    x = to_channels_last(x)
                self._ctx = StepContext(epoch, epoch * steps + i, i, self.device,
                                        self.world.world_size, self.world.rank)
                if warming:
                    set_lr(self.optimizers["main"], base_lr * warmup_factor(self.cfg, epoch * steps + i, steps))
                try:
                    if graphed is not None:
                        graphed((x, y, idx))
                    else:
                        self._step_tensors((x, y, idx))
                except FloatingPointError:
                    # a step that cannot go on (e.g. phi gone non-finite) after a non-finite loss
                    # the guard has seen but not yet read: name that loss's step instead
                    self._check_finite(epoch, steps)
                    raise
                self.meter.count(y.shape[0], scored=self._scored)
                if (i + 1) % every == 0:
                    self._check_finite(epoch, steps)
                    if bar is not None:
                        bar.set_postfix(loss=f"{self.meter.running_loss():.3f}", refresh=False)
                if bar is not None:
                    bar.update(1)
            self._check_finite(epoch, steps)
        finally:
            if bar is not None:
                bar.close()

    def _validate(self, epoch: int) -> dict:
        """Validation accuracy after ``epoch`` (every ``train.eval_every`` epochs and the last)."""
        if self.loaders.val is None or not ((epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs):
            return {"val_acc": None, "val_top5": None, "val_loss": None}
        ev = evaluate(self.task.eval_model(), self.loaders.val, self.device, self.cfg.amp, self.channels_last)
        self.last_acc = ev["top1"]
        if ev["top1"] > self.best_acc:
            self.best_acc, self.best_epoch = ev["top1"], epoch + 1
        return {"val_acc": ev["top1"], "val_top5": ev["top5"], "val_loss": ev["loss"]}

    def _check_finite(self, epoch: int, steps: int) -> None:
        bad = self.guard.first_bad()
        if bad is None:
            return
        step = bad["step"]
        kept = (f"the last good checkpoint {self.ckpt_path} (epoch {epoch}) is kept"
                if self.ckpt_path is not None and self.ckpt_path.exists() else "no checkpoint was written yet")
        detail = (f"non-finite loss {bad['loss']} at epoch {step // steps + 1} (step {step % steps} of the "
                  f"epoch, global step {step}); logs: {bad['logs']}. Training stopped and {kept}.")
        err = FloatingPointError(
            f"{detail} Lower train.lr or check the data, then continue from the checkpoint with "
            "--resume --amend (which records the changed keys) or start over with --restart")
        err.detail, err.run_dir = detail, str(self.run_dir) if self.run_dir is not None else None
        raise err

    def finish(self, epochs: Optional[int] = None) -> dict:
        """Test accuracy, ``on_fit_end``, weights, record, artifacts and ``result.json`` (last)."""
        epochs = self.cfg.epochs if epochs is None else epochs
        result = self._result(epochs)
        task = self.task
        if self.loaders.test is not None:
            ev = evaluate(task.eval_model(), self.loaders.test, self.device, self.cfg.amp, self.channels_last)
            result.update(test_acc=ev["top1"], test_top5=ev["top5"])
        task.on_fit_end(self.loaders)
        weights = {k: v.detach().cpu().contiguous() for k, v in task.final_weights().items()}
        result.update(task.info)
        result.update(task.result_extras())
        if self.folder is not None:
            result = self.folder.finish(task, result, weights)  # result.json last
        distributed.barrier()
        return result

    def _result(self, epochs: int) -> dict:
        best = self.best_acc if self.best_epoch else None
        return {"best_acc": best, "best_epoch": self.best_epoch, "last_acc": self.last_acc,
                "epochs": epochs, "wall_time_s": self.elapsed, "where": where(self.device)}

    # ------------------------------------------------------------------ output
    def _bar(self, epoch: int, steps: int):
        if not (self.verbose and progress_enabled()):
            return None
        from tqdm import tqdm
        return tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False,
                    mininterval=0.5, dynamic_ncols=True)

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    @staticmethod
    def _line(row: dict) -> str:
        parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.4g}", f"loss {row['train_loss']:.4f}"]
        if row.get("train_acc") is not None:
            parts.append(f"acc {row['train_acc']:.2f}")
        if row.get("val_acc") is not None:
            parts.append(f"val {row['val_acc']:.2f} (top5 {row['val_top5']:.2f})")
        if row.get("best_acc") is not None:
            parts.append(f"best {row['best_acc']:.2f}")
        parts.append(f"{row['epoch_time_s']:.1f}s")
        return " | ".join(parts)
