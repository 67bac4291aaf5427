"""GTN's exploration of the student pool: the measurements, the mechanisms that keep the gates
balanced, the collapse warning, and branch accuracies with recalibrated BatchNorm."""
import math

import pytest
import torch

from nasdistill.models import create_model
from nasdistill.space import load_space
from nasdistill.teachers.exploration import (ExplorationMonitor, kl_to_uniform, param_free_choices,
                                             project)
from nasdistill.teachers.gtn import GTNConfig, GTNTask, build_gtn


@pytest.fixture
def space():
    return load_space("digits_small")


def entropy(p):
    return float(-(p * p.log()).sum())


def test_parameter_free_choices_are_those_without_parameters(space):
    for label in space.labels:
        assert param_free_choices(space, label) == ["identity", "zero"]


def test_kl_to_uniform_is_ln_k_minus_entropy(space):
    from nasdistill.supernet import ArchGates

    g = ArchGates(space)
    with torch.no_grad():
        g.logits("layer3").copy_(torch.tensor([2.0, -1.0, 0.5, 0.0, 3.0]))
    expected = 0.0
    for label in ["layer3", "layer4"]:
        p = torch.softmax(g.logits(label).detach(), 0)
        expected += math.log(5) - entropy(p)
    assert float(kl_to_uniform(g, ["layer3", "layer4"]).detach()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("logits", [[8.0, 0.0, 0.0, 6.0, 6.0], [0.0, 0.0, 0.0, 9.0, 9.0],
                                    [12.0, -3.0, 0.0, 1.0, 0.0], [0.1, 0.0, -0.1, 0.2, 0.0]])
def test_projection_meets_the_floor_and_the_cap_and_changes_nothing_that_meets_them(space, logits):
    from nasdistill.supernet import ArchGates

    g = ArchGates(space)
    with torch.no_grad():
        g.logits("layer3").copy_(torch.tensor(logits))
    before = g.logits("layer3").detach().clone()
    p0 = torch.softmax(before, 0)
    met = entropy(p0) >= 0.6 * math.log(5) and float(p0[3:].sum()) <= 0.5
    project(g, ["layer3"], 0.6, 0.5, {"layer3": ["identity", "zero"]})
    p = torch.softmax(g.logits("layer3").detach(), 0)
    assert entropy(p) >= 0.6 * math.log(5) - 1e-4 and float(p[3:].sum()) <= 0.5 + 1e-5
    if met:
        assert torch.equal(g.logits("layer3").detach(), before)
    else:  # the order of preference among the choices is kept
        assert torch.equal(torch.argsort(p[:3]), torch.argsort(p0[:3]))


def test_monitor_measures_entropy_mass_and_sampled_macs(space):
    from nasdistill.supernet import ArchGates

    g = ArchGates(space)
    monitor = ExplorationMonitor(space, ["layer3", "layer4"], pool_samples=200)
    for seed in range(10):
        monitor.record(space.sample(seed=seed))
    row = monitor.epoch_metrics(g)
    assert row["phi_entropy"] == pytest.approx(math.log(5)) and row["param_free_mass"] == pytest.approx(0.4)
    macs = sorted(space.cost(space.sample(seed=s))["macs"] for s in range(10))
    assert row["sampled_macs_q50"] == pytest.approx((macs[4] + macs[5]) / 2)
    assert row["pool_macs_q25"] < row["pool_macs_q50"] < row["pool_macs_q75"]
    assert "sampled_macs_q50" not in monitor.epoch_metrics(g)  # reset after each epoch
    with torch.no_grad():
        g.logits("layer4")[4] = 9.0
    assert any("layer4 parameter-free mass" in m for m in monitor.collapsed(g, 0.5, 0.6))


def _task(cfg):
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    branched, gates = build_gtn(teacher, load_space("digits_small"), (1, 8, 8), cfg)
    return GTNTask(branched, gates, cfg)


def test_default_gates_stay_within_bounds_under_a_collapsing_push():
    """Whatever the phi gradient does, after each phi step of the default configuration every
    used label keeps H >= 0.6 ln K and a parameter-free mass <= 0.5."""
    from nasdistill.engine.task import StepContext
    from nasdistill.engine.trainer import apply_step

    cfg = GTNConfig(phi_lr=0.5)  # a large step: each phi update would collapse the gates
    task = _task(cfg)
    g = task.gates[0]
    with torch.no_grad():
        for label in task.used_labels:
            g.logits(label)[g.choices[label].index("zero")] = 6.0
    opts = {"main": torch.optim.SGD(task.main_parameters(), lr=0.01), **task.extra_optimizers()}
    batch = (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)), torch.arange(16))
    for step in range(6):
        ctx = StepContext(0, step, step, torch.device("cpu"))
        apply_step(task, opts, task.training_step(batch, ctx), ctx)
        if not task.is_phi_step(step):
            continue
        for h, lnk, mass in task.monitors[0].label_stats(g).values():
            assert h >= 0.6 * lnk - 1e-4 and mass <= 0.5 + 1e-5


def test_without_mechanisms_the_same_push_collapses_and_is_reported():
    cfg = GTNConfig(entropy_floor=None, param_free_cap=None)
    task = _task(cfg)
    g = task.gates[0]
    with torch.no_grad():
        for label in task.used_labels:
            g.logits(label)[g.choices[label].index("zero")] = 6.0
    problems = task.monitors[0].collapsed(g, cfg.collapse_entropy, cfg.collapse_mass)
    assert len(problems) >= len(task.used_labels)


def test_branch_accuracy_uses_recalibrated_statistics_on_a_copy():
    """Each branch's BatchNorm statistics are re-estimated on training batches for the path being
    evaluated, on a copy: the recalibrated running mean equals the batch mean of the branch's
    input to that BatchNorm, and the model itself is untouched."""
    from nasdistill.teachers.branch_eval import _recalibrate_branches

    cfg = GTNConfig()
    task = _task(cfg)
    branched = task.branched
    arch = task.gates[0].export()
    task.gates[0].use_path(arch)
    before = {k: v.clone() for k, v in branched.state_dict().items()}
    torch.manual_seed(1)
    x = torch.randn(32, 1, 8, 8)
    import copy

    model = copy.deepcopy(branched).eval()
    _recalibrate_branches(model, [(x,)], 1, before_batch=lambda m: m.branches[0].suffix.gates.use_path(arch))
    transform_bn = model.branches[0].transform[1]
    with torch.no_grad():
        feats, _ = model.teacher_features(x)
        conv_out = model.branches[0].transform[0](feats[0])
    assert torch.allclose(transform_bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert all(torch.equal(v, branched.state_dict()[k]) for k, v in before.items())
