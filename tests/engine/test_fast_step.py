"""The training step without host synchronisation, the non-finite guard, and the CUDA-graph
plumbing (run here with its capture simulated: the replays of a real graph are tested in
tests/test_cuda.py where a GPU is present)."""
import pytest
import torch
from torch import nn

from nasdistill.engine.run import RunFolder
from nasdistill.data import load_dataset, loaders_for
from nasdistill.engine import TrainConfig, Trainer
from nasdistill.engine.cuda_graphs import GraphedStep
from nasdistill.teachers.ce import CETask
from test_engine import ExplodingTask  # the same task that turns its loss NaN in epoch 1


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", seed=0)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def cfg(**kw):
    base = dict(epochs=2, batch_size=100, lr=0.1, schedule="cosine", weight_decay=5e-4, milestones=[],
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__")


def count_host_syncs(monkeypatch, fn) -> int:
    """Calls of tensor -> Python conversions (each one waits for the device) while ``fn`` runs."""
    calls = {"n": 0}
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return calls["n"]


@pytest.mark.parametrize("method", ["ce", "kd"])
def test_no_host_sync_per_step(splits, monkeypatch, method):
    """The number of host syncs of an epoch does not grow with its number of steps."""
    def epoch_syncs(batch_size: int) -> int:
        train, _, _ = loaders_for(splits, batch_size, "cpu", seed=0)
        if method == "ce":
            task = CETask(net())
        else:
            from nasdistill.distill import build_distiller
            from nasdistill.distill.task import DistillTask
            from nasdistill.models import create_model

            torch.manual_seed(0)
            teacher = create_model("resnet8", num_classes=10, in_channels=1)
            student = create_model("resnet8", num_classes=10, in_channels=1)
            task = DistillTask(student, build_distiller("kd", student, teacher))
        trainer = Trainer(cfg(batch_size=batch_size, check_every=10 ** 6), task, train, None, verbose=False)
        return count_host_syncs(monkeypatch, lambda: trainer.run_epoch(0)), len(train)

    few, n_few = epoch_syncs(512)
    many, n_many = epoch_syncs(64)
    assert n_many > 4 * n_few
    assert many == few, f"{many} host syncs for {n_many} steps vs {few} for {n_few} steps"


@pytest.mark.parametrize("check_every", [1, 5, 1000])
def test_non_finite_guard_names_the_exact_step_whatever_the_check_cadence(splits, tmp_path, check_every):
    train, val, _ = loaders_for(splits, 64, "cpu", seed=0)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError) as err:
        Trainer(cfg(epochs=3, batch_size=64, check_every=check_every), ExplodingTask(net()), train, val,
                folder=RunFolder.at(run), verbose=False).fit()
    msg = str(err.value)
    steps = len(train)
    assert f"epoch 2 (step 3 of the epoch, global step {steps + 3})" in msg and "'ce': nan" in msg
    assert "last.ckpt (epoch 1) is kept" in msg
    from nasdistill.engine import load_checkpoint
    assert load_checkpoint(run / "last.ckpt")["epoch"] == 1
    assert not (run / "result.json").exists()


def test_simulated_graph_capture_trains_like_the_eager_step(splits):
    """Static buffers, per-epoch re-capture and the eager partial last batch give the same weights
    as the plain step (the device-side accumulation is the one a captured graph replays)."""
    train, val, _ = loaders_for(splits, 100, "cpu", seed=0)
    assert len(splits.train) % 100 != 0  # a partial last batch exists

    def run(graphed: bool):
        trainer = Trainer(cfg(epochs=2), CETask(net()), train, val, verbose=False)
        if graphed:
            trainer.graphed = GraphedStep(trainer._step_tensors, warmup=2, simulate=True)
        result = trainer.fit()
        return trainer, result

    eager, r_eager = run(False)
    graphed, r_graph = run(True)
    g = graphed.graphed
    assert g.captures == 2 and g.replays > 0 and g.warmed == 2  # re-captured every epoch
    for (k, a), b in zip(eager.task.model.state_dict().items(), graphed.task.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert r_eager["last_acc"] == r_graph["last_acc"]


def test_graphs_fall_back_with_a_reason_off_cuda(splits, capsys):
    train, _, _ = loaders_for(splits, 100, "cpu", seed=0)
    trainer = Trainer(cfg(cuda_graphs=True), CETask(net()), train, None)
    assert trainer.graphed is None
    assert "train.cuda_graphs=true ignored: the device is cpu" in capsys.readouterr().out
    assert Trainer(cfg(), CETask(net()), train, None, verbose=False).graphed is None  # auto: CUDA only


def test_failed_capture_falls_back_to_eager(splits, capsys):
    calls = []

    def step(batch):
        calls.append(batch[0].shape[0])

    g = GraphedStep(step, warmup=1, simulate=False, on_fallback=lambda why: print("fallback:", why))
    x = torch.zeros(4, 2)
    g((x, x, x))           # warm-up, eager
    g((x, x, x))           # capture on a CPU tensor fails: falls back and runs eagerly
    g((x, x, x))
    assert g.disabled and calls == [4, 4, 4]
    assert "fallback:" in capsys.readouterr().out
