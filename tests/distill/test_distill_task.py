"""Distillation runs: DistillConfig, DistillTask, cached teacher logits, run_distill end to end."""
import dataclasses
import json
import typing

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from nasdistill import load as load_model_record
from nasdistill.data import load_dataset, loaders_for
from nasdistill.distill import DISTILLERS, METHOD_CONFIGS, dkd_loss, kd_loss
from nasdistill.distill.config import DistillConfig
from nasdistill.distill.runner import prepare_distill, run_distill
from nasdistill.config import ConfigError, load_config
from nasdistill.models.config import ModelConfig
from nasdistill.engine import StepContext, TrainConfig
from nasdistill.engine.checkpoint import seed_everything
from nasdistill.engine.trainer import evaluate
from nasdistill.network.record import ModelRecord

METHODS = ["kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd"]
ARCH = {"layer1": "k3_d2", "layer2": "identity", "layer3": "k3_d2", "layer4": "identity",
        "layer5": "zero", "layer6": "identity"}


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def teacher_dir(resnet8_teacher):
    return resnet8_teacher  # the session's resnet8 CE run (conftest.py), read only


def make_cfg(teacher_dir, method="kd", student=None, **kw):
    cfg = DistillConfig(teacher=str(teacher_dir), method=method,
                        student=student or ModelConfig(space="digits_small", arch=dict(ARCH)),
                        train=TrainConfig(epochs=1, batch_size=128, lr=0.05, schedule="cosine",
                                          milestones=[]))
    if method == "crd":
        cfg.crd.num_negatives = 256
    return dataclasses.replace(cfg, **kw)


def seeded_student(record, seed=0):
    seed_everything(seed)
    return ModelRecord.from_json(record).build()


# ---------------------------------------------------------------------------- config
def test_config_sections_cover_every_method():
    hints = typing.get_type_hints(DistillConfig)
    for name, cls in METHOD_CONFIGS.items():
        assert hints[name] is cls
    assert hints["method"] is str and set(DISTILLERS) == set(METHOD_CONFIGS) | {"none"}
    cfg = DistillConfig()
    assert (cfg.train.lr, cfg.train.schedule, cfg.train.optimizer) == (0.05, "cosine", "sgd")
    assert cfg.kd.temperature == 4.0 and cfg.dkd.temperature == 4.0


def test_config_overrides_and_unknown_key_named():
    cfg = load_config(DistillConfig, None, ["kd.temperature=2", "dkd.beta=6", "method=dkd"])
    assert cfg.kd.temperature == 2.0 and cfg.dkd.beta == 6.0 and cfg.method == "dkd"
    with pytest.raises(ConfigError, match=r"kd\.temprature.*kd\.temperature"):
        load_config(DistillConfig, None, ["kd.temprature=2"])
    with pytest.raises(ConfigError, match="method"):
        load_config(DistillConfig, None, ["method=hinton"])


def test_teacher_required_unless_baseline(splits):
    with pytest.raises(ConfigError, match="teacher=RUN_DIR"):
        DistillConfig(method="kd").check()
    DistillConfig(method="none").check()


def test_missing_teacher_dir_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path / "no_such_teacher")
    with pytest.raises(FileNotFoundError, match="no_such_teacher.*does not exist.*nasdistill teacher"):
        run_distill(cfg, tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


def test_teacher_for_other_classes_refused(teacher_dir, tmp_path, splits):
    fake = tmp_path / "teacher5"
    fake.mkdir()
    record = json.loads((teacher_dir / "model.json").read_text())
    record["num_classes"] = 5
    (fake / "model.json").write_text(json.dumps(record))
    (fake / "model.safetensors").write_bytes((teacher_dir / "model.safetensors").read_bytes())
    (fake / "result.json").write_text((teacher_dir / "result.json").read_text())
    with pytest.raises(ValueError, match="5 classes.*10 classes"):
        run_distill(make_cfg(fake), None, splits=splits, verbose=False)


# ---------------------------------------------------------------------------- the task
@pytest.mark.parametrize("method", METHODS)
def test_teacher_frozen_and_out_of_optimizer(teacher_dir, splits, method):
    task = prepare_distill(make_cfg(teacher_dir, method), splits, "cpu")
    teacher = task.teacher
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert teacher_ids and not teacher_ids & {id(p) for p in task.main_parameters()}
    assert not any(k.startswith("teacher") for k in task.model.state_dict())
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in task.student.state_dict().items()}
    opt = torch.optim.SGD(task.main_parameters(), lr=0.05, momentum=0.9)
    train, _, _ = loaders_for(splits, 64, "cpu", seed=0)
    task.model.train()
    for i, batch in zip(range(2), train):
        out = task.training_step(batch, StepContext(0, i, i, torch.device("cpu")))
        assert set(out.logs) >= {"loss_ce"} and torch.isfinite(out.loss)
        assert torch.allclose(out.loss, sum(out.logs.values()))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert not teacher.training
    for k, v in teacher.state_dict().items():   # parameters and BN running statistics
        assert torch.equal(v, before_t[k]), k
    changed = [k for k, v in task.student.state_dict().items() if not torch.equal(v, before_s[k])]
    assert any(k.endswith("weight") for k in changed)
    assert set(task.final_weights()) == set(task.student.state_dict())


def test_dkd_epoch_is_one_based(teacher_dir, splits):
    task = prepare_distill(make_cfg(teacher_dir, "dkd"), splits, "cpu")
    x, y, idx = next(iter(loaders_for(splits, 64, "cpu", seed=0)[0]))
    task.model.eval()  # same student output in both calls
    with torch.no_grad():
        logits_t = task.teacher(x)
        for epoch0, factor in ((0, 1 / 20), (9, 10 / 20), (30, 1.0)):
            out = task.training_step((x, y, idx), StepContext(epoch0, 0, 0, torch.device("cpu")))
            expected = factor * dkd_loss(out.logits, logits_t, y, 1.0, 8.0, 4.0)
            assert torch.allclose(out.logs["loss_kd"], expected, rtol=1e-5)
            assert torch.allclose(out.logs["loss_ce"], F.cross_entropy(out.logits, y))


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_cached_logits_match_live_teacher(teacher_dir, splits, method):
    live = prepare_distill(make_cfg(teacher_dir, method), splits, "cpu")
    cached = prepare_distill(make_cfg(teacher_dir, method, cache_teacher_logits=True), splits, "cpu")
    assert cached.teacher_cache is not None and len(cached.teacher_cache) == len(splits.train)
    x, y, idx = next(iter(loaders_for(splits, 128, "cpu", seed=0)[0]))
    ctx = StepContext(0, 0, 0, torch.device("cpu"))
    live.model.train()
    cached.model.train()
    a = live.training_step((x, y, idx), ctx)
    b = cached.training_step((x, y, idx), ctx)
    assert set(a.logs) == set(b.logs) == {"loss_ce", "loss_kd"}
    for k in a.logs:
        assert torch.allclose(a.logs[k], b.logs[k], rtol=1e-5, atol=1e-6), k
    assert torch.allclose(a.loss, b.loss, rtol=1e-5)
    # the table really is the teacher's output at those indices, and the live path is restored
    with torch.no_grad():
        assert torch.allclose(cached.teacher_cache.lookup(idx), live.teacher(x), atol=1e-5)
    assert "teacher_features" not in vars(cached.distiller)
    if method == "kd":
        with torch.no_grad():
            assert torch.allclose(b.logs["loss_kd"], 0.9 * kd_loss(b.logits, live.teacher(x), 4.0),
                                  rtol=1e-5)


def test_cache_refuses_augmentation_and_feature_methods(teacher_dir, splits):
    cfg = make_cfg(teacher_dir, "kd", cache_teacher_logits=True)
    cfg.data.augment = True
    with pytest.raises(ValueError, match="augmentation.*data.augment=false"):
        prepare_distill(cfg, splits, "cpu")
    with pytest.raises(ConfigError, match="fitnet.*features"):
        prepare_distill(make_cfg(teacher_dir, "fitnet", cache_teacher_logits=True), splits, "cpu")


# ---------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", METHODS)
def test_each_method_distills_end_to_end(teacher_dir, splits, tmp_path, method):
    teacher_bytes = (teacher_dir / "model.safetensors").read_bytes()
    cfg = make_cfg(teacher_dir, method)
    result = run_distill(cfg, tmp_path / "run", splits=splits, verbose=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "model.json", "metrics.csv", "metrics.jsonl", "last.ckpt",
                 "model.safetensors", "result.json"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "result.json").read_text())
    assert saved == result  # fresh and reused runs return the same mapping
    assert run_distill(cfg, run, splits=splits, verbose=False) == result
    assert saved["method"] == method and saved["epochs"] == 1
    assert saved["test_acc"] == pytest.approx(result["test_acc"])
    assert 0 <= saved["best_acc"] <= 100 and saved["teacher_test_acc"] > 10
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert "train_loss_ce" in row and any(k in row for k in ("train_loss_kd", "train_loss_feat"))
    # model.safetensors holds the student only and reproduces its test accuracy
    student = load_model_record(run)
    weights = load_file(str(run / "model.safetensors"))
    assert set(weights) == set(student.state_dict())
    _, _, test = loaders_for(splits, 256, "cpu")
    assert evaluate(student, test, torch.device("cpu"))["top1"] == pytest.approx(result["test_acc"])
    # the student moved away from its seeded initialization; the teacher file is untouched
    init = seeded_student(json.loads((run / "model.json").read_text()), cfg.seed).state_dict()
    assert any(not torch.equal(init[k], weights[k]) for k in init if k.endswith("weight"))
    assert (teacher_dir / "model.safetensors").read_bytes() == teacher_bytes


def test_student_by_zoo_name(teacher_dir, splits, tmp_path):
    cfg = make_cfg(teacher_dir, "kd", student=ModelConfig(name="resnet8"))
    run_distill(cfg, tmp_path / "run", splits=splits, verbose=False)
    record = json.loads((tmp_path / "run" / "model.json").read_text())
    assert record["kind"] == "zoo" and record["name"] == "resnet8"
    load_model_record(tmp_path / "run")  # loads strictly into a fresh resnet8


def test_student_by_arch_json_file_record_and_string(teacher_dir, splits, tmp_path):
    arch_file = tmp_path / "arch.json"   # an architecture that names its space
    arch_file.write_text(json.dumps({"space": "digits_small", "arch": ARCH}))
    cfg = make_cfg(teacher_dir, "kd", student=ModelConfig(arch=str(arch_file)))  # space from file
    run_distill(cfg, tmp_path / "a", splits=splits, verbose=False)
    record = json.loads((tmp_path / "a" / "model.json").read_text())
    assert record["kind"] == "space" and record["space"]["name"] == "digits_small" and record["arch"] == ARCH
    saved_cfg = load_config(DistillConfig, str(tmp_path / "a" / "config.yaml"))
    assert saved_cfg.student.space == "digits_small" and saved_cfg.student.arch == ARCH
    # a run directory (any model.json) names a student completely: no space needed
    task = prepare_distill(make_cfg(teacher_dir, "kd", student=ModelConfig(arch=str(tmp_path / "a"))),
                           splits, "cpu")
    assert task.record["arch"] == ARCH and task.record["space"]["name"] == "digits_small"
    cfg = make_cfg(teacher_dir, "kd", student=ModelConfig(space="digits_small", arch=json.dumps(ARCH)))
    assert prepare_distill(cfg, splits, "cpu").record["arch"] == ARCH
    with pytest.raises(ValueError, match="student.space|model.space"):
        prepare_distill(make_cfg(teacher_dir, "kd", student=ModelConfig(arch=json.dumps(ARCH))),
                        splits, "cpu")
    # an explicit space wins over the one the file names (the arch must fit it)
    task = prepare_distill(make_cfg(teacher_dir, "kd", student=ModelConfig(space="gtn_cifar",
                                                                           arch=str(arch_file))),
                           splits, "cpu")
    assert task.record["space"]["name"] == "gtn_cifar" and task.record["space"]["layers"][0]["out_channels"] == 64
    with pytest.raises(ValueError, match="layer9"):
        prepare_distill(make_cfg(teacher_dir, "kd", student=ModelConfig(space="digits_small",
                                                                        arch={**ARCH, "layer9": "zero"})),
                        splits, "cpu")


def test_baseline_trains_student_alone(splits, tmp_path):
    cfg = make_cfg(None, "none", teacher=None)
    result = run_distill(cfg, tmp_path / "run", splits=splits, verbose=False)
    assert result["method"] == "none" and result["teacher"] is None
    assert result["teacher_test_acc"] is None
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train_loss_ce"] == pytest.approx(row["train_loss"])
    assert not any(k.startswith("train_loss_kd") for k in row)
    student = load_model_record(tmp_path / "run")
    init = seeded_student(json.loads((tmp_path / "run" / "model.json").read_text())).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in student.state_dict().items()
               if k.endswith("weight"))
