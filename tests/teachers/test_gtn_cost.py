"""Where GTN's time goes: the arithmetic `nasdistill bench teachers --main-job` reports, checked
against the space's own cost model."""
import torch
from torch import nn

from nasdistill.bench.teachers import branch_arithmetic
from nasdistill.models import create_model
from nasdistill.space import load_space
from nasdistill.teachers.gtn import GTNConfig, GTNTask, build_gtn


def conv_macs(module: nn.Module, x: torch.Tensor) -> int:
    """MACs of the plain convolutions of ``module`` on one image, from their shapes."""
    total = 0

    def hook(m, inputs, output):
        nonlocal total
        total += output[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return total


def test_branch_arithmetic_is_the_cost_model_of_the_sampled_path():
    """phi all on one path (no skipped layer, so every layer sees its nominal width): the branches'
    MACs are each branch's transform plus the space's analytical cost of the layers it runs and
    the head; the teacher's are its convolutions' plus the classifier's."""
    torch.manual_seed(0)
    space = load_space("digits_small", 10, (1, 8, 8))
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    branched, gates = build_gtn(teacher, space, (1, 8, 8), GTNConfig())
    task = GTNTask(branched, gates, GTNConfig())
    arch = {label: "k3_d2" for label in space.labels}
    with torch.no_grad():
        for label in space.labels:
            logits = gates[0].logits(label)
            logits.fill_(-60.0)
            logits[space.choices(label).index(arch[label])] = 60.0
    teacher_macs, branch_macs = branch_arithmetic(task, samples=2)

    x = torch.randn(1, 1, 8, 8)
    branched.eval()
    linear = sum(m.in_features * m.out_features for m in teacher.modules() if isinstance(m, nn.Linear))
    assert teacher_macs == conv_macs(teacher, x) + linear
    layers = space.resolve(arch)
    feats, _ = branched.teacher_features(x)
    expected = 0
    for i, branch in enumerate(branched.branches):
        start = branch.suffix.start
        expected += conv_macs(branch.transform, feats[i])
        expected += sum(r.op.cost(r.in_channels, space.layers[r.index].out_channels, r.stride, r.in_hw)[0]
                        for r in layers if r.index >= start)
        expected += space.head_cost(layers[-1].out_channels, layers[-1].out_hw)[0]
    assert branch_macs == expected > 2 * teacher_macs
