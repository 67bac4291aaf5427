"""`nasdistill search`: run directory, determinism, extracted student, the example's target."""
import json

import pytest
import torch
from safetensors.torch import load_file

from nasdistill.cli import main
from nasdistill.space import load_space

from small_data import TENTH_OF_DIGITS

TINY = ["train.epochs=2", "search.warmup_epochs=1", "search.mode=two", "search.target=800000",
        "search.penalty=add#abs", "search.lam=1.0", "search.arch_lr=0.05", "train.threads=1",
        TENTH_OF_DIGITS]


def _search(out, *extra):
    assert main(["search", "examples/digits_search.yaml", *TINY, *extra, "--out-dir", str(out)]) == 0
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "a"
    return out, _search(out)


def test_run_directory_and_result(first):
    out, result = first
    for key in ("arch", "macs", "params", "target_macs", "arch_id", "cost_over_target"):
        assert key in result
    space = load_space("digits_small")
    record = json.loads((out / "model.json").read_text())
    arch = record["arch"]
    assert arch == result["arch"] and space.validate(arch) == arch
    assert record["space"]["layers"][0]["candidates"] == space.choices("layer1")  # the space as data
    assert result["macs"] == space.cost(arch)["macs"] and result["target_macs"] == 800000
    # model.safetensors is the extracted student: it loads strictly into space.build(arch)
    model = space.build(arch)
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    assert result["weights_sha256"] and result["student_test_acc_before_training"] > 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "expected_cost" in rows[-1] and "phi_entropy/layer1" in rows[-1]
    assert rows[-1]["train_arch_ce"] > 0  # phi steps ran after the warm-up epoch


def test_result_records_the_chosen_student_and_the_argmax(first):
    """The exported student is the band's most probable architecture; the argmax is recorded beside it."""
    from nasdistill.space.cost import CostModel

    _, result = first
    costs = CostModel(load_space("digits_small"), "macs")
    assert result["argmax_arch"] == {l: max(p, key=p.get) for l, p in result["phi"].items()}
    assert result["argmax_cost"] == costs.of_arch(result["argmax_arch"])
    assert result["band"] == pytest.approx([720000, 880000]) and result["tolerance"] == 0.10
    assert result["in_band"] and 720000 <= result["cost"] == result["macs"] <= 880000
    assert result["band_message"] is None and result["prob"] > 0


def test_same_seed_same_architecture(first, tmp_path):
    _, result = first
    again = _search(tmp_path / "b")
    assert again["arch"] == result["arch"]


def test_missing_target_and_val_split_errors(tmp_path, capsys):
    assert main(["search", "examples/digits_search.yaml", "search.target=null", "train.epochs=1",
                 "--out-dir", str(tmp_path / "c")]) == 2
    assert "search.target is required" in capsys.readouterr().err


@pytest.mark.slow
def test_digits_search_example_lands_within_target(tmp_path):
    """The shipped example (a few minutes on 2 cores) lands within 0.9-1.1x its MACs target, where
    its argmax does not."""
    torch.set_num_threads(1)
    assert main(["search", "examples/digits_search.yaml", "--out-dir", str(tmp_path / "ex")]) == 0
    result = json.loads((tmp_path / "ex" / "result.json").read_text())
    assert 0.9 * result["target_macs"] <= result["macs"] <= 1.10 * result["target_macs"]
    assert result["argmax_cost_over_target"] < 0.9


def test_bench_supernet_and_teachers_json(capsys):
    assert main(["bench", "supernet", "digits_small", "--paths", "1", "--reps", "1", "--batch-size", "4",
                 "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) >= {"saved_bytes_ratio", "all_paths_saved_bytes_ratio", "step_time_ratio"}
    assert last["saved_bytes_ratio"] < last["all_paths_saved_bytes_ratio"]
    assert main(["bench", "teachers", "--rounds", "1", "--steps", "2", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["gtn_over_ce"] > 0 and last["sftn_over_ce"] > 0 and last["gtn_flops_over_ce"] > 1


def test_nni_comparison_runs_where_nni_imports(capsys):
    from nasdistill.bench.supernet import nni_available

    if not nni_available():
        pytest.skip("the nni extra (nni 3.0 + pytorch_lightning) is not installed; CI does not install it")
    assert main(["bench", "supernet", "digits_small", "--paths", "1", "--reps", "1", "--batch-size", "4",
                 "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["nni_step_time_ratio"] > 0
