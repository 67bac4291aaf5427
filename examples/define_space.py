"""Define a search space in Python, inspect it, and build one architecture as a plain model.

    python examples/define_space.py

Steps: register a custom candidate op, write the space, print its summary, sample and validate an
architecture, build it, and check the predicted cost (MACs, params) against the built model.
"""
import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasdistill.registry import register
from nasdistill.space import Layer, SearchSpace, resnet_choices


def sep_conv3(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Depthwise-separable 3x3 convolution: a custom candidate op."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())


# Without a cost function, nasdistill measures the op once per shape (params + FLOPs / 2).
register("op", "sep3", sep_conv3, description="separable 3x3 conv")

CANDIDATES = resnet_choices(kernels=(3, 5), depths=(2, 4)) + ["sep3", "identity", "zero"]

SPACE = SearchSpace(
    name="example_16px",
    input_size=(3, 16, 16),
    num_classes=10,
    stem_channels=16,
    layers=[
        Layer(16, 1, CANDIDATES),
        Layer(32, 2, CANDIDATES),
        Layer(32, 1, CANDIDATES),
        Layer(64, 2, ["k3_d2", "sep3", "zero"], label="last"),
    ],
    head_width=128,
)


def main() -> None:
    print(SPACE.summary())

    arch = SPACE.sample(seed=0)
    arch["layer2"] = "sep3"  # edit it by hand: an architecture is a plain dict label -> choice
    arch = SPACE.validate(json.loads(json.dumps(arch)))  # JSON round trip, then validation
    print("\narchitecture:", json.dumps(arch))
    print("id:", SPACE.arch_id(arch))
    print(SPACE.describe_arch(arch))

    try:
        SPACE.validate(dict(arch, last="k7_d2"))
    except ValueError as err:
        print("\nrejected as expected:", err)

    model = SPACE.build(arch).eval()
    x = torch.randn(2, *SPACE.input_size)
    with torch.no_grad():
        logits = model(x)
    print("\nlogits:", tuple(logits.shape))

    predicted = SPACE.cost(arch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *SPACE.input_size))
    measured = {"macs": counter.get_total_flops() // 2,
                "params": sum(p.numel() for p in model.parameters())}
    print(f"predicted cost: {predicted}\nmeasured cost:  {measured}")
    if predicted != measured:
        raise SystemExit("cost mismatch")
    print("cost check: OK")


if __name__ == "__main__":
    main()
