"""The search-space DSL: cost, sampling, validation, ids, size, building, export, custom ops."""
import json
import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasdistill.registry import register
from nasdistill.space import Layer, SearchSpace, get_op
from search_spaces import digits_small, gtn_cifar

DIGITS = digits_small.SPACE
GTN = gtn_cifar.SPACE
STUDENTS = [gtn_cifar.S_NAS_S, gtn_cifar.S_NAS_M, gtn_cifar.S_NAS_L]


def uniform(space, choice):
    return {label: choice for label in space.labels}


def measure(space, arch, device="cpu"):
    """Params of the built model and torch.utils.flop_counter FLOPs / 2 on one eval-mode input."""
    with torch.device(device):
        model = space.build(arch)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *space.input_size, device=device))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return {"macs": flops // 2, "params": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- cost
@pytest.mark.parametrize("seed", range(12))
def test_cost_equals_built_model_digits(seed):
    arch = DIGITS.sample(seed=seed)
    assert DIGITS.cost(arch) == measure(DIGITS, arch)


@pytest.mark.parametrize("arch", [GTN.sample(seed=s) for s in range(12)] + STUDENTS
                         + [uniform(GTN, "zero"), uniform(GTN, "identity"), uniform(GTN, "k5_d6")])
def test_cost_equals_built_model_gtn(arch):
    # shapes alone determine params and FLOPs: build on the meta device to skip weight init
    assert GTN.cost(arch) == measure(GTN, arch, device="meta")


def test_cost_equals_real_cpu_build_for_one_gtn_student():
    assert GTN.cost(gtn_cifar.S_NAS_S) == measure(GTN, gtn_cifar.S_NAS_S)


def test_cost_range_equals_brute_force_on_digits():
    costs = [DIGITS.cost(a) for a in DIGITS.architectures()]
    assert len(costs) == 5 ** 6
    rng = DIGITS.cost_range()
    assert rng["macs_min"] == min(c["macs"] for c in costs)
    assert rng["macs_max"] == max(c["macs"] for c in costs)
    assert rng["params_min"] == min(c["params"] for c in costs)
    assert rng["params_max"] == max(c["params"] for c in costs)


# ----------------------------------------------------------------------------- sampling
def test_sample_is_deterministic_per_seed():
    other = digits_small.make_space()  # a fresh, equal space object
    for seed in range(10):
        assert DIGITS.sample(seed=seed) == DIGITS.sample(seed=seed) == other.sample(seed=seed)
        assert GTN.sample(seed=seed) == GTN.sample(seed=seed)


def test_different_seeds_give_different_archs():
    assert len({json.dumps(DIGITS.sample(seed=s), sort_keys=True) for s in range(5)}) > 1
    assert len({json.dumps(GTN.sample(seed=s), sort_keys=True) for s in range(5)}) > 1


def test_samples_are_valid_json_archs():
    for seed in range(20):
        arch = GTN.sample(seed=seed)
        assert list(arch) == GTN.labels
        assert GTN.validate(json.loads(json.dumps(arch))) == arch


# ----------------------------------------------------------------------------- validation
def test_validate_returns_plain_dict_in_label_order():
    arch = dict(reversed(list(gtn_cifar.S_NAS_M.items())))
    out = GTN.validate(arch)
    assert type(out) is dict and list(out) == GTN.labels and out == gtn_cifar.S_NAS_M


def test_validate_unknown_label_names_it_and_the_valid_labels():
    arch = dict(gtn_cifar.S_NAS_S, layer7="k3_d2")
    with pytest.raises(ValueError) as err:
        GTN.validate(arch)
    msg = str(err.value)
    assert "'layer7'" in msg and all(label in msg for label in GTN.labels)


def test_validate_bad_choice_names_label_value_and_allowed_choices():
    arch = dict(gtn_cifar.S_NAS_S, layer3="k7_d2")
    with pytest.raises(ValueError) as err:
        GTN.validate(arch)
    msg = str(err.value)
    assert "'layer3'" in msg and "k7_d2" in msg
    assert all(repr(c) in msg for c in GTN.choices("layer3"))


@pytest.mark.parametrize("value", [3, None, ["k3_d2"], "K3_D2", " k3_d2", ""])
def test_validate_rejects_non_choices(value):
    with pytest.raises(ValueError, match="layer2"):
        DIGITS.validate(dict(DIGITS.sample(seed=0), layer2=value))


def test_validate_missing_label_names_it_and_allowed_choices():
    arch = dict(gtn_cifar.S_NAS_L)
    del arch["layer5"]
    with pytest.raises(ValueError) as err:
        GTN.validate(arch)
    msg = str(err.value)
    assert "'layer5'" in msg and "missing" in msg
    assert all(repr(c) in msg for c in GTN.choices("layer5"))


@pytest.mark.parametrize("junk", [None, "k3_d2", ["k3_d2"] * 6, 3, (("layer1", "zero"),)])
def test_validate_and_build_reject_non_mappings(junk):
    with pytest.raises(ValueError, match="mapping"):
        DIGITS.validate(junk)
    with pytest.raises(ValueError):
        DIGITS.build(junk)


# ----------------------------------------------------------------------------- arch ids
def test_arch_id_is_short_stable_and_order_independent():
    arch_id = GTN.arch_id(gtn_cifar.S_NAS_S)
    # stable across processes and releases: ids name result files
    assert arch_id == "4200db6734"
    assert re.fullmatch(r"[0-9a-f]{10}", arch_id)
    assert GTN.arch_id(dict(reversed(list(gtn_cifar.S_NAS_S.items())))) == arch_id
    assert len({GTN.arch_id(GTN.sample(seed=s)) for s in range(30)}) == len(
        {GTN.canonical(GTN.sample(seed=s)) for s in range(30)})


def _same_function(space, a, b):
    """Build both archs with the same weights and compare outputs."""
    torch.manual_seed(0)
    ma, mb = space.build(a).eval(), space.build(b).eval()
    mb.load_state_dict(ma.state_dict())
    x = torch.randn(2, *space.input_size)
    with torch.no_grad():
        return torch.equal(ma(x), mb(x))


def test_identity_and_zero_share_an_id_where_they_are_the_same_network():
    # gtn layer4 (128 wide, stride 1) when layer3 is active: 128 channels arrive, identity is y = x
    a = dict(gtn_cifar.S_NAS_S, layer4="identity")
    b = dict(gtn_cifar.S_NAS_S, layer4="zero")
    assert GTN.canonical(a) == GTN.canonical(b)
    assert GTN.arch_id(a) == GTN.arch_id(b)
    assert GTN.cost(a) == GTN.cost(b)
    assert _same_function(GTN, a, b)
    # digits layer2 (16 wide, stride 1): 16 channels always arrive
    a, b = dict(DIGITS.sample(seed=1), layer2="identity"), dict(DIGITS.sample(seed=1), layer2="zero")
    assert DIGITS.arch_id(a) == DIGITS.arch_id(b)


def test_identity_and_zero_differ_where_the_networks_differ():
    # gtn layer1: 16 channels arrive at a 64-wide layer; identity pads to 64, zero passes 16 on
    a = dict(gtn_cifar.S_NAS_S, layer1="identity")
    b = dict(gtn_cifar.S_NAS_S, layer1="zero")
    assert GTN.arch_id(a) != GTN.arch_id(b)
    assert GTN.cost(a)["params"] != GTN.cost(b)["params"]
    # gtn layer4 when layer3 is skipped: 64 channels arrive at a 128-wide layer
    a = dict(gtn_cifar.S_NAS_S, layer3="zero", layer4="identity")
    b = dict(gtn_cifar.S_NAS_S, layer3="zero", layer4="zero")
    assert GTN.arch_id(a) != GTN.arch_id(b)
    # stride-2 identity subsamples, zero keeps the resolution
    a = dict(gtn_cifar.S_NAS_M, layer6="identity")
    b = dict(gtn_cifar.S_NAS_M, layer6="zero")
    assert GTN.arch_id(a) != GTN.arch_id(b)
    assert GTN.cost(a)["macs"] != GTN.cost(b)["macs"]


def test_param_free_layers_in_either_order_are_one_network():
    """gtn layers 1 and 2 are both 64 wide with stride 1: (identity, zero) and (zero, identity)
    both compute pad(x, 64) with no parameters, so they are the same network and need one id.
    """
    a = dict(gtn_cifar.S_NAS_M, layer1="identity", layer2="zero")
    b = dict(gtn_cifar.S_NAS_M, layer1="zero", layer2="identity")
    assert _same_function(GTN, a, b)
    assert GTN.arch_id(a) == GTN.arch_id(b)


def _outputs_with_weights_by_position(space, archs):
    """Each arch's output on one input, its weights (and buffers) set by position from one random
    sequence per sequence of tensor shapes: two archs that build the same network, whatever the
    modules' names, then give equal outputs; two different networks almost surely not."""
    x = torch.randn(2, *space.input_size, generator=torch.Generator().manual_seed(1))
    out = []
    for arch in archs:
        model = space.build(arch).double().eval()
        state = model.state_dict()
        g = torch.Generator().manual_seed(0)

        def draw(v):  # fan-in scaled weights; positive 1-d tensors (BatchNorm scales and variances)
            if not v.is_floating_point():
                return v
            if v.dim() == 1:
                return torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5
            return torch.randn(v.shape, generator=g, dtype=v.dtype) / v[0].numel() ** 0.5
        model.load_state_dict({k: draw(v) for k, v in state.items()})
        with torch.no_grad():
            out.append(model(x.double()))
    return out


def test_one_network_has_one_canonical_form_and_two_networks_two():
    """The partition of architectures by canonical form is the partition by the function their
    networks compute (read from the built modules, not from the canonical form): a stack of two
    basic blocks in one layer is the same network as a block in each of two consecutive layers
    of that width (k3_d4 + identity = k3_d2 + k3_d2), and no two different networks share a form."""
    rest = {"layer3": "identity", "layer4": "identity", "layer5": "identity", "layer6": "identity"}
    a, b = dict(rest, layer1="k3_d2", layer2="k3_d2"), dict(rest, layer1="k3_d4", layer2="identity")
    assert DIGITS.canonical(a) == DIGITS.canonical(b) and DIGITS.cost(a) == DIGITS.cost(b)
    ya, yb = _outputs_with_weights_by_position(DIGITS, [a, b])
    assert torch.equal(ya, yb)
    archs = [DIGITS.sample(seed=s) for s in range(150)] + [a, b]
    # more pairs that share layers' work: the same draws with layer1 / layer2 stacked or split
    for arch in archs[:60]:
        if arch["layer1"] == "k3_d2" and arch["layer2"] == "k3_d2":
            archs.append(dict(arch, layer1="k3_d4", layer2="identity"))
        elif arch["layer1"] == "k3_d4" and arch["layer2"] in ("identity", "zero"):
            archs.append(dict(arch, layer1="k3_d2", layer2="k3_d2"))
    outputs = _outputs_with_weights_by_position(DIGITS, archs)
    by_form, by_output = {}, {}
    for i, (arch, y) in enumerate(zip(archs, outputs)):
        by_form.setdefault(DIGITS.canonical(arch), set()).add(i)
        key = next((k for k, ys in by_output.items() if ys[0].shape == y.shape and torch.allclose(ys[0], y, rtol=1e-9, atol=1e-12)),
                   len(by_output))
        by_output.setdefault(key, [y, set()])[1].add(i)
    assert sorted(map(sorted, by_form.values())) == sorted(sorted(v[1]) for v in by_output.values())
    assert any(len(v) > 1 for v in by_form.values())  # (the sample holds merged spellings)


# ----------------------------------------------------------------------------- size
def test_size_of_digits_equals_brute_force():
    canon = {DIGITS.canonical(a) for a in DIGITS.architectures()}
    # 15,625 label assignments; 3,905 networks once identity/zero runs and stacked blocks merge
    assert DIGITS.size() == len(canon) == 3_905


def test_size_of_a_gtn_sub_space_equals_brute_force():
    # brute force over 8^6 is too slow for CI: take the first four layers of the GTN space
    # (covers the identity-is-a-no-op case at layer 4 when 128 channels arrive)
    sub = SearchSpace(name="gtn_sub", layers=GTN.layers[:4], head_width=64)
    canon = {sub.canonical(a) for a in sub.architectures()}
    assert sub.size() == len(canon)
    assert len(canon) < 8 ** 4


def test_size_of_gtn():
    assert GTN.size() == 108_549


# ----------------------------------------------------------------------------- built networks
INPUT_DEPENDENCE_ARCHS = (
    [(DIGITS, DIGITS.sample(seed=s)) for s in range(16)]
    + [(DIGITS, uniform(DIGITS, c)) for c in ("zero", "identity", "k5_d2")]
    + [(GTN, uniform(GTN, "zero")), (GTN, uniform(GTN, "identity")), (GTN, gtn_cifar.S_NAS_S)]
)


@pytest.mark.parametrize("space,arch", INPUT_DEPENDENCE_ARCHS,
                         ids=[f"{s.name}-{s.arch_id(a)}" for s, a in INPUT_DEPENDENCE_ARCHS])
def test_output_depends_on_input(space, arch):
    torch.manual_seed(0)
    model = space.build(arch).eval()
    x1, x2 = torch.randn(2, 1, *space.input_size).unbind(0)
    with torch.no_grad():
        assert not torch.allclose(model(x1), model(x2))
    x = x1.clone().requires_grad_(True)
    out = model(x)
    assert out.shape == (1, space.num_classes)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad.abs().sum() > 0


def test_built_model_is_plain_modules():
    model = GTN.build(gtn_cifar.S_NAS_M)
    allowed_prefixes = ("torch.nn.", "nasdistill.space.blocks", "nasdistill.space.space",
                        "nasdistill.models.staged")
    for m in model.modules():
        assert type(m).__module__.startswith(allowed_prefixes), type(m)


EXPORT_ARCHS = {
    # identity at layer 3 receives 16 channels and pads them to 32 (and subsamples by 2);
    # layers 1, 2 and 5 are skipped
    "identity-pads": {"layer1": "zero", "layer2": "zero", "layer3": "identity",
                      "layer4": "k3_d2", "layer5": "zero", "layer6": "k5_d2"},
    "skip-and-blocks": {"layer1": "k3_d4", "layer2": "identity", "layer3": "k5_d2",
                        "layer4": "zero", "layer5": "identity", "layer6": "k3_d2"},
}


@pytest.mark.parametrize("name", list(EXPORT_ARCHS))
def test_torch_export_of_built_model(name):
    arch = EXPORT_ARCHS[name]
    resolved = DIGITS.resolve(arch)
    if name == "identity-pads":
        assert (resolved[2].choice, resolved[2].in_channels, resolved[2].out_channels) == ("identity", 16, 32)
    assert any(r.skipped for r in resolved)
    torch.manual_seed(0)
    model = DIGITS.build(arch).eval()
    x = torch.randn(2, *DIGITS.input_size)
    program = torch.export.export(model, (x,))
    x2 = torch.randn(2, *DIGITS.input_size)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x2), model(x2))


# ----------------------------------------------------------------------------- custom ops
def sep_conv(cin, cout, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def mbconv(cin, cout, stride):
    mid = 2 * cin
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
        nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
        nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))


def mbconv_cost(cin, cout, stride, hw):
    mid = 2 * cin
    oh, ow = -(-hw[0] // stride), -(-hw[1] // stride)
    macs = cin * mid * hw[0] * hw[1] + 9 * mid * oh * ow + mid * cout * oh * ow
    params = cin * mid + 2 * mid + 9 * mid + 2 * mid + mid * cout + 2 * cout
    return macs, params


def custom_space(cost_calls):
    register("op", "test_sep3", sep_conv, description="separable 3x3")

    def counted_cost(cin, cout, stride, hw):
        cost_calls.append((cin, cout, stride, hw))
        return mbconv_cost(cin, cout, stride, hw)

    register("op", "test_mb2", mbconv, cost=counted_cost)
    return SearchSpace(
        name="custom", input_size=(3, 16, 16), num_classes=5, stem_channels=8, head_width=32,
        layers=[Layer(16, 1, ["test_sep3", "test_mb2", "zero"]),
                Layer(24, 2, ["k3_d2", "test_mb2", "test_sep3", "identity", "zero"]),
                Layer(32, 2, ["test_sep3", "test_mb2", "zero"])])


def test_custom_ops_build_and_cost_like_the_model():
    calls = []
    space = custom_space(calls)
    archs = list(space.architectures())
    assert len(archs) == 3 * 5 * 3
    for arch in archs[::7]:
        assert space.cost(arch) == measure(space, arch), arch
    arch = {"layer1": "test_sep3", "layer2": "test_mb2", "layer3": "test_mb2"}
    calls.clear()
    assert space.cost(arch) == measure(space, arch)
    # the explicit cost function is the one used, called with the shapes that arrive
    assert calls == [(16, 24, 2, (16, 16)), (24, 32, 2, (8, 8))]
    assert "separable 3x3" in space.describe_arch(arch)


def test_custom_op_re_registration_uses_the_new_builder():
    """Re-registering a name (e.g. in a notebook) must not reuse the old op's measured cost."""
    builders = [lambda i, o, s: nn.Conv2d(i, o, 3, s, 1),
                lambda i, o, s: nn.Conv2d(i, o, 1, s, 0, bias=False),
                lambda i, o, s: nn.Conv2d(i, o, 5, s, 2, bias=False)]
    for t in range(9):
        register("op", "test_reregistered", builders[t % 3])
        op = get_op("test_reregistered")
        built = sum(p.numel() for p in op.build(4, 8, 1).parameters())
        assert op.cost(4, 8, 1, (8, 8))[1] == built, f"registration {t}"
        del op


@pytest.mark.parametrize("name", ["identity", "zero", "k3_d2", "k5_d6", "", "1abc", "a b", None, 3])
def test_registering_an_op_rejects_bad_names(name):
    with pytest.raises(ValueError):
        register("op", name, sep_conv)


def test_registering_an_op_rejects_a_non_callable_builder():
    with pytest.raises(ValueError, match="callable"):
        register("op", "test_not_callable", "conv")


def test_custom_op_with_wrong_output_width_is_reported():
    register("op", "test_wrong_width", lambda cin, cout, stride: nn.Conv2d(cin, cout + 1, 1, stride))
    with pytest.raises(ValueError, match="test_wrong_width"):
        SearchSpace(name="bad", input_size=(3, 8, 8), layers=[Layer(8, 1, ["test_wrong_width"])])


def test_unknown_candidate_name_is_reported():
    with pytest.raises(ValueError, match="k3_dd2|register"):
        SearchSpace(name="bad", layers=[Layer(8, 1, ["k3_dd2"])])


# ----------------------------------------------------------------------------- tied labels
def tied_space():
    return SearchSpace(
        name="tied", input_size=(1, 8, 8), num_classes=4, stem_channels=8, head_width=16,
        layers=[Layer(16, 1, ["k3_d2", "k5_d2", "identity", "zero"], label="a"),
                Layer(16, 1, ["k3_d2", "k3_d4", "identity", "zero"], label="mid"),
                Layer(32, 2, ["k3_d2", "identity", "zero"]),
                Layer(32, 1, ["k3_d2", "k3_d4", "identity", "zero"], label="mid")])


def test_tied_layers_take_the_same_choice():
    space = tied_space()
    assert space.labels == ["a", "mid", "layer3"]
    arch = {"a": "zero", "mid": "k3_d4", "layer3": "zero"}
    model = space.build(arch)
    stacks = [model.stages[1], model.stages[3]]
    assert [len(s) for s in stacks] == [2, 2]  # two basic blocks each = k3_d4
    assert [s[0].conv1.out_channels for s in stacks] == [16, 32]
    assert space.cost(arch) == measure(space, arch)
    with pytest.raises(ValueError, match="mid"):
        space.validate({"a": "zero", "layer3": "zero"})


def test_tied_size_and_cost_range_equal_brute_force():
    space = tied_space()
    archs = list(space.architectures())
    assert len(archs) == 4 * 4 * 3
    assert space.size() == len({space.canonical(a) for a in archs})
    costs = [space.cost(a) for a in archs]
    rng = space.cost_range()
    for metric in ("macs", "params"):
        assert rng[f"{metric}_min"] == min(c[metric] for c in costs)
        assert rng[f"{metric}_max"] == max(c[metric] for c in costs)


# ----------------------------------------------------------------------------- construction errors
def test_identity_onto_a_narrower_layer_is_rejected():
    with pytest.raises(ValueError, match="identity"):
        SearchSpace(name="bad", layers=[Layer(64, 1, ["k3_d2"]), Layer(32, 1, ["k3_d2", "identity"])])


def test_identity_is_allowed_when_every_arriving_width_fits():
    space = SearchSpace(name="ok", layers=[Layer(32, 1, ["k3_d2", "zero"]),
                                           Layer(32, 1, ["k3_d2", "identity"])])
    assert space.possible_in_widths(1) == [16, 32]


def test_tied_labels_with_different_candidates_are_rejected():
    with pytest.raises(ValueError, match="'t'"):
        SearchSpace(name="bad", layers=[Layer(16, 1, ["k3_d2", "zero"], label="t"),
                                        Layer(16, 1, ["k3_d2", "k5_d2"], label="t")])


@pytest.mark.parametrize("layer", [
    Layer(16, 0, ["k3_d2"]), Layer(16, -1, ["k3_d2"]), Layer(16, "2", ["k3_d2"]),
    Layer(16, 1.5, ["k3_d2"]), Layer(0, 1, ["k3_d2"]), Layer(16, 1, []),
    Layer(16, 1, ["k3_d2", "k3_d2"]), Layer(16, 1, ["k3_d3"]), Layer(16, 1, ["k4_d2"]),
    Layer(16, 1, [3]),
])
def test_bad_layers_are_rejected(layer):
    with pytest.raises(ValueError):
        SearchSpace(name="bad", layers=[layer])


def test_bad_space_arguments_are_rejected():
    with pytest.raises(ValueError):
        SearchSpace(name="bad", layers=[])
    with pytest.raises(ValueError):
        SearchSpace(name="bad", layers=[Layer(16, 1, ["k3_d2"])], input_size=(32, 32))
