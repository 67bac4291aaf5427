"""Teacher analyses against their formulas on small tensors, and on a model over synthetic data."""
import numpy as np
import pytest
import torch
from torch import nn

from nasdistill.analysis import (compare_teacher_student, evaluate_teacher_quality, fit_temperature,
                                 expected_calibration_error, linear_cka, posterior_kl, posterior_mse,
                                 teacher_student_kl)


def test_posterior_mse_against_numpy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=6)
    q = rng.dirichlet(np.ones(4), size=6)
    assert posterior_mse(torch.tensor(p), torch.tensor(q)) == pytest.approx(((p - q) ** 2).sum(1).mean())
    assert posterior_mse(torch.tensor(p), torch.tensor(p)) == 0.0


def test_posterior_kl_zero_and_hand_value():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    assert posterior_kl(p, p) == pytest.approx(0.0, abs=1e-12)
    true = torch.tensor([[0.5, 0.5]])
    teacher = torch.tensor([[0.25, 0.75]])
    # 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.5 log 2 + 0.5 log(2/3)
    assert posterior_kl(true, teacher) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3))
    # batch mean, and direction KL(true || teacher)
    both = posterior_kl(torch.cat([true, true]), torch.cat([teacher, true]))
    assert both == pytest.approx(0.5 * (0.5 * np.log(2) + 0.5 * np.log(2 / 3)))
    assert posterior_kl(teacher, true) != pytest.approx(posterior_kl(true, teacher))


def test_ece_perfectly_calibrated_and_hand_value():
    # 10 samples at confidence 0.8 with 8 correct, 10 at 0.6 with 6 correct: perfectly calibrated
    probs = torch.tensor([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # all predictions confident 0.9, half right: ECE = |0.5 - 0.9| = 0.4
    probs = torch.tensor([[0.9, 0.1]] * 4)
    labels = torch.tensor([0, 0, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # two bins: conf 0.95 all right (gap 0.05), conf 0.55 none right (gap 0.55); weights 1/2 each
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = torch.tensor([0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.5 * 0.05 + 0.5 * 0.55)


def test_teacher_student_kl_against_formula():
    zt = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    zs = torch.tensor([[1.0, 1.0, 0.0], [0.3, 0.2, 0.1]])
    assert teacher_student_kl(zt, zt) == pytest.approx(0.0, abs=1e-12)
    for t in (1.0, 4.0):
        pt = torch.softmax(zt.double() / t, 1)
        ps = torch.softmax(zs.double() / t, 1)
        ref = (pt * (pt.log() - ps.log())).sum(1).mean().item()
        assert teacher_student_kl(zt, zs, temperature=t) == pytest.approx(ref)


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = x @ torch.randn(8, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(50, 5, generator=g, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    base = linear_cka(x, y)
    assert 0.0 < base < 1.0
    assert linear_cka(x @ q, y) == pytest.approx(base)             # orthogonal transform
    assert linear_cka(3.7 * x, y) == pytest.approx(base)           # isotropic scaling
    assert linear_cka(x + 5.0, y) == pytest.approx(base)           # centring removes offsets
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    # hand formula on centred features
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert base == pytest.approx(ref.item())
    # anisotropic scaling is not an invariance
    assert linear_cka(x * torch.linspace(0.1, 3, 8, dtype=torch.float64), y) != pytest.approx(base)


class BayesModel(nn.Module):
    """Returns the synthetic dataset's exact Bayes logits (undoing the loader's normalization)."""

    def __init__(self, splits):
        super().__init__()
        self.gm = splits.source_model
        self.register_buffer("mean", torch.tensor(splits.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(splits.std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.gm.logits(x * self.std + self.mean).float()


def test_evaluate_teacher_quality_on_synthetic():
    from nasdistill.data import load_dataset

    splits = load_dataset("synthetic", seed=0)
    bayes = evaluate_teacher_quality(BayesModel(splits), splits)
    assert bayes["n"] == len(splits.test)
    assert bayes["posterior_mse"] == pytest.approx(0.0, abs=1e-6)
    assert bayes["posterior_kl"] == pytest.approx(0.0, abs=1e-5)
    assert bayes["accuracy"] == pytest.approx(bayes["bayes_accuracy"])
    # a uniform teacher: distances against the formulas, accuracy = share of class 0 (argmax ties)
    uniform = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nn.init.zeros_(uniform[1].weight), nn.init.zeros_(uniform[1].bias)
    r = evaluate_teacher_quality(uniform, splits.test, mean=splits.mean, std=splits.std)
    post = splits.test.posterior.double()
    assert r["posterior_mse"] == pytest.approx(((post - 0.1) ** 2).sum(1).mean().item(), rel=1e-6)
    assert r["posterior_kl"] == pytest.approx(
        (post * (post.clamp_min(1e-12).log() - np.log(0.1))).sum(1).mean().item(), rel=1e-6)
    assert r["ece"] == pytest.approx(abs(r["accuracy"] / 100 - 0.1), abs=1e-6)
    with pytest.raises(ValueError, match="mean= and std="):
        evaluate_teacher_quality(uniform, splits.test)


def test_compare_teacher_student_identical_models():
    from nasdistill.data import load_dataset
    from nasdistill.models import create_model

    splits = load_dataset("synthetic", seed=0, n_train=50, n_test=64, val_size=0)
    torch.manual_seed(0)
    t = create_model("resnet8", num_classes=10, in_channels=1)
    r = compare_teacher_student(t, t, splits.test, mean=splits.mean, std=splits.std)
    assert r["kl"] == pytest.approx(0.0, abs=1e-9) and r["cka"] == pytest.approx(1.0)


def test_fit_temperature_recovers_the_temperature_of_the_labels():
    # labels drawn from softmax(z / 2.5): the NLL-optimal temperature of z is about 2.5
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 5, generator=g) * 4
    y = torch.multinomial(torch.softmax(z / 2.5, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.05)
    # the minimum of the NLL over a fine grid of temperatures, computed directly
    grid = np.linspace(1.5, 3.5, 401)
    nll = [float(torch.nn.functional.cross_entropy(z.double() / T, y)) for T in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], abs=0.01)
    # a flat model is sharpened (T < 1), an overconfident one softened (T > 1); accuracy unchanged
    assert fit_temperature(z / 10, y) == pytest.approx(t / 10, rel=1e-3)
    assert fit_temperature(z * 3, y) == pytest.approx(3 * t, rel=1e-3)
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(z, y[:10])
