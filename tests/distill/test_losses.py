"""Distillation losses against reference implementations and independent numpy re-derivations.

Reference numbers were printed by the reference code run unchanged in /tmp on the inputs built by
the helpers below (same seeds, same order of draws):
- KD, AT, SP, FitNets (HintLoss), RKD, PKT: HobbitLong/RepDistiller ``distiller_zoo/*.py``.
- DKD: megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` (``dkd_loss``).
- CRD: RepDistiller ``crd/criterion.py`` + ``crd/memory.py`` (``CRDLoss``, AliasMethod.cuda stubbed
  for CPU), with its embedding weights and memory banks overwritten by ``crd_inputs()`` and the
  explicit ``contrast_idx`` below.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax as np_log_softmax
from scipy.special import softmax as np_softmax

from nasdistill.distill.crd import CRDLoss, ContrastMemory, nce_contrast_loss
from nasdistill.distill.losses import (at_loss, dkd_loss, fitnet_loss, kd_loss, pkt_loss, rkd_loss,
                                       sp_loss)

REL = 1e-4


def logits():
    torch.manual_seed(0)
    s = torch.randn(8, 10) * 3
    t = torch.randn(8, 10) * 3
    y = torch.randint(0, 10, (8,))
    return s, t, y


def feats():
    torch.manual_seed(1)
    return torch.randn(8, 4, 8, 8).relu(), torch.randn(8, 6, 4, 4).relu()


def embs():
    torch.manual_seed(2)
    return torch.randn(8, 16), torch.randn(8, 24)


def crd_inputs():
    torch.manual_seed(3)
    w_s = torch.randn(8, 16) * 0.3
    b_s = torch.randn(8) * 0.1
    w_t = torch.randn(8, 24) * 0.3
    b_t = torch.randn(8) * 0.1
    mem_s = F.normalize(torch.randn(20, 8), dim=1)
    mem_t = F.normalize(torch.randn(20, 8), dim=1)
    emb_s = torch.randn(2, 4, 16)
    emb_t = torch.randn(2, 4, 24)
    idx = torch.tensor([[0, 3, 5, 7], [3, 11, 19, 2]])
    cidx = torch.randint(0, 20, (2, 4, 6))
    cidx[:, :, 0] = idx
    return w_s, b_s, w_t, b_t, mem_s, mem_t, emb_s, emb_t, idx, cidx


def n64(t):
    return t.detach().double().numpy()


# ----------------------------------------------------------------- numpy re-derivations
def np_kd(s, t, T):
    p_t = np_softmax(t / T, axis=1)
    return float((p_t * (np.log(p_t) - np_log_softmax(s / T, axis=1))).sum() / len(s) * T * T)


def np_dkd(s, t, y, alpha, beta, T):
    tckd = nckd = 0.0
    for zs, zt, c in zip(s, t, y):
        ps, pt = np_softmax(zs / T), np_softmax(zt / T)
        bs, bt = np.array([ps[c], 1 - ps[c]]), np.array([pt[c], 1 - pt[c]])
        tckd += (bt * np.log(bt / bs)).sum()
        keep = np.arange(len(zs)) != c  # NCKD: softmax over the non-target classes only
        qs, qt = np_softmax(zs[keep] / T), np_softmax(zt[keep] / T)
        nckd += (qt * np.log(qt / qs)).sum()
    return (alpha * tckd + beta * nckd) * T * T / len(s)


def np_block_pool(f, size):
    b, c, h, w = f.shape
    return f.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


def np_at(fs, ft, p=2):
    size = min(fs.shape[2], ft.shape[2])
    fs, ft = np_block_pool(fs, size), np_block_pool(ft, size)

    def amap(f):
        a = (f ** p).mean(axis=1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    return float(((amap(fs) - amap(ft)) ** 2).mean())


def np_sp(fs, ft):
    def gram(f):
        f = f.reshape(len(f), -1)
        g = f @ f.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)
    return float(((gram(fs) - gram(ft)) ** 2).sum() / len(fs) ** 2)


def np_huber(a, b):
    d = np.abs(a - b)
    return float(np.where(d < 1, 0.5 * d * d, d - 0.5).mean())


def np_rkd(es, et, wd=25.0, wa=50.0):
    def dist(e):
        d = np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1))
        return d / d[d > 0].mean()

    def angles(e):
        u = e[None, :, :] - e[:, None, :]  # u[i, j] = e_j - e_i
        n = np.linalg.norm(u, axis=2, keepdims=True)
        u = np.divide(u, n, out=np.zeros_like(u), where=n > 0)
        return np.einsum("ijd,ikd->ijk", u, u).ravel()
    return wd * np_huber(dist(es), dist(et)) + wa * np_huber(angles(es), angles(et))


def np_pkt(es, et, eps=1e-7):
    def cond(e):
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        k = (e @ e.T + 1) / 2
        return k / k.sum(axis=1, keepdims=True)
    ps, pt = cond(es), cond(et)
    return float((pt * np.log((pt + eps) / (ps + eps))).mean())


def np_nce(x, n_data, eps=1e-7):
    m = x.shape[1] - 1
    mp = m / n_data
    pos = np.log(x[:, 0] / (x[:, 0] + mp + eps)).sum()
    neg = np.log(mp / (x[:, 1:] + mp + eps)).sum()
    return -(pos + neg) / len(x)


# ----------------------------------------------------------------- KD / DKD
@pytest.mark.parametrize("T,ref", [(4.0, 8.00192642211914), (1.0, 4.72599458694458)])
def test_kd_matches_repdistiller_and_formula(T, ref):
    s, t, _ = logits()
    got = kd_loss(s, t, T).item()
    assert got == pytest.approx(ref, rel=REL)
    assert got == pytest.approx(np_kd(n64(s), n64(t), T), rel=REL)


@pytest.mark.parametrize("alpha,beta,T,ref", [(1.0, 8.0, 4.0, 60.94605255126953),
                                              (1.0, 0.0, 4.0, 1.3321911096572876),
                                              (0.0, 1.0, 2.0, 6.335434436798096)])
def test_dkd_matches_mdistiller_and_formula(alpha, beta, T, ref):
    s, t, y = logits()
    got = dkd_loss(s, t, y, alpha, beta, T).item()
    assert got == pytest.approx(ref, rel=REL)
    assert got == pytest.approx(np_dkd(n64(s), n64(t), y.numpy(), alpha, beta, T), rel=REL)


def test_kd_and_dkd_vanish_for_identical_logits_and_have_gradients():
    s, t, y = logits()
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert dkd_loss(t, t, y, 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-5)
    s = s.clone().requires_grad_(True)
    (kd_loss(s, t, 4.0) + dkd_loss(s, t, y, 1.0, 8.0, 4.0)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def _zscore(row):
    """Hand z-score with the unbiased standard deviation (n - 1)."""
    m = sum(row) / len(row)
    sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
    return [(v - m) / (sd + 1e-7) for v in row]


def test_standardized_kd_by_hand_on_a_fixed_batch():
    # row 1: teacher = 2 x student + 1: identical after the z-score, contributes 0
    # row 2: z_s = [-1/sqrt(3), -1/sqrt(3), 2/sqrt(3)] and z_t = [1, -1, 0], by hand
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    t = torch.tensor([[3.0, 5.0, 7.0], [3.0, 1.0, 2.0]])
    T = 2.0
    r = 1 / math.sqrt(3)
    zs, zt = [-r, -r, 2 * r], [1.0, -1.0, 0.0]
    assert _zscore([0.0, 0.0, 1.0]) == pytest.approx(zs, abs=1e-6)
    assert _zscore([3.0, 1.0, 2.0]) == pytest.approx(zt, abs=1e-6)

    def softmax(v):
        e = [math.exp(x / T) for x in v]
        return [x / sum(e) for x in e]
    pt, ps = softmax(zt), softmax(zs)
    row2 = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    expected = T * T * (0.0 + row2) / 2
    got = kd_loss(s, t, T, standardize=True).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(kd_loss(s, t, T).item(), rel=1e-2)  # the plain loss differs


def test_standardized_losses_ignore_the_teachers_scale_and_shift():
    s, t, y = logits()
    for scale, shift in ((0.1, 0.0), (7.0, -3.0)):
        assert kd_loss(s, scale * t + shift, 4.0, standardize=True).item() == pytest.approx(
            kd_loss(s, t, 4.0, standardize=True).item(), rel=1e-4)
        assert dkd_loss(s, scale * t + shift, y, 1.0, 8.0, 4.0, standardize=True).item() == pytest.approx(
            dkd_loss(s, t, y, 1.0, 8.0, 4.0, standardize=True).item(), rel=1e-4)
    # the plain loss does not: a flat teacher (x0.1) gives near-uniform targets
    assert kd_loss(s, 0.1 * t, 4.0).item() != pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-2)
    # DKD on standardized logits is DKD of the z-scores
    zs = (s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + 1e-7)
    zt = (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-7)
    assert dkd_loss(s, t, y, 1.0, 8.0, 4.0, standardize=True).item() == pytest.approx(
        np_dkd(n64(zs), n64(zt), y.numpy(), 1.0, 8.0, 4.0), rel=REL)


def test_dkd_with_zero_beta_is_binary_kl_only():
    s, t, y = logits()
    tckd = dkd_loss(s, t, y, 1.0, 0.0, 4.0)
    assert dkd_loss(s, t, y, 2.5, 0.0, 4.0).item() == pytest.approx(2.5 * tckd.item(), rel=1e-6)


def test_logit_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="logits"):
        kd_loss(torch.zeros(2, 10), torch.zeros(2, 5), 4.0)


# ----------------------------------------------------------------- feature losses
def test_at_matches_repdistiller_and_formula():
    fs, ft = feats()
    assert at_loss(fs, ft).item() == pytest.approx(0.04052218794822693, rel=REL)
    assert at_loss(ft, fs).item() == pytest.approx(0.04052218794822693, rel=REL)  # either side pooled
    assert at_loss(fs, ft, p=4).item() == pytest.approx(0.07420770078897476, rel=REL)
    assert at_loss(fs, ft).item() == pytest.approx(np_at(n64(fs), n64(ft)), rel=REL)
    assert at_loss(fs, ft, p=4).item() == pytest.approx(np_at(n64(fs), n64(ft), 4), rel=REL)


def test_sp_matches_repdistiller_and_formula_and_is_scale_invariant():
    fs, ft = feats()
    got = sp_loss(fs, ft).item()
    assert got == pytest.approx(0.00593709759414196, rel=REL)
    assert got == pytest.approx(np_sp(n64(fs), n64(ft)), rel=REL)
    assert sp_loss(7.0 * fs, ft).item() == pytest.approx(got, rel=1e-4)


def test_fitnet_is_mse_and_checks_shapes():
    fs, ft = feats()
    a, b = fs[:, :, :4, :4][:, :4], ft[:, :4]
    assert fitnet_loss(a, b).item() == pytest.approx(0.6485758423805237, rel=REL)
    assert fitnet_loss(a, b).item() == pytest.approx(float(((n64(a) - n64(b)) ** 2).mean()), rel=REL)
    with pytest.raises(ValueError, match="regressor"):
        fitnet_loss(fs, ft)


@pytest.mark.parametrize("wd,wa,ref", [(25.0, 50.0, 0.7305983304977417), (1.0, 0.0, 0.009379536844789982),
                                       (0.0, 1.0, 0.00992219801992178)])
def test_rkd_matches_repdistiller_and_formula(wd, wa, ref):
    es, et = embs()
    got = rkd_loss(es, et, wd, wa).item()
    assert got == pytest.approx(ref, rel=REL)
    assert got == pytest.approx(np_rkd(n64(es), n64(et), wd, wa), rel=REL)


def test_rkd_properties():
    es, et = embs()
    assert rkd_loss(3.0 * es, et).item() == pytest.approx(rkd_loss(es, et).item(), rel=1e-4)
    assert rkd_loss(et, et).item() == pytest.approx(0.0, abs=1e-6)
    es = es.clone().requires_grad_(True)
    et = et.clone().requires_grad_(True)
    rkd_loss(es, et).backward()
    assert es.grad.abs().sum() > 0 and et.grad is None  # teacher side carries no gradient


def test_pkt_matches_repdistiller_and_formula():
    es, et = embs()
    got = pkt_loss(es, et).item()
    assert got == pytest.approx(0.004013394005596638, rel=REL)
    assert got == pytest.approx(np_pkt(n64(es), n64(et)), rel=REL)
    assert pkt_loss(et, et).item() == pytest.approx(0.0, abs=1e-7)
    assert pkt_loss(torch.zeros(4, 3), et[:4]).isfinite()  # zero vectors: no NaN


def test_batch_mismatch_is_an_error():
    with pytest.raises(ValueError, match="batch"):
        sp_loss(torch.zeros(4, 3), torch.zeros(5, 3))


# ----------------------------------------------------------------- CRD
def _crd_with_reference_state():
    w_s, b_s, w_t, b_t, mem_s, mem_t, emb_s, emb_t, idx, cidx = crd_inputs()
    crd = CRDLoss(16, 24, num_data=20, feat_dim=8, num_negatives=5)
    with torch.no_grad():
        crd.embed_s.linear.weight.copy_(w_s)
        crd.embed_s.linear.bias.copy_(b_s)
        crd.embed_t.linear.weight.copy_(w_t)
        crd.embed_t.linear.bias.copy_(b_t)
        crd.memory.memory_s.copy_(mem_s)
        crd.memory.memory_t.copy_(mem_t)
    return crd, emb_s, emb_t, idx, cidx


def test_crd_matches_repdistiller_over_two_steps():
    crd, emb_s, emb_t, idx, cidx = _crd_with_reference_state()
    losses = [crd(emb_s[k], emb_t[k], idx[k], cidx[k]).item() for k in range(2)]
    assert losses == pytest.approx([15.38095474243164, 18.050689697265625], rel=REL)
    assert crd.memory.z_s.item() == pytest.approx(195643.578125, rel=REL)
    assert crd.memory.z_t.item() == pytest.approx(9156.3603515625, rel=REL)
    assert crd.memory.memory_s[3].tolist() == pytest.approx(
        [-0.19176019728183746, 0.26336249709129333, 0.18675574660301208, 0.013412944041192532,
         0.5596799850463867, -0.31764164566993713, 0.17892488837242126, -0.6423850655555725], abs=1e-5)
    assert crd.memory.memory_t[0].tolist() == pytest.approx(
        [-0.2627202272415161, -0.39245477318763733, -0.10541936010122299, -0.4952825903892517,
         0.345782071352005, -0.4003118872642517, -0.06179540604352951, -0.4867296814918518], abs=1e-5)


def test_nce_contrast_loss_formula():
    torch.manual_seed(4)
    x = torch.rand(3, 7) * 0.5
    assert nce_contrast_loss(x, 50).item() == pytest.approx(np_nce(n64(x), 50), rel=REL)


def test_memory_momentum_update_keeps_rows_unit_norm():
    torch.manual_seed(5)
    mem = ContrastMemory(dim=8, num_data=12, num_negatives=16384, temperature=0.07, momentum=0.5)
    assert mem.num_negatives == 11  # capped at num_data - 1
    assert torch.allclose(mem.memory_s.norm(dim=1), torch.ones(12), atol=1e-6)
    old_s, old_t = mem.memory_s.clone(), mem.memory_t.clone()
    v_s, v_t = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    idx = torch.tensor([1, 4, 6, 9])
    out_s, out_t = mem(v_s, v_t, idx)
    assert out_s.shape == out_t.shape == (4, 12)
    assert (out_s > 0).all() and (out_t > 0).all()
    want_s = F.normalize(0.5 * old_s[idx] + 0.5 * v_s, dim=1)
    want_t = F.normalize(0.5 * old_t[idx] + 0.5 * v_t, dim=1)
    assert torch.allclose(mem.memory_s[idx], want_s, atol=1e-6)
    assert torch.allclose(mem.memory_t[idx], want_t, atol=1e-6)
    untouched = torch.tensor([i for i in range(12) if i not in idx.tolist()])
    assert torch.equal(mem.memory_s[untouched], old_s[untouched])
    assert torch.allclose(mem.memory_s.norm(dim=1), torch.ones(12), atol=1e-6)
    assert torch.allclose(mem.memory_t.norm(dim=1), torch.ones(12), atol=1e-6)
    z = mem.z_s.item()
    mem(v_s, v_t, idx)
    assert mem.z_s.item() == z  # the normalization constant is fixed on the first batch


def test_contrast_sampling_excludes_the_positive():
    torch.manual_seed(6)
    mem = ContrastMemory(dim=4, num_data=10, num_negatives=5)
    idx = torch.tensor([0, 9, 4])
    cidx = mem.sample_contrast_idx(idx)
    assert cidx.shape == (3, 6)
    assert torch.equal(cidx[:, 0], idx)
    assert (cidx[:, 1:] != idx.unsqueeze(1)).all()
    assert cidx.min() >= 0 and cidx.max() < 10


def test_crd_gradients_reach_heads_and_embeddings():
    crd, emb_s, emb_t, idx, cidx = _crd_with_reference_state()
    e = emb_s[0].clone().requires_grad_(True)
    crd(e, emb_t[0], idx[0]).backward()
    assert e.grad.abs().sum() > 0
    assert crd.embed_s.linear.weight.grad.abs().sum() > 0
    assert crd.embed_t.linear.weight.grad.abs().sum() > 0
    assert math.isfinite(crd(emb_s[1], emb_t[1], idx[1]).item())
    with pytest.raises(ValueError, match="num_data"):
        crd(emb_s[0], emb_t[0], torch.tensor([0, 1, 2, 25]))
