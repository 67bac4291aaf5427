"""The papers' warm-up (init_from + frozen teacher), its run identity, the main job's
init_from_ce, and the per-epoch branch/teacher statistics of SFTN and GTN."""
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from nasdistill.cli import main
from nasdistill.config import ConfigError
from nasdistill.engine.task import StepContext
from nasdistill.engine.trainer import apply_step
from nasdistill.models import create_model
from nasdistill.space import load_space
from nasdistill.teachers.branch_stats import BranchStepStats
from nasdistill.teachers.gtn import GTNConfig, GTNTask, build_gtn

TEACHER = ["teacher", "examples/digits_teacher.yaml", "train.epochs=1", "train.batch_size=128"]
STAT_KEYS = ["sampled_branch1_acc", "sampled_branch2_acc", "sampled_branch1_entropy",
             "sampled_branch2_entropy", "teacher_logit_std", "teacher_entropy_t1", "teacher_entropy_kd"]


def _entropy(row, t=1.0):
    p = [math.exp(v / t) for v in row]
    s = sum(p)
    return -sum(q / s * math.log(q / s) for q in p)


# ---------------------------------------------------------------- the statistics
def test_branch_step_stats_match_hand_computed_values():
    stats = BranchStepStats(n_branches=2, kd_temperature=4.0)
    z_t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([3, 1])
    b1 = torch.tensor([[0.0, 0.0, 0.0, 5.0], [2.0, 0.0, 0.0, 0.0]])  # right, wrong
    b2 = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])  # wrong, right
    stats.add(z_t, [b1, b2], y)
    stats.add(z_t, [b2], y, branch_ids=[0])  # a step that ran branch 1 only: 1 of 2 right
    m = stats.metrics()
    # per-sample population std over classes: sqrt(1.25) and 0, averaged
    assert m["teacher_logit_std"] == pytest.approx(math.sqrt(1.25) / 2, rel=1e-6)
    assert m["teacher_entropy_t1"] == pytest.approx((_entropy([1, 2, 3, 4]) + math.log(4)) / 2, rel=1e-6)
    assert m["teacher_entropy_kd"] == pytest.approx((_entropy([1, 2, 3, 4], 4.0) + math.log(4)) / 2, rel=1e-6)
    assert m["sampled_branch1_acc"] == pytest.approx(100.0 * 2 / 4)
    assert m["sampled_branch2_acc"] == pytest.approx(100.0 * 1 / 2)
    e_b1 = _entropy([0, 0, 0, 5]) + _entropy([2, 0, 0, 0])
    e_b2 = _entropy([0, 1, 0, 0]) + _entropy([0, 3, 0, 0])
    assert m["sampled_branch1_entropy"] == pytest.approx((e_b1 + e_b2) / 4, rel=1e-6)
    assert m["sampled_branch2_entropy"] == pytest.approx(e_b2 / 2, rel=1e-6)
    assert stats.metrics() == {}  # reset for the next epoch


def _gtn(freeze=0, seed=0):
    torch.manual_seed(seed)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    cfg = GTNConfig(freeze_teacher_epochs=freeze, phi_lr=0.02)
    branched, gates = build_gtn(teacher, load_space("digits_small"), (1, 8, 8), cfg)
    task = GTNTask(branched, gates, cfg=cfg)
    opts = {"main": torch.optim.SGD(task.main_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)}
    opts.update(task.extra_optimizers())
    return teacher, task, opts


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g),
             torch.arange(16)) for _ in range(n)]


def test_gtn_logs_teacher_statistics_of_its_weight_steps_only():
    teacher, task, opts = _gtn()
    task.model.train()
    weight_logits = []
    for i, batch in enumerate(_batches(4)):
        ctx = StepContext(0, i, i, torch.device("cpu"))
        out = task.training_step(batch, ctx)
        if out.optimizer == "main":
            weight_logits.append(out.logits.detach())
        apply_step(task, opts, out, ctx)
    assert len(weight_logits) == 2  # steps 0 and 2; 1 and 3 are phi steps
    m = task.step_stats.metrics()
    z = torch.cat(weight_logits)
    assert m["teacher_logit_std"] == pytest.approx(float(z.std(1, correction=0).mean()), rel=1e-5)
    p = F.softmax(z / 4.0, 1)
    assert m["teacher_entropy_kd"] == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)
    assert set(STAT_KEYS) <= set(m) and "sampled_branch3_acc" in m


# ---------------------------------------------------------------- frozen means frozen
def test_frozen_teacher_gets_no_update_no_bn_change_and_no_optimizer_state():
    teacher, task, opts = _gtn(freeze=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # weights and BN statistics
    branch_before = {k: v.clone() for k, v in task.branched.branches.state_dict().items()}
    task.model.train()
    for i, batch in enumerate(_batches(4)):  # epoch 0: frozen (weight and phi steps)
        ctx = StepContext(0, i, i, torch.device("cpu"))
        apply_step(task, opts, task.training_step(batch, ctx), ctx)
    after = teacher.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()), \
        [k for k, v in before.items() if not torch.equal(v, after[k])]
    # no gradient, hence no momentum buffer and no weight decay step for any teacher parameter
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p not in opts["main"].state for p in teacher.parameters())
    moved = task.branched.branches.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in branch_before.items())
    task.model.train()
    for i, batch in enumerate(_batches(2, seed=1)):  # epoch 1: joint
        ctx = StepContext(1, 4 + i, i, torch.device("cpu"))
        apply_step(task, opts, task.training_step(batch, ctx), ctx)
    after = teacher.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if "running_mean" in k)
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.endswith("weight"))


# ---------------------------------------------------------------- init_from, end to end
@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ce") / "ce"
    assert main([*TEACHER, "method=ce", "--out-dir", str(out)]) == 0
    return out


@pytest.mark.parametrize("method,extra", [("gtn", []), ("sftn", ["sftn.student.name=resnet8"])])
def test_init_from_and_frozen_epochs_keep_the_source_teacher_exactly(tmp_path, ce_run, method, extra):
    out = tmp_path / method
    rc = main([*TEACHER, f"method={method}", f"{method}.init_from={ce_run}",
               f"{method}.freeze_teacher_epochs=1", *extra, "--out-dir", str(out)])
    assert rc == 0
    source, saved = load_file(str(ce_run / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(source) == set(saved)
    assert all(torch.equal(source[k], saved[k]) for k in source)  # started there, never moved
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(STAT_KEYS) <= set(rows[-1])
    assert 0.0 <= rows[-1]["sampled_branch1_acc"] <= 100.0
    result = json.loads((out / "result.json").read_text())
    ce_result = json.loads((ce_run / "result.json").read_text())
    assert result["init_from_weights_sha256"] == ce_result["weights_sha256"]
    assert result["init_from_wall_time_s"] == ce_result["wall_time_s"]


def test_init_from_identity_is_the_weights_not_the_path(tmp_path, ce_run):
    from nasdistill.config import load_config
    from nasdistill.engine.run import fingerprint
    from nasdistill.teachers import teacher_config_class
    from nasdistill.teachers.runner import TEACHER_RUN

    moved = tmp_path / "elsewhere"
    shutil.copytree(ce_run, moved)
    cls = teacher_config_class()
    ids = [TEACHER_RUN.identity_of(load_config(cls, "examples/digits_teacher.yaml",
                                               ["method=gtn", f"gtn.init_from={d}"])) for d in (ce_run, moved)]
    assert ids[0] == ids[1] and fingerprint(ids[0]) == fingerprint(ids[1])
    digest = json.loads((ce_run / "result.json").read_text())["weights_sha256"]
    assert ids[0]["init_from_weights"] == digest and ids[0]["gtn.init_from"] is None


def test_a_teacher_run_is_the_same_whatever_the_sections_of_other_methods():
    """A CE teacher does not read ``gtn.*`` or ``sftn.*``: the warm-up's keys leave its identity (and
    the finished CE runs of one job serve another) unchanged; the GTN teacher's own keys do change
    its identity. The same holds for a distillation and the other methods' sections."""
    from nasdistill.distill import distill_config_class
    from nasdistill.distill.runner import DISTILL_RUN
    from nasdistill.config import load_config
    from nasdistill.engine.run import fingerprint
    from nasdistill.teachers import teacher_config_class
    from nasdistill.teachers.runner import TEACHER_RUN

    def teacher(*keys):
        cfg = load_config(teacher_config_class(), "examples/digits_teacher.yaml", list(keys))
        return fingerprint(TEACHER_RUN.identity_of(cfg))

    other = ["gtn.freeze_teacher_epochs=3", "gtn.alpha=1.0", "sftn.lam_kl=2.0"]
    assert teacher("method=ce") == teacher("method=ce", *other)
    assert teacher("method=gtn") != teacher("method=gtn", "gtn.alpha=1.0")
    assert teacher("method=ce") != teacher("method=ce", "train.lr=0.2")

    def distill(*keys):
        cfg = load_config(distill_config_class(), None, ["method=none", *keys])
        return fingerprint(DISTILL_RUN.identity_of(cfg))

    assert distill() == distill("kd.temperature=2.0", "dkd.beta=1.0")
    assert distill() != distill("train.lr=0.2")


def test_missing_unfinished_or_other_model_init_from_is_refused_before_writing(tmp_path, ce_run, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(ce_run, unfinished)
    (unfinished / "result.json").unlink()
    cases = [(tmp_path / "nope", "is not a teacher run directory"),
             (unfinished, "has not finished"),
             (ce_run, "zoo model resnet8, but model is zoo model resnet14")]
    for k, (src, message) in enumerate(cases):
        out = tmp_path / f"run{k}"
        extra = ["model.name=resnet14"] if k == 2 else []
        assert main([*TEACHER, "method=gtn", f"gtn.init_from={src}", *extra, "--out-dir", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "gtn.init_from" in err and "Traceback" not in err
        assert not out.exists()


# ---------------------------------------------------------------- the main job
def test_init_from_ce_needs_ce_among_the_methods():
    from nasdistill.config import load_config
    from nasdistill.pipeline.config import PipelineConfig

    with pytest.raises(ConfigError, match="teachers.init_from_ce"):
        load_config(PipelineConfig, None, ["teachers.init_from_ce=true", "teachers.methods=[gtn]"])


def _recording_stage(cfg):
    """A stage that records its runs; every run 'finishes' with a made-up result."""
    from nasdistill.pipeline.stage import Pending, Progress, Stage

    class RecordingStage(Stage):
        def start(self, name, specs):
            self.calls.append([(p.config["method"], p.config["seed"],
                                p.config[p.config["method"]].get("init_from")
                                if p.config["method"] in ("gtn", "sftn") else None) for p in specs])
            return Pending(lambda: [{"wall_time_s": 10.0 * (1 + i), "test_acc": 90.0}
                                    for i in range(len(specs))])

    stage = RecordingStage(cfg, "resume", Progress(False))
    stage.calls = []
    return stage


def test_train_teachers_trains_ce_first_and_starts_gtn_and_sftn_from_it(tmp_path):
    from nasdistill.config import load_config
    from nasdistill.pipeline.config import PipelineConfig
    from nasdistill.pipeline.steps import teacher_dir, train_teachers

    cfg = load_config(PipelineConfig, None, ["teachers.init_from_ce=true", "teachers.methods=[gtn,ce,sftn]",
                                             "distill.seeds=[0,1]"])
    stage = _recording_stage(cfg)
    teachers = train_teachers(cfg, tmp_path, [], stage)
    first, second = stage.calls
    assert first == [("ce", 0, None), ("ce", 1, None)]
    assert second == [(m, s, str(teacher_dir(tmp_path, "ce", s))) for m in ("gtn", "sftn") for s in (0, 1)]
    assert list(teachers) == [("gtn", 0), ("gtn", 1), ("ce", 0), ("ce", 1), ("sftn", 0), ("sftn", 1)]
    assert teachers[("sftn", 1)]["result"]["wall_time_s"] == 40.0  # the 4th run of the second stage


def test_teacher_rows_count_the_epochs_of_the_teacher_it_started_from(tmp_path, ce_run):
    from nasdistill.data import load_dataset
    from nasdistill.config import load_config
    from nasdistill.pipeline.config import PipelineConfig
    from nasdistill.pipeline.steps import teacher_rows

    cfg = load_config(PipelineConfig, None, [])
    result = json.loads((ce_run / "result.json").read_text())
    warm = dict(result, init_from_wall_time_s=12.5)
    rows = teacher_rows(cfg, {("ce", 0): {"dir": ce_run, "result": result},
                              ("gtn", 0): {"dir": ce_run, "result": warm}}, load_dataset("digits"), "cpu")
    assert rows[0]["init_wall_time_s"] is None and rows[0]["total_wall_time_s"] == result["wall_time_s"]
    assert rows[1]["init_wall_time_s"] == 12.5
    assert rows[1]["total_wall_time_s"] == pytest.approx(result["wall_time_s"] + 12.5)


def test_without_warm_starts_the_branch_trained_teachers_start_first_and_results_map_back(tmp_path):
    from nasdistill.config import load_config
    from nasdistill.pipeline.config import PipelineConfig
    from nasdistill.pipeline.steps import train_teachers

    cfg = load_config(PipelineConfig, None, ["teachers.methods=[ce,gtn]", "distill.seeds=[0,1]"])
    stage = _recording_stage(cfg)
    teachers = train_teachers(cfg, tmp_path, [], stage)
    [only] = stage.calls  # one wave: nothing waits for another teacher
    assert only == [("gtn", 0, None), ("gtn", 1, None), ("ce", 0, None), ("ce", 1, None)]
    # the recording stage answers run k of a call with wall time 10 (k + 1): each result is its own run's
    assert {k: v["result"]["wall_time_s"] for k, v in teachers.items()} == {
        ("gtn", 0): 10.0, ("gtn", 1): 20.0, ("ce", 0): 30.0, ("ce", 1): 40.0}
