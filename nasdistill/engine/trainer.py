"""The one training loop shared by teachers, search and distillation.

Per step: ``out = task.training_step(batch, ctx)``; a non-finite loss stops the run with
``FloatingPointError`` (the last good checkpoint is left untouched); then zero_grad, backward,
gradient sync across ranks, step of the optimizer the step names. Per epoch: lr from the schedule
(main optimizer only), evaluation (top-1/top-5 of ``task.eval_model()``), one metrics row, an
atomic ``last.ckpt``. At the end: ``model.safetensors``, the task's artifacts, ``result.json``.

From Python, with no files at all::

    result = Trainer(TrainConfig(epochs=2, lr=0.1), task, train_loader, val_loader).fit()
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Optional

import torch

from . import distributed
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, seed_everything
from .optim import build_optimizer, lr_at, set_lr
from .rundir import MetricsLog, read_result, write_json
from .task import StepContext, TrainTask


def progress_enabled() -> bool:
    """Progress bars are on unless ``NASDISTILL_PROGRESS=0``."""
    return os.environ.get("NASDISTILL_PROGRESS", "1") != "0"


def autocast_for(device: torch.device, amp: str):
    """bf16 autocast on CUDA for ``amp`` = auto/bf16; fp32 otherwise."""
    if device.type == "cuda" and amp in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, amp: str = "auto",
             channels_last: bool = False) -> dict:
    """Top-1 and top-5 accuracy (percent) and mean CE loss of ``model`` on ``loader``.

    Counts are summed over ranks, so a sharded or a full loader on every rank both work.
    """
    was_training = model.training
    model.eval()
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    total = 0
    try:
        for x, y, *_ in loader:
            x = to_channels_last(x) if channels_last else x
            with autocast_for(device, amp):
                logits = model(x)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hits = top.eq(y[:, None])
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            total += y.shape[0]
    finally:
        model.train(was_training)
    c1, c5, ls, n = distributed.all_reduce_sum(
        [correct1.item(), correct5.item(), loss_sum.item(), float(total)], device)
    if n == 0:
        raise ValueError("evaluation loader is empty")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": ls / n}


def apply_step(task: TrainTask, optimizers: dict, out, ctx: StepContext, sync: bool = False) -> None:
    """Back-propagate ``out.loss`` and step the optimizer ``out`` names (the engine's step).

    ``sync`` averages that optimizer's gradients over the ranks before the step.
    """
    opt = optimizers.get(out.optimizer)
    if opt is None:
        raise ValueError(f"{type(task).__name__} named optimizer {out.optimizer!r}; "
                         f"known: {sorted(optimizers)}")
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if sync:
        distributed.sync_gradients(p for g in opt.param_groups for p in g["params"])
    opt.step()
    task.after_optimizer_step(out.optimizer, ctx)


class Trainer:
    """Train ``task`` with ``train_cfg`` (a :class:`~nasdistill.engine.config.TrainConfig`).

    ``run_dir=None`` trains without writing anything (no checkpoints, no logs). With a run dir,
    ``resume=True`` continues from ``run_dir/last.ckpt`` (or starts fresh when there is none).
    ``test_loader`` (optional) is evaluated once at the end and reported as ``test_acc``.
    """

    def __init__(self, train_cfg, task: TrainTask, train_loader, eval_loader=None,
                 run_dir=None, seed: int = 0, resume: bool = False, test_loader=None,
                 device: Optional[torch.device] = None, verbose: bool = True):
        self.cfg = train_cfg
        self.task = task
        self.train_loader = train_loader
        self.eval_loader = eval_loader
        self.test_loader = test_loader
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = seed
        self.resume = resume
        self.world = distributed.world()
        self.device = device or distributed.resolve_device(train_cfg.device, self.world.local_rank)
        self.verbose = verbose and self.world.is_main
        self.writes = self.run_dir is not None and self.world.is_main
        self.channels_last = (train_cfg.channels_last is True
                              or (train_cfg.channels_last == "auto" and self.device.type == "cuda"))
        if self.run_dir is not None and not resume:
            existing = [n for n in ("last.ckpt", "metrics.jsonl", "result.json") if (self.run_dir / n).exists()]
            if existing:
                raise FileExistsError(f"{self.run_dir} already holds a run ({', '.join(existing)}); "
                                      "resume it (--resume / resume=True) or use another directory")
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if train_cfg.threads is not None:
            if train_cfg.threads < 1:
                raise ValueError(f"train.threads must be >= 1 or null, got {train_cfg.threads}")
            torch.set_num_threads(train_cfg.threads)  # process-wide, as the config asks
        task.to(self.device)
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
            elif self.verbose:
                print(f"train.compile ignored: {type(task).__name__} trains a model whose graph "
                      "changes per step (compile only fixed models)")
        self.best_acc = float("-inf")
        self.best_epoch = 0
        self.last_acc = None
        self.elapsed = 0.0

    # ------------------------------------------------------------------ checkpoint
    @property
    def ckpt_path(self) -> Optional[Path]:
        return self.run_dir / "last.ckpt" if self.run_dir is not None else None

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

    def _load(self) -> int:
        state = load_checkpoint(self.ckpt_path, map_location=self.device)
        self.task.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            if name not in state["optimizers"]:
                raise ValueError(f"{self.ckpt_path}: no state for optimizer {name!r}; "
                                 "was it written by another method?")
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
        """Train to ``train_cfg.epochs``; return best/last accuracy, epochs and wall time."""
        epochs = self.cfg.epochs
        start = 0
        if self.resume and self.ckpt_path is not None and self.ckpt_path.exists():
            start = self._load()
            if start >= epochs:
                result = read_result(self.run_dir) or self._result(epochs)
                self._say(f"{self.run_dir} already finished {start} epochs (train.epochs={epochs}); "
                          "nothing to do")
                return result
            self._say(f"resuming {self.run_dir} after epoch {start}/{epochs}")
        else:
            seed_everything(self.seed)
        log = MetricsLog(self.run_dir, start) if self.writes else None
        try:
            for epoch in range(start, epochs):
                self._epoch(epoch, log)
        finally:
            if log is not None:
                log.close()
        return self._finish(epochs)

    def _epoch(self, epoch: int, log: Optional[MetricsLog]) -> None:
        t0 = time.perf_counter()
        lr = lr_at(self.cfg, epoch)
        set_lr(self.optimizers["main"], lr)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        self.task.model.train()
        steps = len(self.train_loader)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0
        counted = 0
        log_sums: dict[str, torch.Tensor] = {}
        bar = self._bar(epoch, steps)
        try:
            for i, (x, y, idx) in enumerate(self.train_loader):
                if self.channels_last:
                    x = to_channels_last(x)
                ctx = StepContext(epoch, epoch * steps + i, i, self.device,
                                  self.world.world_size, self.world.rank)
                with autocast_for(self.device, self.cfg.amp):
                    out = self.task.training_step((x, y, idx), ctx)
                self._apply(out, ctx)
                n = y.shape[0]
                for extra in self.task.extra_steps(ctx):
                    self._apply(extra, ctx)
                    for k, v in extra.logs.items():
                        v = torch.as_tensor(v, device=self.device).detach().double()
                        log_sums[k] = log_sums.get(k, 0) + v * n
                loss_sum += out.loss.detach().double() * n
                seen += n
                if out.logits is not None:
                    correct += (out.logits.detach().argmax(1) == y).sum()
                    counted += n
                for k, v in out.logs.items():
                    v = torch.as_tensor(v, device=self.device).detach().double()
                    log_sums[k] = log_sums.get(k, 0) + v * n
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0 or i == steps - 1:
                        bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        if self.world.distributed:
            distributed.sync_buffers(self.task.model)  # one model on every rank for eval and checkpoints
        keys = sorted(log_sums)
        totals = distributed.all_reduce_sum(
            [loss_sum.item(), correct.item(), float(seen), float(counted)]
            + [log_sums[k].item() for k in keys], self.device)
        row = {"epoch": epoch + 1, "lr": lr,
               "train_loss": totals[0] / max(totals[2], 1),
               "train_acc": 100.0 * totals[1] / totals[3] if totals[3] else None}
        row.update({f"train_{k}": totals[4 + j] / max(totals[2], 1) for j, k in enumerate(keys)})
        if self.eval_loader is not None and ((epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs):
            ev = evaluate(self.task.eval_model(), self.eval_loader, self.device, self.cfg.amp,
                          self.channels_last)
            self.last_acc = ev["top1"]
            if ev["top1"] > self.best_acc:
                self.best_acc, self.best_epoch = ev["top1"], epoch + 1
            row.update(val_acc=ev["top1"], val_top5=ev["top5"], val_loss=ev["loss"])
        else:
            row.update(val_acc=None, val_top5=None, val_loss=None)
        row["best_acc"] = self.best_acc if self.best_epoch else None
        row.update(self.task.epoch_metrics(epoch))
        epoch_time = time.perf_counter() - t0
        self.elapsed += epoch_time
        row["epoch_time_s"] = epoch_time
        if self.writes:
            save_checkpoint(self.ckpt_path, self._state(epoch + 1))  # before the row: see MetricsLog
            log.log(row)
        self._say(self._line(row))

    def _apply(self, out, ctx: StepContext) -> None:
        """Check, back-propagate and step one :class:`StepOutput` with the optimizer it names."""
        if not torch.isfinite(out.loss.detach()).item():
            self._non_finite(out, ctx)
        apply_step(self.task, self.optimizers, out, ctx, sync=self.world.distributed)

    def _non_finite(self, out, ctx: StepContext):
        logs = {k: (float(v) if torch.is_tensor(v) and v.numel() == 1 else v) for k, v in out.logs.items()}
        kept = (f"the last good checkpoint {self.ckpt_path} is kept" if self.ckpt_path is not None
                and self.ckpt_path.exists() else "no checkpoint was written yet")
        raise FloatingPointError(
            f"non-finite loss {out.loss.item()} at epoch {ctx.epoch + 1} (step {ctx.step_in_epoch} of "
            f"the epoch, global step {ctx.step}); logs: {logs}. {kept}. Lower train.lr, check the data, "
            "or resume from the checkpoint with --resume")

    def _finish(self, epochs: int) -> dict:
        result = self._result(epochs)
        if self.test_loader is not None:
            ev = evaluate(self.task.eval_model(), self.test_loader, self.device, self.cfg.amp,
                          self.channels_last)
            result.update(test_acc=ev["top1"], test_top5=ev["top5"])
        weights = {k: v.detach().cpu().contiguous() for k, v in self.task.final_weights().items()}
        result.update(self.task.result_extras())
        if self.writes:
            from safetensors.torch import save_file
            save_file(weights, str(self.run_dir / "model.safetensors"))
            self.task.save_artifacts(self.run_dir)
            write_json(self.run_dir / "result.json", result)
        distributed.barrier()
        return result

    def _result(self, epochs: int) -> dict:
        best = self.best_acc if self.best_epoch else None
        return {"best_acc": best, "best_epoch": self.best_epoch, "last_acc": self.last_acc,
                "epochs": epochs, "wall_time_s": self.elapsed,
                "run_dir": str(self.run_dir) if self.run_dir is not None else None}

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
