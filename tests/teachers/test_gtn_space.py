"""The GTN space and its three NAS-discovered students against the supplement's Tables 1-3.

The expected sequences are transcribed from ``papers/gtn_supplement.md``. Reading of the tables
(REFERENCE.md section 1):

- "ConvLayer 3 16 3 1" is the stem.
- "ResBlock (xN) in out k s" is N ResNet basic blocks; each block is two kxk convolutions
  (in, out, k, s) then (out, out, k, 1); the first block carries the stride and in->out, the
  other blocks are (out, out, k, 1) twice.
- "IdentityLayer" rows are printed shortcuts, not layers: they hold no convolution. In Table 3 the
  row "IdentityLayer 64 128" followed by "ResBlock (x3) 128 128 3 2" is the stack whose input
  arrives with 64 channels: the identity row prints its 64->128 shortcut, so the first block's
  first convolution is (64, 128, 3, 2).
- Skipped layers (s_nas^s: layers 2, 4, 6; s_nas^m: layer 4) do not appear at all; the next stack
  reads the width that arrives.
"""
import pytest
import torch
from torch import nn

from search_spaces import gtn_cifar
from search_spaces.gtn_cifar import S_NAS_L, S_NAS_M, S_NAS_S, SPACE

STEM = ("stem", 3, 16, 3, 1)

# (row name, in, out, kernel, stride, number of basic blocks), one entry per ResBlock row.
TABLE_1_S = [
    STEM,
    # IdentityLayer 16 16 (printed shortcut)
    ("ResBlock", 16, 64, 3, 1, 1),
    ("ResBlock", 64, 128, 3, 2, 1),
    ("ResBlock", 128, 256, 3, 2, 1),
]
TABLE_2_M = [
    STEM,
    # IdentityLayer 16 16 (printed shortcut)
    ("ResBlock (x2)", 16, 64, 3, 1, 2),
    ("ResBlock", 64, 64, 3, 1, 1),
    # IdentityLayer 64 64 (printed shortcut)
    ("ResBlock (x2)", 64, 128, 5, 2, 2),
    ("ResBlock", 128, 256, 3, 2, 1),
    ("ResBlock", 256, 512, 3, 2, 1),
]
TABLE_3_L = [
    STEM,
    # IdentityLayer 16 16 (printed shortcut)
    ("ResBlock (x2)", 16, 64, 3, 1, 2),
    # IdentityLayer 64 64 (printed shortcut)
    ("ResBlock (x3)", 64, 64, 3, 1, 3),
    # IdentityLayer 64 128, then "ResBlock (x3) 128 128 3 2": 64 channels arrive; the identity
    # row is the 64->128 shortcut of the first block, so that block's first conv reads 64.
    ("ResBlock (x3)", 64, 128, 3, 2, 3),
    # IdentityLayer 128 128 (printed shortcut)
    ("ResBlock (x3)", 128, 128, 3, 1, 3),
    ("ResBlock (x3)", 128, 256, 3, 2, 3),
    ("ResBlock (x3)", 256, 512, 3, 2, 3),
]

STUDENTS = {
    "s_nas^s (Table 1)": (S_NAS_S, TABLE_1_S, 256),
    "s_nas^m (Table 2)": (S_NAS_M, TABLE_2_M, 512),
    "s_nas^l (Table 3)": (S_NAS_L, TABLE_3_L, 512),
}


def expand(rows):
    """The kxk convolutions (in, out, k, s) of table rows, ResBlocks expanded to basic blocks."""
    convs = []
    for row in rows:
        if row[0] == "stem":
            convs.append(row[1:])
            continue
        _, cin, cout, k, s, blocks = row
        for b in range(blocks):
            first_in, first_stride = (cin, s) if b == 0 else (cout, 1)
            convs += [(first_in, cout, k, first_stride), (cout, cout, k, 1)]
    return convs


def forward_trace(model: nn.Module, input_size):
    """Conv2d and Linear modules in the order the forward pass calls them."""
    calls = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: calls.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_size, device="meta"))
    for h in hooks:
        h.remove()
    return calls


def test_expansion_of_the_tables_counts_blocks():
    # Table 3: stem + 2 + 3 + 3 + 3 + 3 + 3 blocks of two convs.
    assert len(expand(TABLE_3_L)) == 1 + 2 * (2 + 3 * 5)
    assert expand([("ResBlock (x2)", 16, 64, 5, 2, 2)]) == [
        (16, 64, 5, 2), (64, 64, 5, 1), (64, 64, 5, 1), (64, 64, 5, 1)]


@pytest.mark.parametrize("name", list(STUDENTS))
def test_nas_student_matches_supplement_table(name):
    arch, rows, head_in = STUDENTS[name]
    with torch.device("meta"):  # structure only: no weight initialisation
        model = SPACE.build(arch)
    calls = forward_trace(model, SPACE.input_size)

    convs = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])
             for m in calls if isinstance(m, nn.Conv2d) and m.kernel_size[0] in (3, 5)]
    assert convs == expand(rows)

    # after the last kxk conv: the 1x1 ConvLayer into 1280 reading the table's width, then Linear
    last_kxk = max(i for i, m in enumerate(calls)
                   if isinstance(m, nn.Conv2d) and m.kernel_size[0] in (3, 5))
    tail = calls[last_kxk + 1:]
    head_convs = [m for m in tail if isinstance(m, nn.Conv2d) and m.out_channels == 1280]
    assert len(head_convs) == 1
    head = head_convs[0]
    assert (head.in_channels, head.kernel_size, head.stride) == (head_in, (1, 1), (1, 1))
    assert isinstance(calls[-1], nn.Linear)
    assert (calls[-1].in_features, calls[-1].out_features) == (1280, 100)
    assert calls.index(head) < len(calls) - 1
    # only shortcut 1x1 convs besides the head; every kxk conv is 3x3 or 5x5
    assert all(m.kernel_size[0] in (1, 3, 5) for m in calls if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", list(STUDENTS))
def test_describe_arch_prints_table_rows(name):
    arch, rows, head_in = STUDENTS[name]
    table = SPACE.describe_arch(arch)
    lines = table.splitlines()
    assert lines[1].split() == ["ConvLayer", "3", "16", "3", "1"]
    assert lines[-2].split() == ["ConvLayer", str(head_in), "1280", "1", "1"]
    assert lines[-1].split() == ["LinearLayer", "1280", "100", "-", "-"]


def test_students_are_distinct_valid_points_of_the_space():
    ids = {SPACE.arch_id(SPACE.validate(a)) for a in (S_NAS_S, S_NAS_M, S_NAS_L)}
    assert len(ids) == 3


def test_space_facts():
    assert SPACE.input_size == (3, 32, 32)
    assert SPACE.num_classes == 100
    assert [layer.out_channels for layer in SPACE.layers] == [64, 64, 128, 128, 256, 512]
    assert [layer.stride for layer in SPACE.layers] == [1, 1, 2, 1, 2, 2]
    for label in SPACE.labels:
        assert set(SPACE.choices(label)) == {"k3_d2", "k3_d4", "k3_d6", "k5_d2", "k5_d4", "k5_d6",
                                             "identity", "zero"}
    assert SPACE.size() == 108_549


def test_make_space_for_other_class_counts_and_inputs():
    space = gtn_cifar.make_space(num_classes=200, input_size=(3, 64, 64))
    model = space.build(S_NAS_S).eval()
    assert model.classifier.out_features == 200
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 200)
    assert space.cost(S_NAS_S)["params"] == sum(p.numel() for p in model.parameters())
