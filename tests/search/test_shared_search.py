"""Several cost targets: one supernet for all of them (each target its own phi), a student per target
in its folder, the student chosen within the target's band, resume and restart of the one run."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import nasdistill
from nasdistill.cli import main
from nasdistill.config import load_config
from nasdistill.search import ArgmaxPath, SearchConfig, SearchModel, run_search
from nasdistill.search.students import constrained_choice
from nasdistill.space import load_space
from nasdistill.space.enumeration import cost_range
from nasdistill.supernet import ArchGates, Supernet
from nasdistill.space.cost import CostModel

from small_data import TENTH_OF_DIGITS

TARGETS = [600000, 3000000]
SHARED = ["train.epochs=3", "search.warmup_epochs=1", "search.mode=two", "search.target=null",
          f"search.targets=[{','.join(map(str, TARGETS))}]", "search.penalty=add#abs", "search.lam=1.0",
          "search.arch_lr=0.05", "train.threads=1", TENTH_OF_DIGITS]
FOLDERS = [f"target_{t}" for t in TARGETS]


def _search(out, *extra):
    assert main(["search", "examples/digits_search.yaml", *SHARED, *extra, "--out-dir", str(out)]) == 0
    return json.loads((out / "result.json").read_text())


def _digests(out):
    return {name: json.loads((out / name / "result.json").read_text())["weights_sha256"] for name in FOLDERS}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    out = tmp_path_factory.mktemp("shared") / "run"
    return out, _search(out)


def test_one_run_a_student_folder_per_target(shared):
    out, result = shared
    space = load_space("digits_small")
    costs = CostModel(space, "macs")
    assert result["shared"] is True and [s["folder"] for s in result["students"]] == FOLDERS
    assert not (out / "model.json").exists()  # the run's weights are the supernet's
    supernet_state = load_file(str(out / "model.safetensors"))
    assert {"gates.0.phi.layer1", "gates.1.phi.layer1"} <= set(supernet_state)
    assert not any(k.startswith("supernet.gates") for k in supernet_state)  # phi stored once per target
    phis = []
    for row, target in zip(result["students"], TARGETS):
        folder = out / row["folder"]
        mine = json.loads((folder / "result.json").read_text())
        model = nasdistill.load(folder)  # a student folder loads like any run directory
        record = json.loads((folder / "model.json").read_text())
        assert record["arch"] == mine["arch"] == row["arch"] and mine["weights_sha256"] == row["weights_sha256"]
        assert mine["target"] == target and mine["cost"] == costs.of_arch(mine["arch"]) == mine["macs"]
        assert mine["argmax_cost"] == costs.of_arch(mine["argmax_arch"])
        assert mine["argmax_arch"] == {l: max(p, key=p.get) for l, p in mine["phi"].items()}
        assert 0 < mine["prob"] <= 1 and math.isclose(math.log(mine["prob"]), mine["log_prob"], rel_tol=1e-9)
        assert mine["in_band"] and 0.9 * target <= mine["cost"] <= 1.1 * target
        # the student's weights are the shared supernet's path (BatchNorm statistics recalibrated)
        sn = Supernet(space, mode="two")
        sn.load_state_dict({k[len("supernet."):]: v for k, v in supernet_state.items()
                            if k.startswith("supernet.")}, strict=False)
        plain = sn.extract(mine["arch"]).state_dict()
        for k, v in model.state_dict().items():
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.equal(v, plain[k]), k
        phis.append(mine["phi"])
    assert phis[0] != phis[1]  # each target kept its own phi
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(f"argmax_cost/{f}" in rows[-1] and f"expected_cost/{f}" in rows[-1]
                                  for f in FOLDERS)
    assert rows[-1]["train_arch_ce"] > 0


def test_the_argmax_misses_and_the_exported_student_is_in_the_band(shared):
    """Seed 0, 3 epochs: the small target's argmax is far below its band; the exported student is in it."""
    out, _ = shared
    mine = json.loads((out / "target_600000" / "result.json").read_text())
    assert not 0.9 <= mine["argmax_cost_over_target"] <= 1.1
    assert 0.9 <= mine["cost_over_target"] <= 1.1 and mine["arch"] != mine["argmax_arch"]
    assert mine["band"] == pytest.approx([540000, 660000]) and mine["band_message"] is None


def test_a_student_folder_serves_distillation(shared, tmp_path):
    out, _ = shared
    assert main(["distill", "examples/digits_distill.yaml", "student.space=null",
                 f"student.arch={out / 'target_3000000'}", "teacher=null", "method=none", "train.epochs=1",
                 "train.threads=1", "--out-dir", str(tmp_path / "d")]) == 0
    record = json.loads((tmp_path / "d" / "model.json").read_text())
    assert record["arch"] == json.loads((out / "target_3000000" / "result.json").read_text())["arch"]


def test_missing_student_folders_are_written_again_equal(shared, tmp_path):
    out, _ = shared
    import shutil

    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    before = _digests(copy_dir)
    shutil.rmtree(copy_dir / "target_600000")
    (copy_dir / "target_3000000" / "model.safetensors").write_bytes(b"damaged")
    _search(copy_dir, "--resume")
    assert _digests(copy_dir) == before
    assert _search(copy_dir, "--resume")["students"] == json.loads((out / "result.json").read_text())["students"]


def test_an_interrupted_shared_search_resumes_equal(shared, tmp_path, monkeypatch):
    out, _ = shared
    from nasdistill.search.task import SearchTask

    cfg = load_config(SearchConfig, "examples/digits_search.yaml", SHARED)
    original = SearchTask.epoch_metrics

    def stop_in_third_epoch(self, epoch, loaders):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch, loaders)

    monkeypatch.setattr(SearchTask, "epoch_metrics", stop_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "r", mode="new", verbose=False)
    assert not (tmp_path / "r" / "result.json").exists()
    monkeypatch.setattr(SearchTask, "epoch_metrics", original)
    run_search(cfg, tmp_path / "r", mode="resume", verbose=False)
    assert _digests(tmp_path / "r") == _digests(out)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "r" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_restart_with_other_targets_removes_the_old_folders(shared, tmp_path):
    out, _ = shared
    import shutil

    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    assert main(["search", "examples/digits_search.yaml", *SHARED, "train.epochs=2", "train.batch_size=256", "search.targets=[1500000]",
                 "--restart", "--out-dir", str(copy_dir)]) == 0
    assert sorted(p.name for p in copy_dir.glob("target_*")) == ["target_1500000"]


def test_separate_searches_are_a_run_each(tmp_path):
    out = tmp_path / "sep"
    assert main(["search", "examples/digits_search.yaml", *SHARED, "train.epochs=2", "train.batch_size=256",
                 "search.shared=false", "--out-dir", str(out)]) == 0
    for name in FOLDERS:
        assert (out / name / "run.json").is_file() and (out / name / "last.ckpt").is_file()
        nasdistill.load(out / name)
    assert not (out / "run.json").exists()


@pytest.mark.parametrize("override, words", [
    ("search.target=1e6", "search.target=null"),
    ("search.targets=[6e5,600000.4]", "repeats a target"),
    ("search.tolerance=1.5", "search.tolerance"),
])
def test_bad_targets_get_one_sentence(tmp_path, capsys, override, words):
    assert main(["search", "examples/digits_search.yaml", *SHARED, override, "--out-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


# ---------------------------------------------------------------------------- units
def _favour(gates: ArchGates, arch: dict, logit: float = 3.0) -> None:
    with torch.no_grad():
        for label, choice in arch.items():
            gates.logits(label).zero_()[gates.choices[label].index(choice)] = logit


def test_switching_gates_keeps_export_extraction_and_phi_gradients_per_target():
    torch.manual_seed(0)
    space = load_space("digits_small")
    supernet = Supernet(space, mode="full", seed=0)
    big = {l: "k3_d4" for l in space.labels}
    small = {**{l: "zero" for l in space.labels}, "layer1": "k3_d2"}
    g0, g1 = supernet.gates, ArchGates(space, "full", 1)
    _favour(g0, small)
    _favour(g1, big)
    reference = copy.deepcopy(supernet)  # a plain supernet with target 1's phi as its own gates
    with torch.no_grad():
        for label in space.labels:
            reference.gates.logits(label).copy_(g1.logits(label))
    model = SearchModel(supernet, [g0, g1])
    assert not {id(p) for p in model.weight_parameters()} & {id(p) for g in (g0, g1) for p in g.parameters()}
    assert model.use(1).export() == big and model.use(0).export() == small
    assert all(layer.gates is g0 for layer in supernet.stages)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    model.eval()
    reference.eval()
    assert torch.equal(ArgmaxPath(model, 1)(x), ArgmaxPath(reference)(x))
    assert supernet.gates is g1 and all(layer.gates is g1 for layer in supernet.stages)
    # extraction copies weights only: the same network whichever target is active
    with torch.no_grad():
        a = model.use(0).extract(big).eval()(x)
        b = model.use(1).extract(big).eval()(x)
    assert torch.equal(a, b)
    # a phi step of target 1 (a path with a stride-2 skip: exact loss differences) reaches g1 alone,
    # with the gradient a plain supernet with those gates gets
    path = {**big, "layer3": "zero", "layer5": "identity"}
    model.train()
    reference.train()
    grads = []
    for net in (model.use(1), reference):
        net.gates.use_path(path, arch_grad=True)
        net.path_loss = lambda logits: F.cross_entropy(logits, y)
        F.cross_entropy(net(x), y).backward()
        grads.append({l: net.gates.logits(l).grad.clone() for l in space.labels})
    assert all(g0.logits(l).grad is None for l in space.labels)
    for label in space.labels:
        assert torch.allclose(grads[0][label], grads[1][label], atol=1e-6), label
        assert grads[0][label].abs().sum() > 0


def test_the_chosen_student_is_the_most_probable_in_the_band():
    space = load_space("digits_small")
    costs = CostModel(space, "macs")
    gates = ArchGates(space, "two", 0)
    big = {l: "k3_d4" for l in space.labels}
    _favour(gates, big, 2.0)
    phi = gates.probabilities()
    choice = constrained_choice(space, phi, costs, 600000, 0.10)
    assert choice.argmax_arch == big and costs.of_arch(big) > 1.1 * 600000  # the argmax misses
    assert choice.in_band and 540000 <= choice.cost <= 660000 and choice.cost == costs.of_arch(choice.arch)

    def log_p(arch):
        return sum(math.log(phi[l][arch[l]]) for l in space.labels)

    assert math.isclose(choice.log_prob, log_p(choice.arch), rel_tol=1e-9)
    # no architecture in the band beats it (checked on random architectures of the space)
    for seed in range(300):
        arch = space.sample(seed=seed)
        if 540000 <= costs.of_arch(arch) <= 660000:
            assert log_p(arch) <= choice.log_prob + 1e-9
    # an empty band: the closest architecture, and a message that says so
    lowest = constrained_choice(space, phi, costs, 10, 0.10)
    assert not lowest.in_band and lowest.message
    assert lowest.cost == cost_range(space)["macs_min"]


def test_the_main_job_searches_every_target_in_one_run(tmp_path):
    import shutil

    from nasdistill.pipeline import PipelineConfig
    from nasdistill.pipeline.stage import Progress, Stage
    from nasdistill.pipeline.steps import search_students

    tiny = ["search.targets=[500000,2000000]", "search.train.epochs=2", "search.search.warmup_epochs=1",
            "search.train.batch_size=256", "workers=1", TENTH_OF_DIGITS]
    cfg = load_config(PipelineConfig, None, tiny)
    space = load_space(cfg.space)
    stage = Stage(cfg, "resume", Progress(False))
    students = search_students(cfg, tmp_path, space, stage)
    assert stage.ran == 1 and sorted(p.name for p in (tmp_path / "search").iterdir()) == ["shared"]
    assert [s["target_macs"] for s in students] == [500000, 2000000]
    for s in students:
        assert 0.9 <= s["macs"] / s["target_macs"] <= 1.1 and s["kind"] == "searched"
        record = json.loads((tmp_path / "search" / "shared" / f"target_{int(s['target_macs'])}" / "model.json").read_text())
        assert record["arch"] == s["arch"]
    shutil.rmtree(tmp_path / "search" / "shared" / "target_500000")  # a lost student folder ...
    assert search_students(cfg, tmp_path, space, stage) == students  # ... is written again, equal
    assert (tmp_path / "search" / "shared" / "target_500000" / "model.safetensors").is_file()
    separate = load_config(PipelineConfig, None, tiny + ["search.search.shared=false"])
    stage = Stage(separate, "resume", Progress(False))
    search_students(separate, tmp_path, space, stage)
    assert stage.ran == 2 and all((tmp_path / "search" / f"target_{t}" / "run.json").is_file()
                                  for t in (500000, 2000000))


def test_the_shared_search_bench_prints_both_tables(tmp_path, capsys, monkeypatch):
    """examples/shared_search_bench.py at a tiny size: a time row per search, a student row per
    target and way, every student within its band."""
    import runpy
    import sys
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[2] / "examples" / "shared_search_bench.py")
    monkeypatch.setattr(sys, "argv", [script, "--quick", "--seeds", "0", "--batch-size", "256",
                                     "--out", str(tmp_path / "b")])
    capsys.readouterr()
    runpy.run_path(script, run_name="__main__")
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    times = {r[0].strip(): r for r in rows if r[0].strip() not in ("search", "separate", "shared")}
    assert set(times) == {"separate target_600000", "separate target_1500000", "separate target_3000000",
                          "separate, all targets", "shared, all targets"}
    students = [r for r in rows if r[0].strip() in ("separate", "shared")]
    assert len(students) == 6
    for r in students:
        assert 0.9 <= float(r[4].strip().rstrip("x")) <= 1.1
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert bench["times"]["shared, all targets"]["cpu_s"] > 0
