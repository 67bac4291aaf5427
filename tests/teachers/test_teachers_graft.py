"""SFTN / GTN: grafting machinery, loss terms, alternation, gradient flow, saved plain teachers."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from nasdistill.cli import main
from nasdistill.models import create_model
from nasdistill.space import load_space
from nasdistill.teachers.grafting import (Transform, blocks_from_sizes, kl_branch_teacher, sftn_loss,
                                          split_even)
from nasdistill.teachers.gtn import GTNConfig, GTNTask, build_gtn, layer_blocks
from nasdistill.teachers.sftn import graft_student


def test_partitions():
    assert split_even(7, 3) == [3, 2, 2]
    assert split_even(6, 4) == [2, 2, 1, 1]
    assert blocks_from_sizes([1, 2], 3) == [[0], [1, 2]]
    assert layer_blocks(6, 4) == [[0, 1], [2, 3], [4], [5]]
    with pytest.raises(ValueError):
        layer_blocks(6, 4, [3, 3, 1, 1])
    with pytest.raises(ValueError):
        split_even(2, 3)


@pytest.mark.parametrize("c_in,hw_in,c_out,hw_out,kind", [
    (16, (8, 8), 32, (8, 8), torch.nn.Conv2d),
    (16, (8, 8), 32, (4, 4), torch.nn.Conv2d),
    (16, (4, 4), 32, (8, 8), torch.nn.ConvTranspose2d),
    (16, (2, 2), 8, (8, 8), torch.nn.ConvTranspose2d),
])
def test_transform_shapes(c_in, hw_in, c_out, hw_out, kind):
    t = Transform(c_in, hw_in, c_out, hw_out)
    assert isinstance(t[0], kind)
    if hw_in == hw_out:
        assert t[0].kernel_size == (1, 1)
    elif hw_out < hw_in:
        assert t[0].kernel_size == (3, 3)
    elif hw_out[0] == 2 * hw_in[0]:
        assert t[0].kernel_size == (4, 4) and t[0].stride == (2, 2)
    assert t(torch.randn(2, c_in, *hw_in)).shape == (2, c_out, *hw_out)


def test_sftn_loss_matches_formula():
    torch.manual_seed(0)
    z_t = torch.randn(5, 4)
    zs = [torch.randn(5, 4), torch.randn(5, 4)]
    y = torch.tensor([0, 1, 2, 3, 0])
    total, logs = sftn_loss(z_t, zs, y, lam_t=1.0, lam_kl=3.0, lam_ce=0.5, temperature=2.0)
    # KL(q_R || q_T) = sum q_R (log q_R - log q_T), batch mean, times tau^2
    def kl(a, b, t):
        pa, pb = F.softmax(a / t, 1), F.softmax(b / t, 1)
        return (pa * (pa.log() - pb.log())).sum(1).mean() * t * t
    expected = (F.cross_entropy(z_t, y) + 3.0 * (kl(zs[0], z_t, 2.0) + kl(zs[1], z_t, 2.0)) / 2
                + 0.5 * (F.cross_entropy(zs[0], y) + F.cross_entropy(zs[1], y)) / 2)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert kl_branch_teacher(zs[0], z_t).item() == pytest.approx(
        F.kl_div(F.log_softmax(z_t, 1), F.softmax(zs[0], 1), reduction="batchmean").item(), rel=1e-6)
    assert set(logs) == {"teacher_ce", "branch_kl", "branch_ce"}


@pytest.fixture
def digits_gtn():
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    space = load_space("digits_small")
    cfg = GTNConfig()
    branched, gates = build_gtn(teacher, space, (1, 8, 8), cfg)
    return teacher, branched, gates, cfg


def test_gtn_structure_three_branches_over_the_supernet(digits_gtn):
    teacher, branched, gates, cfg = digits_gtn
    assert len(branched.branches) == 3
    assert len(gates) == 1  # phi shared by label across branches
    starts = [b.suffix.start for b in branched.branches]
    assert starts == [2, 4, 5]  # blocks 2-4, 3-4 and 4 of layers [[0,1],[2,3],[4],[5]]
    assert all(b.suffix.gates is gates[0] for b in branched.branches)
    z_t, zs = branched(torch.randn(3, 1, 8, 8)) if gates[0].sample() else (None, None)
    assert z_t.shape == (3, 10) and all(z.shape == (3, 10) for z in zs)


def _step(task, opts, batch, step):
    from nasdistill.engine.task import StepContext
    from nasdistill.engine.trainer import apply_step

    ctx = StepContext(epoch=0, step=step, step_in_epoch=step, device=torch.device("cpu"))
    out = task.training_step(batch, ctx)
    apply_step(task, opts, out, ctx)
    return out


def test_gtn_alternation_phi_on_odd_teacher_on_even(digits_gtn):
    teacher, branched, gates, cfg = digits_gtn
    task = GTNTask(branched, gates, cfg=cfg)
    opts = {"main": torch.optim.SGD(task.main_parameters(), lr=0.1, momentum=0.9),
            **task.extra_optimizers()}
    torch.manual_seed(1)
    batch = (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)), torch.arange(16))
    for step in range(6):
        t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
        phi_before = [p.detach().clone() for p in gates[0].parameters()]
        out = _step(task, opts, batch, step)
        t_changed = any(not torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())
        phi_changed = any(not torch.equal(a, b) for a, b in zip(phi_before, gates[0].parameters()))
        if step % 2 == 0:
            assert out.optimizer == "main" and t_changed and not phi_changed
        else:
            assert out.optimizer == "phi" and phi_changed and not t_changed
            assert out.loss.item() == pytest.approx(
                (out.logs["phi_ce"] - cfg.phi_alpha * out.logs["phi_kl"]).item(), rel=1e-5)


def test_teacher_features_receive_branch_gradients(digits_gtn):
    teacher, branched, gates, cfg = digits_gtn
    gates[0].sample()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    z_t, zs = branched(x)
    # only the branch cross-entropy: every gradient reaching the teacher came through F_T^i
    loss, _ = sftn_loss(z_t, zs, y, lam_t=0.0, lam_kl=0.0, lam_ce=1.0)
    loss.backward()
    assert teacher.stem[0].weight.grad is not None and teacher.stem[0].weight.grad.abs().sum() > 0
    g = teacher.classifier.weight.grad  # the teacher head only feeds z_T (weighted 0 here)
    assert g is None or torch.count_nonzero(g) == 0


def test_sftn_grafts_copies_of_a_space_student():
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    space = load_space("digits_small")
    student = space.build(space.sample(3))
    branched = graft_student(teacher, student, (1, 8, 8), n_blocks=3)
    assert len(branched.branches) == 2
    student_ptrs = {p.data_ptr() for p in student.parameters()}
    assert not student_ptrs & {p.data_ptr() for p in branched.branches.parameters()}
    z_t, zs = branched(torch.randn(2, 1, 8, 8))
    assert [z.shape for z in zs] == [(2, 10), (2, 10)]


@pytest.mark.parametrize("method,extra", [
    ("gtn", []),
    ("sftn", ["sftn.student.name=resnet8"]),
    ("sftn", ["sftn.student.space=digits_small",
              'sftn.student.arch={"layer1": "k3_d2", "layer2": "zero", "layer3": "identity", '
              '"layer4": "k3_d4", "layer5": "k5_d2", "layer6": "zero"}']),
])
def test_saved_teacher_is_the_plain_model(tmp_path, method, extra):
    out = tmp_path / method
    rc = main(["teacher", "examples/digits_teacher.yaml", f"method={method}", "train.epochs=1",
               "train.batch_size=128", "--out-dir", str(out), *extra])
    assert rc == 0
    saved = load_file(str(out / "model.safetensors"))
    plain = create_model("resnet8", num_classes=10, in_channels=1).state_dict()
    assert set(saved) == set(plain)
    assert all(saved[k].shape == plain[k].shape for k in plain)
    assert (out / "branches.safetensors").exists()
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert "branch1_acc" in metrics[-1]
    # the health check reads keys the run really logs (a missing key would check nothing)
    from nasdistill.teachers.sftn import BranchTeacherTask

    assert f"train_{BranchTeacherTask.ce_log}" in metrics[-1] and BranchTeacherTask.logit_std_metric in metrics[-1]
    assert json.loads((out / "result.json").read_text())["instability"] == []
    if method == "gtn":
        assert "phi_entropy" in metrics[-1] and "argmax_arch" in metrics[-1]
        phi = json.loads((out / "phi.json").read_text())
        assert set(phi["argmax_arch"]) == set(load_space("digits_small").labels)


def test_frozen_teacher_warmup_trains_only_the_branches():
    """EfficientNet recipe: for gtn.freeze_teacher_epochs the teacher (weights and BN statistics)
    stays fixed while transforms and supernet paths train; afterwards the teacher trains too."""
    from nasdistill.engine.task import StepContext

    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    cfg = GTNConfig(freeze_teacher_epochs=1)
    branched, gates = build_gtn(teacher, load_space("digits_small"), (1, 8, 8), cfg)
    task = GTNTask(branched, gates, cfg=cfg)
    opt = torch.optim.SGD(task.main_parameters(), lr=0.1, momentum=0.9)
    batch = (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)), torch.arange(16))
    for epoch, teacher_moves in ((0, False), (1, True)):
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        branch_before = [p.detach().clone() for p in branched.branches[2].transform.parameters()]
        out = task.training_step(batch, StepContext(epoch, 0, 0, torch.device("cpu")))
        assert out.optimizer == "main"
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        moved = any(not torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
        assert moved == teacher_moves
        assert any(not torch.equal(a, b) for a, b in zip(branch_before, branched.branches[2].transform.parameters()))


def test_phi_iteration_with_only_zero_ops_sampled_still_steps_phi(digits_gtn):
    """zero skips a layer (its output is its input), so a phi step whose every layer skips still
    estimates phi's gradient from the real outputs; the teacher and the weights do not move."""
    teacher, branched, gates, cfg = digits_gtn
    task = GTNTask(branched, gates, cfg=cfg)
    phi = gates[0]
    with torch.no_grad():  # make zero certain in every layer
        for label in phi.labels:
            phi.logits(label).fill_(-30.0)
            phi.logits(label)[phi.choices[label].index("zero")] = 30.0
    opts = {"main": torch.optim.SGD(task.main_parameters(), lr=0.1), **task.extra_optimizers()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)), torch.arange(8))
    out = _step(task, opts, batch, step=1)
    assert out.optimizer == "phi" and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in phi.parameters() if p.grad is not None)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
