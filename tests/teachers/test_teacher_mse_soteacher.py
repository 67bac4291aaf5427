"""mse and soteacher teacher methods: loss terms against formulas, running targets, ramp, CLI runs."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from nasdistill.cli import main
from nasdistill.engine import StepContext
from nasdistill.teachers import available_teachers, teacher_config_class
from nasdistill.teachers.lipschitz import lip1
from nasdistill.teachers.mse import MSETask, brier_loss
from nasdistill.teachers.soteacher import (SoTeacherTask, consistency_loss, consistency_ramp,
                                           running_tau)


def ctx(epoch):
    return StepContext(epoch=epoch, step=0, step_in_epoch=0, device=torch.device("cpu"))


# ------------------------------------------------------------------------------------------ mse
def test_brier_loss_against_numpy():
    z = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    y = torch.tensor([1, 0])
    e = np.exp(z.numpy() - z.numpy().max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    onehot = np.eye(3)[y.numpy()]
    sq = (p - onehot) ** 2
    assert brier_loss(z, y, "mean").item() == pytest.approx(sq.mean(), rel=1e-6)
    assert brier_loss(z, y, "sum_classes").item() == pytest.approx(sq.sum(1).mean(), rel=1e-6)
    assert torch.allclose(brier_loss(z, y, "none"), torch.tensor(sq.sum(1), dtype=torch.float32))
    # "mean" is nn.MSELoss's default reduction over all elements
    ref = nn.MSELoss()(torch.softmax(z, 1), nn.functional.one_hot(y, 3).float())
    assert brier_loss(z, y, "mean").item() == pytest.approx(ref.item(), rel=1e-6)


def test_mse_task_loss_is_weighted_brier_and_not_ce():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    out = MSETask(model, "sum_classes", weight=2.0).training_step((x, y, torch.arange(5)), ctx(0))
    expect = 2.0 * brier_loss(model(x), y, "sum_classes")
    assert out.loss.item() == pytest.approx(expect.item(), rel=1e-6)
    assert out.loss.item() != pytest.approx(nn.functional.cross_entropy(model(x), y).item(), rel=1e-3)
    assert set(out.logs) == {"brier", "ce"}
    with pytest.raises(ValueError, match="mse.reduction"):
        MSETask(model, "sum")


def test_registry_and_config_sections():
    assert {"ce", "mse", "soteacher"} <= set(available_teachers())
    cfg = teacher_config_class()()
    assert cfg.mse.reduction == "sum_classes" and cfg.mse.weight == 1.0
    s = cfg.soteacher
    assert (s.lipschitz, s.consistency, s.lip_weight, s.cons_weight, s.start_epoch) == (True, True, 1e-5, 1.0, 1)


# ------------------------------------------------------------------------------------- lipschitz
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_lip1_of_tiny_model_by_hand():
    m = Tiny()
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([[[[1., -2.], [0., 3.]]], [[[-1., 1.], [1., -1.]]]]))
        m.bn.weight.copy_(torch.tensor([2.0, -3.0]))
        m.bn.running_var.copy_(torch.tensor([4.0, 1.0]))
        m.fc.weight.copy_(torch.tensor([[1., -2.], [3., 0.5], [-1., 1.]]))  # (out=3, in=2)
    conv = 1 + 2 + 0 + 3 + 1 + 1 + 1 + 1                           # 10, entry-wise L1
    bn = max(2 / np.sqrt(4 + 1e-5), 3 / np.sqrt(1 + 1e-5))          # max |gamma| / sqrt(var + eps)
    fc = max(1 + 3 + 1, 2 + 0.5 + 1)                                # max column abs-sum = 5
    assert lip1(m).item() == pytest.approx(conv + bn + fc, rel=1e-6)
    lip1(m).backward()                                              # gradients reach weights and gamma
    assert m.conv.weight.grad is not None and m.bn.weight.grad is not None and m.fc.weight.grad is not None
    assert torch.equal(m.conv.weight.grad, torch.sign(m.conv.weight))


# ------------------------------------------------------------------------------------- soteacher
def test_running_tau_and_ramp_values():
    assert [running_tau(e) for e in range(4)] == [1.0, 0.5, 1 / 3, 0.25]
    assert [consistency_ramp(e, 1, 4) for e in range(6)] == [0.0, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [consistency_ramp(e, 2, 10) for e in range(4)] == [0.0, 0.0, 0.3, 0.4]
    assert consistency_ramp(3, 1, 0) == 1.0
    task = SoTeacherTask(nn.Linear(2, 2), 4, 2, cons_weight=0.5, ramp_epochs=4)
    assert [task.consistency_weight(e) for e in range(5)] == [0.0, 0.25, 0.375, 0.5, 0.5]


def test_running_targets_are_the_mean_of_past_epoch_predictions():
    task = SoTeacherTask(nn.Linear(2, 3), num_train=5, num_classes=3)
    idx = torch.tensor([3, 1])
    preds = [torch.softmax(torch.randn(2, 3), 1) for _ in range(3)]
    for epoch, p in enumerate(preds):
        task.update_targets(idx, p, epoch)
        assert torch.allclose(task.targets[idx], torch.stack(preds[:epoch + 1]).mean(0), atol=1e-6)
    assert torch.equal(task.targets[[0, 2, 4]], torch.zeros(3, 3))    # untouched rows stay 0


def test_soteacher_step_adds_every_term_with_its_weight():
    torch.manual_seed(0)
    model = Tiny()
    task = SoTeacherTask(model, num_train=6, num_classes=3, lip_weight=1e-2, cons_weight=2.0,
                         ramp_epochs=4)
    x, y, idx = torch.randn(4, 1, 3, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([5, 0, 2, 3])
    old = torch.softmax(torch.randn(6, 3), 1)
    task.targets.copy_(old)
    model.eval()                       # fixed BN statistics so the two forwards agree
    out = task.training_step((x, y, idx), ctx(1))
    z = model(x)
    p = torch.softmax(z, 1)
    ce = nn.functional.cross_entropy(z, y)
    cons = ((p - old[idx]) ** 2).sum(1).mean()
    w = 2.0 * 0.5                      # cons_weight * (1 + 1) / 4
    assert out.loss.item() == pytest.approx((ce + 1e-2 * lip1(model) + w * cons).item(), rel=1e-5)
    assert {"ce", "lip1", "cons", "cons_w"} <= set(out.logs)
    assert out.logs["cons"].item() == pytest.approx(cons.item(), rel=1e-5)
    assert out.logs["cons_w"] == pytest.approx(1.0)
    assert consistency_loss(p, old[idx]).item() == pytest.approx(cons.item(), rel=1e-6)
    # the loss used the old targets; afterwards they moved by tau = 1/2 towards the prediction
    assert torch.allclose(task.targets[idx], 0.5 * old[idx] + 0.5 * p.detach(), atol=1e-6)
    keep = torch.tensor([1, 4])
    assert torch.equal(task.targets[keep], old[keep])


def test_soteacher_flags_turn_terms_off_and_epoch0_has_no_consistency():
    torch.manual_seed(0)
    model = Tiny().eval()
    x, y, idx = torch.randn(4, 1, 3, 3), torch.tensor([0, 1, 2, 0]), torch.arange(4)
    ce = nn.functional.cross_entropy(model(x), y)
    out0 = SoTeacherTask(model, 4, 3, lip_weight=1.0).training_step((x, y, idx), ctx(0))
    assert out0.logs["cons"].item() == 0.0 and out0.logs["cons_w"] == 0.0
    assert out0.loss.item() == pytest.approx((ce + lip1(model)).item(), rel=1e-6)
    with pytest.warns(UserWarning, match="plain CE"):
        only_ce = SoTeacherTask(model, 4, 3, lipschitz=False, consistency=False)
    out = only_ce.training_step((x, y, idx), ctx(3))
    assert out.loss.item() == pytest.approx(ce.item(), rel=1e-6) and set(out.logs) == {"ce"}


def test_state_dict_round_trip_and_shape_check():
    a = SoTeacherTask(nn.Linear(2, 3), 5, 3)
    a.targets.copy_(torch.rand(5, 3))
    b = SoTeacherTask(nn.Linear(2, 3), 5, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.targets, b.targets)
    with pytest.raises(ValueError, match="running targets of shape"):
        SoTeacherTask(nn.Linear(2, 3), 6, 3).load_state_dict(a.state_dict())


# --------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["mse", "soteacher"])
def test_method_trains_digits_teacher_and_saves_plain_model(method, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from nasdistill import load as load_model_record

    run = tmp_path / method
    code = main(["teacher", f"method={method}", "model.name=resnet8", "data.name=digits",
                 f"train.epochs={1 if method == 'mse' else 2}", "train.batch_size=128", "train.lr=0.05", "train.device=cpu",
                 "train.schedule=constant", f"{method}.{'weight' if method == 'mse' else 'cons_weight'}=1.0",
                 "--out-dir", str(run)])
    assert code == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == (1 if method == "mse" else 2)
    if method == "mse":
        assert all("train_brier" in r for r in rows)
    else:
        assert all("train_lip1" in r and "train_cons" in r for r in rows)
        assert rows[0]["train_cons"] == 0 and rows[1]["train_cons"] > 0     # starts at epoch 1
        assert rows[1]["train_cons_w"] == pytest.approx(1.0)                # ramp over 2 epochs: (1+1)/2
        ckpt = torch.load(run / "last.ckpt", weights_only=True)
        targets = ckpt["task"]["targets"]
        assert targets.shape[1] == 10
        assert torch.allclose(targets.sum(1), torch.ones(targets.shape[0]), atol=1e-4)
    weights = load_file(str(run / "model.safetensors"))
    model = load_model_record(run)
    assert set(weights) == set(model.state_dict())
    assert json.loads((run / "result.json").read_text())["test_acc"] > 10.0


def test_soteacher_resume_is_exact(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    common = ["method=soteacher", "model.name=resnet8", "data.name=digits", "train.batch_size=256",
              "train.device=cpu", "train.schedule=constant", "soteacher.ramp_epochs=2"]
    assert main(["teacher", *common, "train.epochs=2", "--out-dir", str(tmp_path / "straight")]) == 0
    assert main(["teacher", *common, "train.epochs=1", "--out-dir", str(tmp_path / "split")]) == 0
    # more epochs is another configuration: --amend continues the run and records the change
    assert main(["teacher", "train.epochs=2", "--out-dir", str(tmp_path / "split"), "--resume", "--amend"]) == 0
    a = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.ckpt", weights_only=True)
    assert torch.equal(a["task"]["targets"], b["task"]["targets"])
    wa, wb = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("straight", "split"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
