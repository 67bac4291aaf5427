"""A small space for 8x8 single-channel inputs (scikit-learn digits): trains in seconds on a CPU.

Same shape of space as ``gtn_cifar`` (six layers, ResNet stacks, identity, zero), narrower.
"""
from nasdistill.space import Layer, SearchSpace

CANDIDATES = ["k3_d2", "k3_d4", "k5_d2", "identity", "zero"]
WIDTHS = (16, 16, 32, 32, 64, 64)
STRIDES = (1, 1, 2, 1, 2, 1)


def make_space(num_classes: int = 10, input_size=(1, 8, 8)) -> SearchSpace:
    return SearchSpace(
        name="digits_small",
        input_size=tuple(input_size),
        num_classes=num_classes,
        stem_channels=16,
        layers=[Layer(w, s, CANDIDATES, label=f"layer{i + 1}")
                for i, (w, s) in enumerate(zip(WIDTHS, STRIDES))],
        head_width=128,
    )


SPACE = make_space()
