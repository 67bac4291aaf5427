"""The GTN paper's supernet space (GTN supplement, section 1; REFERENCE.md section 1).

Stem ConvLayer 3->16 k3 s1, six reconfigurable layers of widths 64, 64, 128, 128, 256, 512 and
strides 1, 1, 2, 1, 2, 2, each choosing among ResNet block stacks (kernel 3 or 5, 2/4/6
convolutions), identity and zero; head ConvLayer ->1280 k1, Linear 1280->classes.
The three NAS-discovered students of the supplement's Tables 1-3 are points of this space.
"""
from nasdistill.space import Layer, SearchSpace, resnet_choices

CANDIDATES = resnet_choices(kernels=(3, 5), depths=(2, 4, 6)) + ["identity", "zero"]
WIDTHS = (64, 64, 128, 128, 256, 512)
STRIDES = (1, 1, 2, 1, 2, 2)


def make_space(num_classes: int = 100, input_size=(3, 32, 32)) -> SearchSpace:
    """The GTN space for ``num_classes`` classes and ``input_size`` inputs."""
    return SearchSpace(
        name="gtn_cifar",
        input_size=tuple(input_size),
        num_classes=num_classes,
        stem_channels=16,
        stem_kernel=3,
        stem_stride=1,
        layers=[Layer(w, s, CANDIDATES, label=f"layer{i + 1}")
                for i, (w, s) in enumerate(zip(WIDTHS, STRIDES))],
        head_width=1280,
    )


SPACE = make_space()

# Table 1: s_nas^s (layers 2, 4 and 6 skipped; the head reads 256 channels).
S_NAS_S = {"layer1": "k3_d2", "layer2": "zero", "layer3": "k3_d2",
           "layer4": "zero", "layer5": "k3_d2", "layer6": "zero"}
# Table 2: s_nas^m (layer 4 skipped).
S_NAS_M = {"layer1": "k3_d4", "layer2": "k3_d2", "layer3": "k5_d4",
           "layer4": "zero", "layer5": "k3_d2", "layer6": "k3_d2"}
# Table 3: s_nas^l (every layer three blocks, but the first two).
S_NAS_L = {"layer1": "k3_d4", "layer2": "k3_d6", "layer3": "k3_d6",
           "layer4": "k3_d6", "layer5": "k3_d6", "layer6": "k3_d6"}
