import math

import pytest
import torch

from nasdistill.space import Layer, SearchSpace, load_space
from nasdistill.space.cost import CostModel
from nasdistill.supernet import Supernet
from nasdistill.models.batchnorm import recalibrate_bn
from nasdistill.search.penalty import cost_penalty


def _train_a_bit(sn, x, steps=4):
    opt = torch.optim.SGD(sn.weight_parameters(), lr=0.05)
    for _ in range(steps):
        sn.sample()
        loss = sn(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_extract_equals_supernet_path_and_shares_nothing(digits):
    torch.manual_seed(0)
    sn = Supernet(digits, seed=0)
    x = torch.randn(6, 1, 8, 8)
    _train_a_bit(sn, x)
    sn.eval()
    archs = [digits.sample(seed) for seed in range(6)]
    archs.append({l: "zero" for l in digits.labels})
    archs.append({l: "identity" for l in digits.labels})
    for arch in archs:
        sn.set_arch(arch)
        model = sn.extract(arch).eval()
        assert type(model).__name__ == "SpaceNet"
        assert not any("supernet" in type(m).__module__ for m in model.modules())
        assert (sn(x) - model(x)).abs().max().item() <= 1e-4
        sn_ptrs = {t.untyped_storage().data_ptr() for t in sn.state_dict().values()}
        assert not sn_ptrs & {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
        assert set(model.state_dict()) == set(digits.build(arch).state_dict())
    sn.set_arch(None)


def test_extract_nas_students_of_gtn_space():
    from search_spaces.gtn_cifar import S_NAS_M, S_NAS_S, SPACE

    torch.manual_seed(0)
    sn = Supernet(SPACE).eval()
    x = torch.randn(1, 3, 32, 32)
    for arch in (S_NAS_S, S_NAS_M):
        sn.set_arch(arch)
        model = sn.extract(arch).eval()
        assert (sn(x) - model(x)).abs().max().item() <= 1e-4
        assert sum(p.numel() for p in model.parameters()) == SPACE.cost(arch)["params"]


def test_export_is_deterministic_and_sample_mode_seeded(digits):
    sn = Supernet(digits)
    with torch.no_grad():
        for p in sn.arch_parameters():
            p.copy_(torch.randn(p.shape))
    assert sn.export() == sn.export() == sn.export()
    expected = {l: digits.choices(l)[int(sn.gates.logits(l).argmax())] for l in digits.labels}
    assert sn.export() == expected
    assert sn.export("sample", seed=3) == sn.export("sample", seed=3)
    assert len({tuple(sn.export("sample", seed=s).values()) for s in range(8)}) > 1
    with pytest.raises(ValueError, match="export mode"):
        sn.export("best")


def test_parameter_groups_are_disjoint_and_complete(digits):
    sn = Supernet(digits)
    arch = {id(p) for p in sn.arch_parameters()}
    weights = {id(p) for p in sn.weight_parameters()}
    assert arch and weights and not arch & weights
    assert arch | weights == {id(p) for p in sn.parameters()}
    assert len(arch) == len(digits.labels)


def test_set_arch_fixes_path_until_none(digits):
    sn = Supernet(digits)
    arch = digits.sample(7)
    sn.set_arch(arch)
    for _ in range(3):
        assert sn.gates.current_arch() == arch
    with pytest.raises(RuntimeError):
        sn.sample()
    sn.set_arch(None)
    seen = {tuple(sn.sample().values()) for _ in range(10)}
    assert len(seen) > 1
    with pytest.raises(ValueError, match="allowed choices"):
        sn.set_arch({**arch, "layer1": "k7_d2"})


def _toy_space():
    return SearchSpace(name="toy", input_size=(2, 6, 6), num_classes=3, stem_channels=4,
                       layers=[Layer(4, 1, ["k3_d2", "k5_d2", "identity", "zero"])], head_width=None)


def _analytic_phi_grad(sn, x, w, indices):
    """dL/dphi_i = sum_j dL/dg_j p_j (delta_ij - p_i) with dL/dg_j = <o_j, dL/dy>, L = <y, w>.

    Every candidate of the toy layer keeps the shape; the zero candidate skips the layer, so its
    output is the arriving tensor itself.
    """
    layer = sn.stages[0]
    h = sn.stem(x).detach()
    p_all = torch.softmax(sn.gates.logits("layer1").detach(), 0)
    idx = list(indices)
    p = torch.softmax(sn.gates.logits("layer1").detach()[idx], 0) if len(idx) == 2 else p_all
    dg = []
    with torch.no_grad():
        for j in idx:
            name = layer.names[j]
            o = h if name == "zero" else layer.ops[name](h)
            assert o.shape == h.shape
            dg.append(float((o * w).sum()))
    dg = torch.tensor(dg)
    grad = torch.zeros_like(p_all)
    for a, i in enumerate(idx):
        grad[i] = sum(dg[b] * p[b] * (float(a == b) - p[a]) for b in range(len(idx)))
    return grad


@pytest.mark.parametrize("mode", ["full", "two"])
def test_estimator_matches_analytic_form(mode):
    torch.manual_seed(1)
    space = _toy_space()
    sn = Supernet(space, mode=mode, seed=3)
    with torch.no_grad():
        sn.gates.logits("layer1").copy_(torch.tensor([0.3, -0.2, 0.5, 0.1]))
    sn.eval()  # BN in eval: candidate outputs are deterministic functions of the input
    x = torch.randn(5, 2, 6, 6)
    checked, zero_active = 0, 0
    for _ in range(16):
        arch = sn.sample(arch_grad=True)
        active, gate, indices = sn.gates.active("layer1")
        for p in sn.arch_parameters():
            p.grad = None
        # L = <y, w> on the layer output y
        h = sn.stem(x)
        y = sn.stages[0](h)
        w = torch.randn_like(y)
        (y * w).sum().backward()
        g = sn.gates.logits("layer1").grad
        expected = _analytic_phi_grad(sn, x, w, indices)
        assert g is not None
        assert torch.allclose(g, expected, rtol=1e-4, atol=1e-6), (g, expected)
        if mode == "two":
            assert len(indices) == 2
            others = [i for i in range(4) if i not in indices]
            assert torch.count_nonzero(g[others]) == 0
        zero_active += arch["layer1"] == "zero"
        checked += 1
    assert checked == 16 and zero_active >= 1


def test_two_mode_rescale_keeps_mass_of_involved_paths():
    torch.manual_seed(0)
    space = _toy_space()
    sn = Supernet(space, mode="two", seed=0)
    logits = sn.gates.logits("layer1")
    with torch.no_grad():
        logits.copy_(torch.tensor([0.2, 0.1, -0.3, 0.4]))
    sn.sample(arch_grad=True)
    idx, _ = sn.gates._two_old["layer1"]
    before = torch.softmax(logits.detach(), 0)[idx].sum()
    others_before = logits.detach()[[i for i in range(4) if i not in idx]].clone()
    with torch.no_grad():
        logits[idx[0]] += 0.7
        logits[idx[1]] -= 0.2
    sn.gates.after_arch_step()
    after = torch.softmax(logits.detach(), 0)[idx].sum()
    assert torch.allclose(before, after, atol=1e-6)
    assert torch.equal(logits.detach()[[i for i in range(4) if i not in idx]], others_before)


def test_backward_recompute_leaves_bn_statistics_alone(digits):
    torch.manual_seed(0)
    sn = Supernet(digits, mode="full").train()
    x = torch.randn(4, 1, 8, 8)
    arch = {l: "k3_d2" for l in digits.labels}
    sn.gates.use_path(arch, arch_grad=True)
    sn.path_loss = lambda logits: logits.sum()  # zero changes the shape at the strided layers
    before = {k: v.clone() for k, v in sn.state_dict().items() if "running" in k}
    sn(x).sum().backward()
    after = sn.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    # Only the active path's BN layers (run in forward) may change.
    assert changed
    assert all(".k3_d2." in k or k.startswith(("stem", "embed")) for k in changed), changed


def test_phi_gradients_in_arch_step_and_not_in_weight_step(digits):
    torch.manual_seed(0)
    sn = Supernet(digits)
    x = torch.randn(4, 1, 8, 8)
    sn.gates.use_path({l: "k3_d2" for l in digits.labels}, arch_grad=False)
    sn(x).sum().backward()
    assert all(p.grad is None for p in sn.arch_parameters())
    sn.gates.use_path({**{l: "k3_d2" for l in digits.labels}, "layer2": "zero"}, arch_grad=True)
    sn.path_loss = lambda logits: logits.logsumexp(1).mean()
    sn(x).logsumexp(1).mean().backward()
    grads = {l: sn.gates.logits(l).grad for l in digits.labels}
    # the skipped layer (zero active) gets a gradient too
    assert all(grads[l] is not None and grads[l].abs().sum() > 0 for l in digits.labels)


def test_gate_sampler_state_is_in_state_dict(digits):
    sn = Supernet(digits, seed=5)
    sn.sample()
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in sn.state_dict().items()}
    first = [sn.sample() for _ in range(3)]
    sn.load_state_dict(state)
    assert [sn.sample() for _ in range(3)] == first


def test_expected_cost_equals_enumeration(digits):
    torch.manual_seed(0)
    sn = Supernet(digits)
    with torch.no_grad():
        for p in sn.arch_parameters():
            p.copy_(torch.randn(p.shape))
    for metric in ("macs", "params"):
        cm = CostModel(digits, metric)
        expected = cm.expected(sn.gates)
        probs = sn.gates.probabilities()
        total = 0.0
        for arch in digits.architectures():
            pr = math.prod(probs[l][c] for l, c in arch.items())
            total += pr * digits.cost(arch)[metric]
        assert expected.item() == pytest.approx(total, rel=1e-5)
    expected.backward()
    assert all(p.grad is not None for p in sn.arch_parameters())


def test_latency_cost_model_reads_table(digits):
    cm_macs = CostModel(digits, "macs")
    # A "latency" table proportional to MACs must reproduce the MACs model exactly.
    table = {"stem": cm_macs.stem()}
    states = digits.arriving_states(0, digits.stem_shape())
    from nasdistill.space.cost import state_key
    for i in range(len(digits.layers)):
        for s in states[i]:
            for name in digits.layer_ops(i):
                table[f"{digits.layer_label(i)}:{i}:{name}:{state_key(s)}"] = cm_macs.layer(i, name, s)
    for s in states[-1]:
        table[f"head:{state_key(s)}"] = cm_macs.head(s)
    cm = CostModel(digits, "latency", {"entries": table})
    arch = digits.sample(2)
    assert cm.of_arch(arch) == pytest.approx(digits.cost(arch)["macs"])
    with pytest.raises(ValueError, match="latency table"):
        CostModel(digits, "latency")


def test_cost_penalties_match_formulas():
    ce, e = torch.tensor(2.0), torch.tensor(150.0)
    assert cost_penalty(ce, e, 100.0, "mul#log", alpha=0.2, beta=0.3).item() == pytest.approx(
        2.0 * 0.2 * (math.log(150) / math.log(100)) ** 0.3)
    assert cost_penalty(ce, e, 100.0, "add#linear", lam=0.1).item() == pytest.approx(2.0 + 0.1 * 0.5)
    with pytest.raises(ValueError, match="penalty"):
        cost_penalty(ce, e, 100.0, "exp")


def test_recalibrate_bn_sets_batch_statistics(digits):
    torch.manual_seed(0)
    model = digits.build(digits.sample(1))
    x = torch.randn(16, 1, 8, 8) * 3 + 1
    recalibrate_bn(model, [(x,)])
    bn = model.stem[1]
    h = model.stem[0](x)
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert not model.training


def test_supernet_suffix_with_shared_gates(digits):
    from nasdistill.supernet import ArchGates

    gates = ArchGates(digits)
    full = Supernet(digits, gates=gates)
    suffix = Supernet(digits, gates=gates, start=3)
    assert len(suffix.stages) == 3
    assert suffix.gates is full.gates
    ch, hw = digits.nominal_state(3)
    full.sample()
    out = suffix(torch.randn(2, ch, *hw))
    assert out.shape == (2, 10)


def test_abs_penalty_pulls_toward_target_from_both_sides():
    ce = torch.tensor(1.0)
    below = torch.tensor(50.0, requires_grad=True)
    above = torch.tensor(150.0, requires_grad=True)
    cost_penalty(ce, below, 100.0, "add#abs", lam=0.5).backward()
    cost_penalty(ce, above, 100.0, "add#abs", lam=0.5).backward()
    assert below.grad.item() == pytest.approx(-0.5 / 100) and above.grad.item() == pytest.approx(0.5 / 100)
    assert cost_penalty(ce, above.detach(), 100.0, "add#abs", lam=0.5).item() == pytest.approx(1.25)


def test_bench_latency_table_covers_every_path(tmp_path, digits):
    from nasdistill.bench.latency import measure_table

    small = SearchSpace(name="tiny_lat", input_size=(1, 8, 8), num_classes=3, stem_channels=4,
                        layers=[Layer(4, 1, ["k3_d2", "identity", "zero"]),
                                Layer(8, 2, ["k3_d2", "k5_d2", "zero"])], head_width=8)
    table = measure_table(small, torch.device("cpu"), batch_size=1, reps=1, warmup=0)
    cm = CostModel(small, "latency", table)
    for arch in small.architectures():  # every architecture's latency is predictable from the table
        assert cm.of_arch(arch) > 0
    sn = Supernet(small)
    assert cm.expected(sn.gates).item() > 0


def test_frozen_bn_stats_gives_the_train_mode_output_and_keeps_every_buffer(digits):
    from nasdistill.supernet.gates import frozen_bn_stats

    torch.manual_seed(0)
    sn = Supernet(digits).train()
    sn.gates.use_path({l: "k3_d2" for l in digits.labels})
    x = torch.randn(6, 1, 8, 8)
    sn(x)  # running statistics away from their initial values
    sn.stages[0].eval()  # an eval-mode layer keeps normalizing with its running statistics
    buffers = {k: v.clone() for k, v in sn.state_dict().items() if "running" in k or "num_batches" in k}
    with frozen_bn_stats(sn):
        frozen = sn(x)
    after = sn.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in buffers.items())
    bns = [m for m in sn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.track_running_stats for m in bns)
    assert torch.equal(frozen, sn(x))  # the ordinary forward: same batch statistics, same output


def test_non_finite_phi_stops_sampling_with_a_floating_point_error():
    from nasdistill.supernet import ArchGates

    gates = ArchGates(load_space("digits_small"), "two", seed=0)
    with torch.no_grad():
        gates.logits(gates.labels[2])[0] = float("nan")
    with pytest.raises(FloatingPointError, match=f"phi of label '{gates.labels[2]}' are not finite"):
        gates.sample(arch_grad=True)
