"""Ops build their own weight-sharing module and extract their own standalone module.

For every op (built-in, custom, and built-in families defined here, outside the package) and every
width that can arrive at a layer, the standalone module an op extracts from the supernet computes
exactly what the supernet's path computes, in eval and in train BatchNorm mode. A custom op gets one
set of weights for all widths where slicing its input channels is the op on the zero-padded input,
and one copy per width, with the reason, where it is not.
"""
import hashlib
import itertools
import re
import warnings
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasdistill.registry import register
from nasdistill.space import Layer, SearchSpace, get_op, load_space, resnet_choices
from nasdistill.space.blocks import ConvBNReLU
from nasdistill.space.description import describe_space, space_from_description
from nasdistill.space.ops import Op, conv_cost, conv_out
from nasdistill.supernet import Supernet
from nasdistill.space.elastic import ElasticOp, PerWidth
from nasdistill.supernet.gates import frozen_bn_stats


# ----------------------------------------------------------------------------- built-in op families
# defined outside the package: the space, the supernet and extraction must take them unedited
class DWSepBlock(nn.Module):
    """Depthwise kxk (stride) -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, kernel, stride, kernel // 2, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.pw(self.dw(x))))


class ElasticDWSep(DWSepBlock):
    """The op's own weight-sharing module: weights for the widest input, sliced per call."""

    def __init__(self, in_widths, cout, kernel, stride):
        super().__init__(max(in_widths), cout, kernel, stride)

    def forward(self, x):
        c = x.shape[1]
        y = F.conv2d(x, self.dw.weight[:c], None, self.dw.stride, self.dw.padding, groups=c)
        return torch.relu(self.bn(F.conv2d(y, self.pw.weight[:, :c])))


@register("op", "dws<kernel>")
@dataclass(frozen=True)
class DWSep(Op):
    """``dws{K}``: a depthwise-separable convolution with its own elastic module."""

    kernel: int = 3
    name_form: ClassVar[str] = "dws<kernel> (e.g. dws3)"
    name_examples: ClassVar[tuple] = ("dws3", "dws5")

    @classmethod
    def from_name(cls, name):
        m = re.fullmatch(r"dws(\d+)", name)
        return cls(name=name, kernel=int(m.group(1))) if m else None

    def output_shape(self, cin, cout, stride, hw):
        return cout, (conv_out(hw[0], self.kernel, stride), conv_out(hw[1], self.kernel, stride))

    def build(self, cin, cout, stride):
        return DWSepBlock(cin, cout, self.kernel, stride)

    def build_shared(self, in_widths, cout, stride):
        return ElasticDWSep(in_widths, cout, self.kernel, stride)

    def cost(self, cin, cout, stride, hw):
        oh, ow = self.output_shape(cin, cout, stride, hw)[1]
        k2 = self.kernel * self.kernel
        return k2 * cin * oh * ow + cin * cout * oh * ow, k2 * cin + cin * cout + 2 * cout


@register("op", "cbr<kernel>")
@dataclass(frozen=True)
class ConvBNReLUOp(Op):
    """``cbr{K}``: one ConvBNReLU; it leaves weight sharing to the default (Op.build_shared)."""

    kernel: int = 3
    name_form: ClassVar[str] = "cbr<kernel>"

    @classmethod
    def from_name(cls, name):
        m = re.fullmatch(r"cbr(\d+)", name)
        return cls(name=name, kernel=int(m.group(1))) if m else None

    def output_shape(self, cin, cout, stride, hw):
        return cout, (conv_out(hw[0], self.kernel, stride), conv_out(hw[1], self.kernel, stride))

    def build(self, cin, cout, stride):
        return ConvBNReLU(cin, cout, self.kernel, stride)

    def cost(self, cin, cout, stride, hw):
        macs, params, _ = conv_cost(cin, cout, self.kernel, stride, hw)
        return macs, params


# ----------------------------------------------------------------------------- custom ops
def sep_conv(cin, cout, stride):  # first layer reads every input channel: shares one set of weights
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def bn_first(cin, cout, stride):  # BN turns zero padding into a signal: cannot share
    return nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False))


def expand(cin, cout, stride):  # inner width 2*cin: the narrow op is not the widest one on padding
    return nn.Sequential(nn.Conv2d(cin, 2 * cin, 1, bias=False), nn.BatchNorm2d(2 * cin), nn.ReLU(),
                         nn.Conv2d(2 * cin, cout, 3, stride, 1, bias=False))


class ProjectWhenNeeded(nn.Module):  # other submodules for other widths: cannot share
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.proj = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.conv(x) + self.proj(x)


register("op", "tshared_sep", sep_conv)
register("op", "tshared_bnfirst", bn_first)
register("op", "tshared_expand", expand)
register("op", "tshared_proj", ProjectWhenNeeded)

GTN_LIKE_EXTRA = ["dws3", "cbr3", "tshared_sep", "tshared_bnfirst", "tshared_expand"]


def gtn_like() -> SearchSpace:
    """gtn_cifar's layers with widths / 8 (the same strides, skips and arriving widths) plus the
    custom ops and the test's built-in families."""
    candidates = resnet_choices(kernels=(3, 5), depths=(2, 4, 6)) + ["identity", "zero"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SearchSpace(
            name="gtn_like", input_size=(3, 16, 16), num_classes=10, stem_channels=2,
            layers=[Layer(w, s, candidates + GTN_LIKE_EXTRA, label=f"layer{i + 1}")
                    for i, (w, s) in enumerate(zip((8, 8, 16, 16, 32, 64), (1, 1, 2, 1, 2, 2)))],
            head_width=160)


def supernet(space) -> Supernet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the per-width fallbacks warn; tested below
        return Supernet(space)


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Random weights and BatchNorm statistics (fresh BN would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
        for b in module.buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def storages(module: nn.Module) -> set:
    """The storages of ``module``'s parameters and buffers (not ``state_dict()``: an extra state,
    like the gates' generator, is serialized into a fresh tensor each call, freed at once, and its
    address may be handed to the next tensor allocated)."""
    return {t.untyped_storage().data_ptr() for t in itertools.chain(module.parameters(), module.buffers())}


# ----------------------------------------------------------------------------- every op, every width
@pytest.mark.parametrize("space_name", ["digits_small", "gtn_like"])
def test_every_op_extracts_the_supernet_path_at_every_arriving_width(space_name):
    space = load_space("digits_small") if space_name == "digits_small" else gtn_like()
    torch.manual_seed(0)
    sn = supernet(space)
    randomize(sn)
    arriving = space.arriving_states(0, space.stem_shape())
    supernet_storages = storages(sn)
    checked = set()
    for training in (False, True):
        sn.train(training)
        for i, mixed in enumerate(sn.stages):
            out, stride = space.layers[i].out_channels, space.layers[i].stride
            widths = sorted({c for c, _ in arriving[i]})
            for j, (name, op) in enumerate(space.layer_ops(i).items()):
                shared = mixed.ops[name]
                for c, hw in sorted(arriving[i]):
                    x = torch.randn(4, c, *hw, generator=torch.Generator().manual_seed(i * 100 + c))
                    plain = op.extract(shared, c, out, stride).train(training)
                    with torch.no_grad():
                        path, standalone = mixed.run_candidate(j, x), plain(x)
                    where = f"layer {i + 1}, {name}, {c} channels, {'train' if training else 'eval'}"
                    assert torch.equal(path, standalone), where
                    assert not any("supernet" in type(m).__module__ for m in plain.modules()), where
                    if not training:
                        assert not storages(plain) & supernet_storages, where
                        assert set(plain.state_dict()) == set(op.build(c, out, stride).state_dict()), where
                    else:
                        # the running statistics the path updated are the ones extraction copies
                        again = op.extract(shared, c, out, stride).state_dict()
                        for key, value in plain.state_dict().items():
                            assert torch.equal(again[key], value), (where, key)
                    checked.add((name, c, training))
                if name == "tshared_sep" or (name == "cbr3" and len(widths) > 1):
                    assert isinstance(shared, ElasticOp), (i, name)
                if name in ("tshared_bnfirst", "tshared_expand"):
                    assert isinstance(shared, PerWidth) == (len(widths) > 1), (i, name)
    if space_name == "gtn_like":  # several widths arrive at most layers, every op ran on each
        assert {c for n, c, t in checked if n == "tshared_sep" and t} == {2, 8, 16, 32}


def test_whole_extracted_networks_equal_the_supernet_paths():
    space = gtn_like()
    torch.manual_seed(1)
    sn = supernet(space)
    randomize(sn, 1)
    x = torch.randn(3, *space.input_size)
    archs = [space.sample(seed) for seed in range(8)]
    archs.append({label: "tshared_sep" for label in space.labels})
    archs.append({label: "tshared_bnfirst" for label in space.labels})
    archs.append({label: "dws3" if k % 2 else "zero" for k, label in enumerate(space.labels)})
    for training in (False, True):
        for arch in archs:
            sn.train(training)
            sn.set_arch(arch)
            model = sn.extract(arch).train(training)
            with torch.no_grad():
                assert torch.equal(sn(x), model(x)), (arch, training)
    sn.set_arch(None)


# ----------------------------------------------------------------------------- one set of weights
def test_a_custom_op_shares_one_set_of_weights_across_widths():
    op = get_op("tshared_sep")
    shared = op.build_shared([4, 6, 10], 12, 2)
    assert isinstance(shared, ElasticOp)
    widest = op.build(10, 12, 2)
    assert set(shared.state_dict()) == {f"widest.{k}" for k in widest.state_dict()}
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in widest.parameters())
    randomize(shared)
    six_before = op.extract(shared, 6, 12, 2)

    # a step on the 4-channel path moves the leading slices of the one set of weights
    x = torch.randn(3, 4, 8, 8)
    plain = op.extract(shared, 4, 12, 2)
    shared(x).square().sum().backward()
    plain(x).square().sum().backward()
    for (name, p), q in zip(shared.widest.named_parameters(), plain.parameters()):
        lead = tuple(slice(0, n) for n in q.shape)
        assert torch.equal(p.grad[lead], q.grad), name
        rest = p.grad.clone()
        rest[lead] = 0
        assert not rest.any(), f"{name}: a 4-channel input moved weights it does not read"
    with torch.no_grad():
        for p in shared.parameters():
            p -= 0.1 * p.grad
    # the 6-channel op reads the depthwise filters the 4-channel step changed, and only those
    six_after = op.extract(shared, 6, 12, 2)
    assert not torch.equal(six_after[1].weight[:4], six_before[1].weight[:4])
    assert torch.equal(six_after[1].weight[4:], six_before[1].weight[4:])
    x6 = torch.randn(3, 6, 8, 8)
    assert torch.equal(six_after.train()(x6), shared.train()(x6))


def test_narrow_paths_follow_the_widest_modules_settings():
    """train/eval and BatchNorm momentum of the shared module reach the narrow paths: frozen
    statistics (the gate backward's recompute) stay frozen, eval mode reads running statistics."""
    op = get_op("cbr3")
    shared = op.build_shared([3, 5], 8, 1)
    randomize(shared)
    bn = shared.widest[1]
    x = torch.randn(2, 3, 6, 6)
    shared.train()
    stats = [b.clone() for b in bn.buffers()]
    with frozen_bn_stats(shared), torch.no_grad():
        shared(x)
    assert all(torch.equal(a, b) for a, b in zip(stats, bn.buffers()))
    with torch.no_grad():
        shared(x)
    assert not torch.equal(stats[0], bn.running_mean)  # unfrozen: updated through the narrow path
    shared.eval()
    y = shared(x)
    assert torch.equal(y, shared(x))  # eval: no batch statistics, no updates
    assert torch.equal(y, op.extract(shared, 3, 8, 1).eval()(x))


# ----------------------------------------------------------------------------- fallback
@pytest.mark.parametrize("name, why", [("tshared_bnfirst", "zero-padded"),
                                       ("tshared_expand", "zero-padded"),
                                       ("tshared_proj", "other submodules")])
def test_an_op_that_cannot_be_sliced_keeps_one_copy_per_width_and_says_why(name, why):
    register("op", name, get_op(name).builder)  # a fresh registration: the check runs again
    op = get_op(name)
    with pytest.warns(UserWarning, match=f"{name}.*separate weights") as record:
        shared = op.build_shared([4, 8], 8, 1)
    assert isinstance(shared, PerWidth) and why in shared.reason and why in str(record[0].message)
    # the keys of per-width copies are the ones supernets have always written
    assert {k.split(".")[1] for k in shared.state_dict()} == {"w4", "w8"}
    randomize(shared)
    for c in (4, 8):
        x = torch.randn(2, c, 6, 6)
        for training in (False, True):
            shared.train(training)
            assert torch.equal(shared(x), op.extract(shared, c, 8, 1).train(training)(x))


def test_one_arriving_width_needs_no_check():
    register("op", "tshared_bnfirst_single", bn_first)
    op = get_op("tshared_bnfirst_single")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shared = op.build_shared([6], 8, 1)
    assert isinstance(shared, ElasticOp) and set(shared.in_widths) == {6}


# ----------------------------------------------------------------------------- compatibility
def test_builtin_ops_keep_their_parameter_names():
    """Supernet and extracted state_dict keys (and shapes) of the built-in ops are the ones
    earlier versions wrote: existing checkpoints load."""
    space = load_space("digits_small")
    torch.manual_seed(0)
    sn = Supernet(space)
    items = sorted((k, tuple(v.shape)) for k, v in sn.state_dict().items())
    assert hashlib.sha1(repr(items).encode()).hexdigest() == "f348b4d78aecc60732af875f90710e0fbfdfa518"
    assert "stages.2.ops.k3_d2.0.shortcut.0.weight" in sn.state_dict()
    model = sn.extract({"layer1": "k3_d4", "layer2": "zero", "layer3": "zero", "layer4": "k3_d4",
                        "layer5": "k5_d2", "layer6": "zero"})
    items = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    assert hashlib.sha1(repr(items).encode()).hexdigest() == "5e9e958e4670ad2f725909bf3d6fa9aca46ecb1c"


def test_extraction_leaves_the_global_rng_as_building_the_space_does():
    space = load_space("digits_small")
    sn = Supernet(space)
    arch = space.sample(3)
    torch.manual_seed(5)
    space.build(arch)
    expected = torch.rand(3)
    torch.manual_seed(5)
    sn.extract(arch)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- a new built-in op
def test_a_builtin_op_defined_outside_the_package_works_everywhere():
    assert get_op("dws5") == DWSep(name="dws5", kernel=5)
    with pytest.raises(ValueError, match="reserved"):
        register("op", "dws3", sep_conv)
    with pytest.raises(ValueError, match="dws<kernel>"):
        get_op("dws")  # the error lists the family's names
    space = SearchSpace(name="new_ops", input_size=(1, 8, 8), num_classes=4, stem_channels=4,
                        layers=[Layer(8, 1, ["dws3", "cbr3", "zero"]),
                                Layer(12, 2, ["dws5", "cbr1", "zero"])],
                        head_width=None)
    rebuilt = space_from_description(describe_space(space))
    assert rebuilt.layer_ops(1)["dws5"] == DWSep(name="dws5", kernel=5)
    sn = Supernet(space)
    assert isinstance(sn.stages[1].ops["dws5"], ElasticDWSep)  # the op's own sharing module
    assert isinstance(sn.stages[1].ops["cbr1"], ElasticOp)      # the default one
    randomize(sn)
    x = torch.randn(3, 1, 8, 8)
    for arch in space.architectures():
        built = space.build(arch)
        assert sum(p.numel() for p in built.parameters()) == space.cost(arch)["params"]
        for training in (False, True):
            sn.train(training)
            sn.set_arch(arch)
            model = sn.extract(arch).train(training)
            with torch.no_grad():
                assert torch.equal(sn(x), model(x)), arch
    sn.set_arch(None)
