"""The phi-gradient estimator of the path-binarized supernet (``nasdistill.supernet.gates``).

Expected values are derived here independently of the estimator: candidate outputs from the
candidate modules themselves (the skipped layer's output is its input), dL/dy from autograd on the
layer output, and loss differences by brute force (the network rebuilt with the candidate fixed,
evaluated in train mode with batch statistics).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nasdistill.space import Layer, SearchSpace
from nasdistill.supernet import ArchGates, Supernet

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _autocast(bf16: bool):
    return torch.autocast(**BF16, enabled=bf16)


def _record_layers(sn):
    """Forward hooks keeping each mixed layer's arriving tensor and (gradient-retaining) output."""
    seen, handles = {}, []
    for layer in sn.stages:
        def hook(module, inputs, output, label=layer.label):
            if output.requires_grad:
                output.retain_grad()
            seen[label] = (inputs[0].detach(), output)
        handles.append(layer.register_forward_hook(hook))
    return seen, handles


def _dot(a, b):
    return float((a.double() * b.double()).sum())


def _phi_grad(dg: dict, logits: torch.Tensor, names: list) -> torch.Tensor:
    """dL/dphi_i = sum_j dL/dg_j p_j (delta_ij - p_i) over the candidates in ``dg`` (by name);
    p is the softmax of their logits (all candidates in ``full`` mode, the pair in ``two`` mode)."""
    idx = [names.index(c) for c in dg]
    p = torch.softmax(logits.detach().double()[idx], 0)
    out = torch.zeros(len(names), dtype=torch.float64)
    for a, i in enumerate(idx):
        out[i] = sum(dg[c] * p[b] * (float(a == b) - p[a]) for b, c in enumerate(dg))
    return out


def _randomize_phi(gates, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gates.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- identity == zero


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_identity_and_zero_building_the_same_network_get_equal_gradients(digits, bf16):
    torch.manual_seed(0)
    sn = Supernet(digits, mode="full").train()
    x, t = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    sn.path_loss = lambda z: F.cross_entropy(z, t)
    paths = [{l: "k3_d2" for l in digits.labels},
             {"layer1": "k5_d2", "layer2": "zero", "layer3": "k3_d2", "layer4": "identity",
              "layer5": "k3_d4", "layer6": "zero"}]
    compared = 0
    for arch in paths:
        for p in sn.arch_parameters():
            p.grad = None
        sn.gates.use_path(arch, arch_grad=True)
        seen, handles = _record_layers(sn)
        with _autocast(bf16):
            loss = F.cross_entropy(sn(x), t)
        for h in handles:
            h.remove()
        loss.backward()
        for layer in sn.stages:
            h = seen[layer.label][0]
            with torch.no_grad(), _autocast(bf16):
                same = torch.equal(layer.ops["identity"](h), layer.ops["zero"](h))
            if not same:
                continue
            i, z = layer.names.index("identity"), layer.names.index("zero")
            dg = layer.last_dgate
            grad = sn.gates.logits(layer.label).grad
            assert torch.isfinite(dg).all() and torch.isfinite(grad).all()
            tol = 1e-2 if bf16 else 1e-6
            assert dg[i].item() == pytest.approx(dg[z].item(), rel=tol, abs=1e-9), (layer.label, dg)
            # phi starts at 0, so p_identity == p_zero and their phi gradients are equal too
            assert grad[i].item() == pytest.approx(grad[z].item(), rel=tol, abs=1e-9), \
                (layer.label, grad)
            compared += 1
    # path 1: layers 1, 2, 4, 6; path 2: layers 1, 2, 4 (16 channels reach layer 6 at width 64)
    assert compared >= 6


# ---------------------------------------------------------------- analytic form, zero active


def _shape_keeping_toy():
    return SearchSpace(name="toy", input_size=(2, 6, 6), num_classes=3, stem_channels=4,
                       layers=[Layer(4, 1, ["k3_d2", "k5_d2", "identity", "zero"])], head_width=None)


@pytest.mark.parametrize("active", ["zero", "k3_d2", "identity"])
def test_analytic_form_with_skip_output_equal_to_input(active):
    """All candidates keep the shape: dL/dg_j = <o_j, dL/dy> with o_zero = x, no path_loss needed."""
    torch.manual_seed(2)
    sn = Supernet(_shape_keeping_toy(), mode="full").eval()
    logits = sn.gates.logits("layer1")
    with torch.no_grad():
        logits.copy_(torch.tensor([0.4, -0.3, 0.2, -0.1]))
    sn.gates.use_path({"layer1": active}, arch_grad=True)
    x = torch.randn(5, 2, 6, 6)
    layer = sn.stages[0]
    h = sn.stem(x)
    y = layer(h)
    w = torch.randn_like(y)
    (y * w).sum().backward()  # L = <y, w>, so dL/dy = w
    with torch.no_grad():
        outs = {"k3_d2": layer.ops["k3_d2"](h), "k5_d2": layer.ops["k5_d2"](h),
                "identity": h.clone(), "zero": h.clone()}  # identity and zero: y = x here
    dg = {c: _dot(o, w) for c, o in outs.items()}
    expected = _phi_grad(dg, logits, layer.names)
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    got = logits.grad.double()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7), (got, expected)
    assert layer.last_dgate[layer.names.index("zero")].item() == pytest.approx(dg["zero"], rel=1e-5)


def test_zero_active_step_gives_phi_a_gradient(digits):
    torch.manual_seed(0)
    sn = Supernet(digits, mode="full").train()
    x, t = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    sn.path_loss = lambda z: F.cross_entropy(z, t)
    # layer2: zero keeps the shape; layer3 (stride 2, 16 -> 32): zero changes it
    arch = {**{l: "k3_d2" for l in digits.labels}, "layer2": "zero", "layer3": "zero"}
    sn.gates.use_path(arch, arch_grad=True)
    F.cross_entropy(sn(x), t).backward()
    for label in ("layer2", "layer3"):
        g = sn.gates.logits(label).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, label


# ---------------------------------------------------------------- exact differences


def _reshaping_toy():
    """layer1: stride 2 and 4 -> 8 channels, so the skip (zero) changes the output shape."""
    return SearchSpace(name="toy_reshape", input_size=(2, 6, 6), num_classes=3, stem_channels=4,
                       layers=[Layer(8, 2, ["k3_d2", "identity", "zero"]),
                               Layer(8, 1, ["k3_d2", "k5_d2", "zero"])], head_width=6)


def _brute_force_losses(sn, arch, label, choices, loss_fn, x):
    """The loss with each choice fixed at ``label`` (train mode, batch statistics)."""
    out = {}
    for c in choices:
        sn.set_arch({**arch, label: c})
        with torch.no_grad():
            out[c] = float(loss_fn(sn(x)))
    sn.set_arch(None)
    return out


def _check_layer(sn, layer, arch, seen, losses, indices):
    """dL/dg by the two rules from brute-force losses and autograd's dL/dy; returns them by name."""
    h, y = seen[layer.label]
    dldy = y.grad
    active = arch[layer.label]
    dg_est = layer.last_dgate
    expected = {}
    for j in indices:
        c = layer.names[j]
        with torch.no_grad():
            o = h if c == "zero" else layer.ops[c](h)
        if o.shape == y.shape:
            expected[c] = _dot(o, dldy)
            assert dg_est[j].item() == pytest.approx(expected[c], rel=1e-5, abs=1e-6), c
        else:
            # the estimator's difference to the active candidate is the exact loss difference
            diff = dg_est[j].item() - dg_est[layer.names.index(active)].item()
            assert diff == pytest.approx(losses[c] - losses[active], rel=1e-4, abs=2e-6), c
            expected[c] = losses[c] - losses[active] + _dot(y.detach(), dldy)
    return expected


@pytest.mark.parametrize("active", ["k3_d2", "identity", "zero"])
def test_exact_loss_difference_for_shape_changing_candidates(active):
    torch.manual_seed(3)
    space = _reshaping_toy()
    sn = Supernet(space, mode="full").train()
    _randomize_phi(sn.gates, 1)
    x, t = torch.randn(6, 2, 6, 6), torch.randint(0, 3, (6,))
    loss_fn = lambda z: F.cross_entropy(z, t)  # noqa: E731
    sn.path_loss = loss_fn
    arch = {"layer1": active, "layer2": "k3_d2"}
    sn.gates.use_path(arch, arch_grad=True)
    seen, handles = _record_layers(sn)
    loss = loss_fn(sn(x))
    for hd in handles:
        hd.remove()
    loss.backward()
    layer = sn.stages[0]
    losses = _brute_force_losses(sn, arch, "layer1", layer.names, loss_fn, x)
    assert losses[active] == pytest.approx(loss.item(), rel=1e-6)
    reshaped = [c for c in layer.names
                if (seen["layer1"][0] if c == "zero" else layer.ops[c](seen["layer1"][0])).shape
                != seen["layer1"][1].shape]
    assert reshaped  # the test exercises the exact-difference rule
    dg = _check_layer(sn, layer, arch, seen, losses, range(len(layer.names)))
    expected = _phi_grad(dg, sn.gates.logits("layer1"), layer.names)
    got = sn.gates.logits("layer1").grad.double()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6), (got, expected)


def test_exact_loss_difference_in_two_mode():
    torch.manual_seed(4)
    space = _reshaping_toy()
    sn = Supernet(space, mode="two", seed=0).train()
    _randomize_phi(sn.gates, 2)
    x, t = torch.randn(6, 2, 6, 6), torch.randint(0, 3, (6,))
    loss_fn = lambda z: F.cross_entropy(z, t)  # noqa: E731
    sn.path_loss = loss_fn
    layer = sn.stages[0]
    zero = layer.names.index("zero")
    for _ in range(50):  # a sample whose pair at layer1 holds the skip and another candidate
        arch = sn.sample(arch_grad=True)
        if zero in sn.gates.active("layer1")[2]:
            break
    else:
        pytest.fail("no pair with the zero candidate sampled")
    indices = sn.gates.active("layer1")[2]
    seen, handles = _record_layers(sn)
    loss = loss_fn(sn(x))
    for hd in handles:
        hd.remove()
    loss.backward()
    losses = _brute_force_losses(sn, arch, "layer1", [layer.names[j] for j in indices], loss_fn, x)
    dg = _check_layer(sn, layer, arch, seen, losses, indices)
    expected = _phi_grad(dg, sn.gates.logits("layer1"), layer.names)
    got = sn.gates.logits("layer1").grad.double()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6), (got, expected)
    assert torch.count_nonzero(got[[j for j in range(len(layer.names)) if j not in indices]]) == 0


def test_shared_gates_use_each_supernets_own_downstream_and_loss(digits):
    """GTN-like: a whole supernet and a suffix share phi; each has its own path_loss."""
    torch.manual_seed(5)
    gates = ArchGates(digits, "full")
    _randomize_phi(gates, 3)
    full = Supernet(digits, gates=gates).train()
    suffix = Supernet(digits, gates=gates, start=3).train()
    x, t = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    ch, hw = digits.nominal_state(3)
    hs = torch.randn(6, ch, *hw)
    loss_full = lambda z: 0.5 * F.cross_entropy(z, t)  # noqa: E731
    uniform = torch.full((6, 10), 0.1)
    loss_suffix = lambda z: 0.5 * F.kl_div(F.log_softmax(z, 1), uniform,  # noqa: E731
                                           reduction="batchmean")
    full.path_loss, suffix.path_loss = loss_full, loss_suffix
    arch = {l: "k3_d2" for l in digits.labels}  # layer5 (stride 2, 32 -> 64): zero reshapes
    gates.use_path(arch, arch_grad=True)
    seen_f, hf = _record_layers(full)
    seen_s, hsx = _record_layers(suffix)
    (loss_full(full(x)) + loss_suffix(suffix(hs))).backward()
    for hd in hf + hsx:
        hd.remove()
    layer_f, layer_s = full.stages[4], suffix.stages[1]
    assert layer_f.label == layer_s.label == "layer5"
    names = layer_f.names
    lf = _brute_force_losses(full, arch, "layer5", names, loss_full, x)
    ls = _brute_force_losses(suffix, arch, "layer5", names, loss_suffix, hs)
    dg_f = _check_layer(full, layer_f, arch, seen_f, lf, range(len(names)))
    dg_s = _check_layer(suffix, layer_s, arch, seen_s, ls, range(len(names)))
    # the shared logits sum both supernets' estimates
    logits = gates.logits("layer5")
    expected = _phi_grad(dg_f, logits, names) + _phi_grad(dg_s, logits, names)
    got = gates.logits("layer5").grad.double()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6), (got, expected)


def test_forward_from_continues_the_current_path(digits):
    torch.manual_seed(6)
    sn = Supernet(digits).eval()
    x = torch.randn(3, 1, 8, 8)
    sn.gates.use_path({**{l: "k3_d2" for l in digits.labels}, "layer3": "zero", "layer5": "identity"})
    seen, handles = _record_layers(sn)
    with torch.no_grad():
        ref = sn(x)
        for hd in handles:
            hd.remove()
        for i, label in enumerate(digits.labels):
            assert torch.allclose(sn.forward_from(i, seen[label][0]), ref, atol=1e-6)
        assert torch.allclose(sn.forward_from(len(digits.labels), seen["layer6"][1]), ref, atol=1e-6)
        suffix = Supernet(digits, gates=sn.gates, start=3).eval()
        ch, hw = digits.nominal_state(3)
        h = torch.randn(2, ch, *hw)
        assert torch.allclose(suffix.forward_from(3, h), suffix(h), atol=1e-6)
    with pytest.raises(ValueError, match="forward_from"):
        suffix.forward_from(2, h)


# ---------------------------------------------------------------- autocast, BN, errors


@pytest.mark.parametrize("bn", ["eval", "train"])
@pytest.mark.parametrize("mode", ["full", "two"])
def test_bf16_autocast_backward_close_to_fp32(digits, mode, bn):
    torch.manual_seed(7)
    sn32 = Supernet(digits, mode=mode, seed=11).train(bn == "train")
    sn16 = Supernet(digits, mode=mode, seed=11).train(bn == "train")
    _randomize_phi(sn32.gates, 4)
    sn16.load_state_dict(sn32.state_dict())  # same weights, phi and sampler state
    x, t = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    archs, grads = [], []
    for sn, bf16 in ((sn32, False), (sn16, True)):
        sn.path_loss = lambda z: F.cross_entropy(z.float(), t)
        archs.append(sn.sample(arch_grad=True))
        with _autocast(bf16):
            loss = F.cross_entropy(sn(x), t)
        loss.backward()  # no dtype error in backward
        g = [sn.gates.logits(l).grad for l in digits.labels]
        assert all(v is not None and torch.isfinite(v).all() for v in g)
        grads.append(torch.cat(g))
    assert archs[0] == archs[1]
    g32, g16 = grads
    cos = F.cosine_similarity(g32, g16, 0).item()
    rel = ((g16 - g32).norm() / g32.norm()).item()
    if bn == "eval":
        assert cos >= 0.98 and rel <= 0.25, (cos, rel)
    else:
        # BatchNorm on batch statistics: the bf16 backward's dL/dy is itself ~30% off fp32 at the
        # first layers (so are the weight gradients of the same backward), and dL/dg are heavily
        # cancelling sums; agreement is therefore coarse. Faithfulness to the autocast run is
        # checked exactly in the next test.
        assert cos >= 0.8, (cos, rel)


def test_bf16_estimate_is_faithful_to_the_autocast_forward(digits):
    """Each dL/dg of a bf16 step equals the value derived from that step's own tensors, with the
    candidates and the brute-force losses evaluated under the same autocast."""
    torch.manual_seed(12)
    sn = Supernet(digits, mode="full").train()
    _randomize_phi(sn.gates, 5)
    x, t = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss_fn = lambda z: F.cross_entropy(z.float(), t)  # noqa: E731
    sn.path_loss = loss_fn
    arch = {**{l: "k3_d2" for l in digits.labels}, "layer2": "zero", "layer6": "k5_d2"}
    sn.gates.use_path(arch, arch_grad=True)
    seen, handles = _record_layers(sn)
    with _autocast(True):
        loss = loss_fn(sn(x))
    for hd in handles:
        hd.remove()
    loss.backward()
    assert seen["layer1"][1].dtype == torch.bfloat16
    for layer in sn.stages:
        h, y = seen[layer.label]
        dldy = y.grad
        with _autocast(True):
            losses = _brute_force_losses(sn, arch, layer.label, layer.names, loss_fn, x)
        dg = layer.last_dgate
        a = layer.names.index(arch[layer.label])
        for j, c in enumerate(layer.names):
            with torch.no_grad(), _autocast(True):
                o = h if c == "zero" else layer.ops[c](h)
            if o.shape == y.shape:
                expected = _dot(o, dldy)
                assert dg[j].item() == pytest.approx(expected, rel=1e-4, abs=1e-6), (layer.label, c)
            else:
                expected = losses[c] - losses[arch[layer.label]]
                assert dg[j].item() - dg[a].item() == pytest.approx(expected, abs=1e-5), \
                    (layer.label, c)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_backward_leaves_bn_running_statistics_alone(digits, bf16):
    torch.manual_seed(8)
    sn = Supernet(digits, mode="full").train()
    x, t = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    sn.path_loss = lambda z: F.cross_entropy(z.float(), t)
    downstream = []
    forward_from = sn.forward_from
    sn.forward_from = lambda *a, **k: downstream.append(a[0]) or forward_from(*a, **k)
    sn.gates.use_path({l: "k3_d2" for l in digits.labels}, arch_grad=True)
    with _autocast(bf16):
        loss = F.cross_entropy(sn(x), t)
    buffers = {k: v.clone() for k, v in sn.state_dict().items()
               if "running" in k or "num_batches" in k}
    momenta = [m.momentum for m in sn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    loss.backward()
    # zero reshapes at layer3 and layer5: downstream passes ran in backward, L_zero at each and
    # L_active once (the active path's loss is the same whichever layer it continues from)
    assert sorted(set(downstream)) == [3, 5] and len(downstream) == 3
    after = sn.state_dict()
    changed = [k for k, v in buffers.items() if not torch.equal(v, after[k])]
    assert not changed, changed
    assert momenta == [m.momentum for m in sn.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_missing_path_loss_raises_with_instructions(digits):
    torch.manual_seed(9)
    sn = Supernet(digits, mode="full").train()
    x = torch.randn(4, 1, 8, 8)
    sn.gates.use_path({l: "k3_d2" for l in digits.labels}, arch_grad=True)
    momenta = [m.momentum for m in sn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    loss = sn(x).logsumexp(1).mean()
    instructions = r"supernet\.path_loss = lambda logits: loss\(logits\)"
    with pytest.raises(RuntimeError, match=instructions) as e:
        loss.backward()
    assert "'layer5'" in str(e.value) and "'zero'" in str(e.value)
    assert momenta == [m.momentum for m in sn.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_weight_and_input_gradients_unchanged_by_the_gates(digits):
    torch.manual_seed(10)
    sn = Supernet(digits, mode="full").train()
    x0, t = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    sn.path_loss = lambda z: F.cross_entropy(z, t)
    arch = {**{l: "k3_d2" for l in digits.labels}, "layer2": "zero", "layer4": "identity"}
    results = []
    for arch_grad in (False, True):
        sn.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        sn.gates.use_path(arch, arch_grad=arch_grad)
        F.cross_entropy(sn(x), t).backward()
        results.append((x.grad, {n: p.grad for n, p in sn.named_parameters()
                                 if p.grad is not None and not n.startswith("gates")}))
    (gx0, w0), (gx1, w1) = results
    assert torch.equal(gx0, gx1)
    assert w0.keys() == w1.keys() and w0
    assert all(torch.equal(w0[n], w1[n]) for n in w0)
    assert not math.isclose(sn.gates.logits("layer2").grad.abs().sum().item(), 0.0)
