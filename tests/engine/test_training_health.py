"""Learning-rate warm-up, gradient clipping, per-term epoch means, and the run's health check."""
import math

import pytest
import torch
from torch import nn

from nasdistill.engine import StepOutput, TrainConfig, Trainer, TrainTask
from nasdistill.engine.health import instability
from nasdistill.engine.meter import EpochMeter
from nasdistill.engine.optim import warmup_factor


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


class Recorder(TrainTask):
    """Records the main optimizer's lr and the gradient norm at every step; logs a term on even
    steps only."""

    def __init__(self, model, scale=1.0):
        super().__init__(model)
        self.lrs, self.norms, self.scale, self.opt = [], [], scale, None

    def training_step(self, batch, ctx):
        x, y, _ = batch
        logits = self.model(x) * self.scale
        loss = nn.functional.cross_entropy(logits, y)
        logs = {"ce": loss.detach()}
        if ctx.step % 2 == 0:
            logs["even"] = torch.tensor(float(ctx.step))
        return StepOutput(loss, logits, logs)

    def after_optimizer_step(self, name, ctx):
        if self.opt is not None:
            self.lrs.append(self.opt.param_groups[0]["lr"])


def test_warmup_ramps_the_lr_per_step_then_follows_the_schedule(digits):
    train, val, _ = digits
    steps = len(train)
    c = TrainConfig(epochs=3, batch_size=64, lr=0.2, schedule="constant", weight_decay=0.0, warmup_epochs=1.5)
    task = Recorder(linear())
    trainer = Trainer(c, task, train, val, verbose=False)
    task.opt = trainer.optimizers["main"]
    trainer.fit()
    ramp = 1.5 * steps
    expected = [0.2 * min(1.0, (t + 1) / ramp) for t in range(3 * steps)]
    assert task.lrs == pytest.approx(expected)
    assert task.lrs[0] == pytest.approx(0.2 / ramp) and task.lrs[-1] == 0.2
    assert warmup_factor(c, 0, 10) == pytest.approx(1 / 15)
    assert warmup_factor(TrainConfig(epochs=2), 0, 10) == 1.0


def test_gradient_clipping_bounds_the_norm(digits, monkeypatch):
    train, val, _ = digits
    seen = []
    real = torch.optim.SGD.step

    def spy(opt, *a, **k):  # the global gradient norm when the optimizer steps
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real(opt, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    c = TrainConfig(epochs=1, batch_size=64, lr=0.05, schedule="constant", weight_decay=0.0)
    Trainer(c, Recorder(linear(), scale=50.0), train, val, verbose=False).fit()
    unclipped = list(seen)
    assert max(unclipped) > 1.0
    seen.clear()
    Trainer(TrainConfig(**{**c.__dict__, "clip_grad_norm": 0.5}), Recorder(linear(), scale=50.0), train, val,
            verbose=False).fit()
    assert max(seen) <= 0.5 + 1e-5
    assert seen[0] == pytest.approx(min(unclipped[0], 0.5), rel=1e-4)  # the same first gradient, scaled
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainConfig(clip_grad_norm=0.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=3)


def test_a_term_logged_on_some_steps_is_averaged_over_those_steps():
    meter = EpochMeter("cpu")
    out = StepOutput(torch.tensor(1.0))
    for step, n in enumerate([10, 20, 30, 40]):
        logs = {"always": float(step)}
        if step % 2 == 0:
            logs["even"] = float(100 + step)
        meter.add_step(out, torch.zeros(n, dtype=torch.long), torch.tensor(1.0, dtype=torch.float64), logs)
        meter.count(n, scored=False)
    row = meter.reduce()
    assert row["train_always"] == pytest.approx((0 * 10 + 1 * 20 + 2 * 30 + 3 * 40) / 100)
    assert row["train_even"] == pytest.approx((100 * 10 + 102 * 30) / 40)  # not divided by all 100 samples
    meter.reset()
    meter.add_step(out, torch.zeros(5, dtype=torch.long), torch.tensor(1.0, dtype=torch.float64), {"always": 2.0})
    meter.count(5, scored=False)
    row = meter.reduce()
    assert row["train_always"] == 2.0 and row["train_even"] is None  # not logged this epoch


def test_trainer_epoch_rows_average_each_term_over_its_steps(digits):
    train, val, _ = digits
    trainer = Trainer(TrainConfig(epochs=1, batch_size=64, lr=0.01, schedule="constant"), Recorder(linear()),
                      train, val, verbose=False)
    row = trainer.run_epoch(0)
    sizes = [len(y) for _, y, _ in train]
    even = [t for t in range(len(sizes)) if t % 2 == 0]
    assert row["train_even"] == pytest.approx(sum(t * sizes[t] for t in even) / sum(sizes[t] for t in even))


# ------------------------------------------------------------------------------ health
def rows(ce=None, std=None, acc=None):
    n = len(next(v for v in (ce, std, acc) if v is not None))
    return [{"epoch": e + 1, **({"train_ce": ce[e]} if ce else {}), **({"train_std": std[e]} if std else {}),
             **({"train_acc": acc[e]} if acc else {})} for e in range(n)]


def test_health_flags_a_blowup_against_ln_k():
    limit = 1.5 * math.log(10)
    events = instability(rows(ce=[2.2, limit + 0.01, 1.9]), 10)
    assert [(e["epoch"], e["what"]) for e in events] == [(2, "blow-up")]
    assert events[0]["threshold"] == pytest.approx(limit)
    assert instability(rows(ce=[2.2, limit - 0.01, 1.9]), 10) == []
    assert len(instability(rows(ce=[7.0]), 100)) == 1  # 1.5 ln 100 = 6.91
    assert instability(rows(ce=[6.8]), 100) == []
    assert instability(rows(ce=[7.0]), None) == []      # K unknown: nothing to compare with


def test_health_flags_collapses_relative_to_earlier_epochs():
    events = instability(rows(std=[0.5, 4.0, 1.9, 2.5]), 10, ce_key=None, std_key="train_std")
    assert [(e["epoch"], e["what"]) for e in events] == [(3, "logit collapse")]
    assert instability(rows(std=[0.5, 1.0, 1.5, 0.8]), 10, ce_key=None, std_key="train_std") == []
    events = instability(rows(acc=[30.0, 80.0, 59.0, 85.0]), 10, ce_key=None)
    assert [(e["epoch"], e["what"]) for e in events] == [(3, "accuracy collapse")]
    assert instability(rows(acc=[30.0, 80.0, 61.0]), 10, ce_key=None) == []
