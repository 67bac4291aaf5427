"""The one evaluation loop (engine/evaluation.py) and the old import paths of what moved."""
import math

import pytest
import torch
from torch import nn

from nasdistill.engine.evaluation import eval_batches, evaluate
from nasdistill.models.batchnorm import recalibrate_bn, recalibrating_bn


def _loader(n=10, batch=4, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch], torch.arange(i, min(i + batch, n))) for i in range(0, n, batch)]


def test_eval_batches_runs_in_eval_mode_without_grad_and_restores_mode():
    model = nn.Sequential(nn.Linear(3, 7), nn.Dropout(0.9))
    model.train()
    seen = []

    def consume(out, batch):
        seen.append((out.requires_grad, model.training, torch.is_grad_enabled(), batch[2].tolist()))

    loader = _loader()
    eval_batches(model, loader, consume)
    assert [s[3] for s in seen] == [b[2].tolist() for b in loader]
    assert all(not req and not training and not grad for req, training, grad, _ in seen)
    assert model.training and torch.is_grad_enabled()


def test_eval_batches_takes_a_forward_with_several_heads_and_restores_mode_on_error():
    model = nn.Linear(3, 7)
    heads = [nn.Linear(7, 7), nn.Linear(7, 2)]
    loader = _loader()
    got = []
    eval_batches(model, loader, lambda zs, batch: got.append([z.shape for z in zs]),
                 lambda x: [h(model(x)) for h in heads])
    assert got == [[torch.Size([len(b[1]), 7]), torch.Size([len(b[1]), 2])] for b in loader]

    model.train()

    def fail(out, batch):
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        eval_batches(model, loader, fail)
    assert model.training


def test_evaluate_matches_top1_top5_and_mean_ce():
    torch.manual_seed(0)
    model = nn.Linear(3, 7)
    loader = _loader(n=10, batch=4)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        logits = model(x)
    top1 = 100.0 * float((logits.argmax(1) == y).double().mean())
    top5 = 100.0 * float((logits.topk(5, 1).indices == y[:, None]).any(1).double().mean())
    loss = float(nn.functional.cross_entropy(logits, y))
    ev = evaluate(model, loader, torch.device("cpu"), amp="off")
    assert ev["top1"] == pytest.approx(top1)
    assert ev["top5"] == pytest.approx(top5)
    assert math.isclose(ev["loss"], loss, rel_tol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [], torch.device("cpu"), amp="off")


def test_recalibrate_bn_gives_the_batch_statistics_and_recalibrating_bn_restores():
    bn = nn.BatchNorm1d(3)
    x = torch.randn(32, 3) * 2 + 1
    recalibrate_bn(nn.Sequential(bn), [x[:16], x[16:]])
    assert torch.allclose(bn.running_mean, x.mean(0), atol=1e-5)
    assert not bn.training and bn.momentum == 0.1
    before = bn.running_mean.clone()
    with recalibrating_bn([bn], restore=True):
        bn.train()
        bn(torch.randn(8, 3) + 5)
        assert not torch.allclose(bn.running_mean, before)
    assert torch.equal(bn.running_mean, before) and bn.momentum == 0.1

def test_save_yaml_of_the_moved_parser_round_trips(tmp_path):
    from nasdistill.engine.config import TrainConfig
    from nasdistill.config import load_config, save_yaml

    cfg = TrainConfig(epochs=3, lr=0.25, milestones=[1, 2])
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_config(TrainConfig, str(tmp_path / "config.yaml")) == cfg
