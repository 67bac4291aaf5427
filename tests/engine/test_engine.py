"""The training loop: schedules, evaluation, extra optimizers, non-finite loss, run directory."""
import math

import pytest
import torch
from torch import nn

from nasdistill.engine.run import RunFolder
from nasdistill.engine import (
    StepOutput,
    TrainConfig,
    Trainer,
    TrainTask,
    evaluate,
    load_checkpoint,
    lr_at,
    read_metrics,
)
from nasdistill.teachers.ce import CETask


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def cfg(**kw):
    base = dict(epochs=2, batch_size=64, lr=0.1, schedule="constant", weight_decay=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_schedules_match_formulas_and_torch():
    ms = cfg(lr=0.05, schedule="multistep", milestones=[3, 5], gamma=0.1, epochs=8)
    assert [lr_at(ms, e) for e in range(8)] == pytest.approx([0.05] * 3 + [0.005] * 2 + [0.0005] * 3)
    cos = cfg(lr=0.05, schedule="cosine", epochs=8)
    assert [lr_at(cos, e) for e in range(8)] == pytest.approx(
        [0.05 * 0.5 * (1 + math.cos(math.pi * e / 8)) for e in range(8)])
    assert [lr_at(cfg(lr=0.3, schedule="constant"), e) for e in range(4)] == [0.3] * 4
    for c, make in [(ms, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 5], 0.1)),
                    (cos, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8))]:
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=c.lr)
        sched, expected = make(opt), []
        for _ in range(8):
            expected.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert [lr_at(c, e) for e in range(8)] == pytest.approx(expected)


def test_programmatic_run_learns_and_logs_schedule(digits, tmp_path):
    train, val, test = digits
    c = cfg(epochs=3, schedule="multistep", milestones=[1, 2], lr=0.2, optimizer="sgd", nesterov=True)
    result = Trainer(c, CETask(linear()), train, val, folder=RunFolder.at(tmp_path / "run"), verbose=False,
                     test_loader=test).fit()
    assert result["best_acc"] > 85 and result["test_acc"] > 80 and result["epochs"] == 3
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([0.2, 0.02, 0.002])
    assert rows[-1]["best_acc"] == max(r["val_acc"] for r in rows) == result["best_acc"]
    assert rows[-1]["val_acc"] == result["last_acc"]
    assert {"train_loss", "train_acc", "train_ce", "val_top5", "epoch_time_s"} <= set(rows[0])
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,")


def test_run_without_run_dir_writes_nothing(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val, _ = digits
    result = Trainer(cfg(epochs=1, optimizer="adam", lr=0.01), CETask(linear()), train, val,
                     verbose=False).fit()
    assert result["last_acc"] > 50 and list(tmp_path.iterdir()) == []


def test_evaluate_top1_top5_against_manual(digits):
    _, val, _ = digits
    model = linear()
    ev = evaluate(model, val, torch.device("cpu"))
    x = torch.cat([b[0] for b in val])
    y = torch.cat([b[1] for b in val])
    with torch.no_grad():
        logits = model(x)
    top5 = logits.topk(5, 1).indices
    assert ev["top1"] == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())
    assert ev["top5"] == pytest.approx(100 * (top5 == y[:, None]).any(1).float().mean().item())
    assert ev["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


class AlternatingTask(TrainTask):
    """Even steps train the classifier, odd steps a separate scale `phi` with its own Adam."""

    def __init__(self):
        super().__init__(linear())
        self.phi = nn.Parameter(torch.ones(()))
        self.steps = {"main": 0, "arch": 0}

    def extra_optimizers(self):
        return {"arch": torch.optim.Adam([self.phi], lr=1e-3, betas=(0.0, 0.999))}

    def training_step(self, batch, ctx):
        x, y, _ = batch
        name = "main" if ctx.step % 2 == 0 else "arch"
        self.steps[name] += 1
        logits = self.model(x) * self.phi
        return StepOutput(nn.functional.cross_entropy(logits, y), logits, optimizer=name)


def test_extra_optimizer_keeps_its_own_lr(digits):
    train, val, _ = digits
    task = AlternatingTask()
    trainer = Trainer(cfg(epochs=2, schedule="cosine", lr=0.1), task, train, val, verbose=False)
    trainer.fit()
    assert trainer.optimizers["arch"].param_groups[0]["lr"] == 1e-3
    assert trainer.optimizers["main"].param_groups[0]["lr"] == pytest.approx(0.05)  # cosine, epoch 1 of 2
    assert task.steps["main"] > 0 and task.steps["arch"] > 0
    assert task.phi.item() != 1.0
    assert all(p is not task.phi for p in trainer.optimizers["main"].param_groups[0]["params"])


class ExplodingTask(CETask):
    def training_step(self, batch, ctx):
        out = super().training_step(batch, ctx)
        if ctx.epoch == 1 and ctx.step_in_epoch == 3:
            out.loss = out.loss * float("nan")
            out.logs["ce"] = out.loss.detach()
        return out


def test_non_finite_loss_stops_and_keeps_checkpoint(digits, tmp_path):
    train, val, _ = digits
    task = ExplodingTask(linear())
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError) as err:
        Trainer(cfg(epochs=3), task, train, val, folder=RunFolder.at(run), verbose=False).fit()
    msg = str(err.value)
    assert "epoch 2" in msg and "step 3" in msg and "'ce': nan" in msg and "last.ckpt" in msg
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["epoch"] == 1 and len(read_metrics(run)) == 1
    # the three good steps of epoch 2 changed the model, the checkpoint still holds epoch 1
    assert not torch.equal(ckpt["model"]["1.weight"], task.model[1].weight.detach())
    assert not (run / "model.safetensors").exists() and not (run / "result.json").exists()


