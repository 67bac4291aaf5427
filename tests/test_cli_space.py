"""`nasdistill space list/show/sample/cost`."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nasdistill.cli import main
from search_spaces import digits_small, gtn_cifar

DIGITS = digits_small.SPACE
GTN = gtn_cifar.SPACE

USER_SPACE = textwrap.dedent('''
    from nasdistill.space import Layer, SearchSpace

    SPACE = SearchSpace(name="tiny_user", input_size=(3, 8, 8), num_classes=3, stem_channels=4,
                        layers=[Layer(8, 1, ["k3_d2", "zero"]), Layer(8, 2, ["k5_d2", "identity"])],
                        head_width=None)
''')


def run_cli(capsys, *argv):
    code = main(["space", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and {"gtn_cifar", "digits_small"} <= set(out.split())


def test_show_gtn_cifar(capsys):
    code, out, _ = run_cli(capsys, "show", "gtn_cifar")
    assert code == 0
    rng = GTN.cost_range()
    assert "architectures: 181,389" in out
    assert f"MACs: {rng['macs_min']:,} .. {rng['macs_max']:,}" in out
    assert f"params: {rng['params_min']:,} .. {rng['params_max']:,}" in out
    for label in GTN.labels:
        assert label in out
    assert "k5_d6" in out and "identity" in out and "zero" in out


def test_sample_json_validates(capsys):
    code, out, _ = run_cli(capsys, "sample", "digits_small", "--seed", "3", "--json")
    assert code == 0
    obj = json.loads(out)
    assert DIGITS.validate(obj["arch"]) == DIGITS.sample(seed=3)
    assert obj["id"] == DIGITS.arch_id(obj["arch"])
    assert obj["cost"] == DIGITS.cost(obj["arch"])
    assert obj["space"] == "digits_small" and obj["seed"] == 3


def test_sample_human_output_and_describe(capsys):
    code, out, _ = run_cli(capsys, "sample", "gtn_cifar", "--seed", "5", "--describe")
    assert code == 0
    arch = GTN.sample(seed=5)
    cost = GTN.cost(arch)
    assert json.dumps(arch) in out
    assert GTN.arch_id(arch) in out
    assert f"{cost['macs']:,}" in out and f"{cost['params']:,}" in out
    assert GTN.describe_arch(arch) in out


def test_cost_from_json_string_and_from_file(capsys, tmp_path):
    arch = gtn_cifar.S_NAS_M
    code, out, _ = run_cli(capsys, "cost", "gtn_cifar", json.dumps(arch), "--json")
    assert code == 0
    assert json.loads(out)["cost"] == GTN.cost(arch)

    code, out, _ = run_cli(capsys, "sample", "digits_small", "--seed", "7", "--json")
    path = tmp_path / "arch.json"
    path.write_text(out)
    code, out, _ = run_cli(capsys, "cost", "digits_small", str(path), "--json")
    assert code == 0
    assert json.loads(out)["cost"] == DIGITS.cost(DIGITS.sample(seed=7))


@pytest.mark.parametrize("arch,needle", [
    ('{"layer1": "k3_d2"', "not valid JSON"),
    ('{"layer1": 3}', "layer1"),
    ("missing_arch.json", "neither an existing file or folder nor a JSON mapping"),
])
def test_cost_errors_exit_2(capsys, arch, needle):
    code, out, err = run_cli(capsys, "cost", "digits_small", arch)
    assert code == 2 and needle in err and out == ""


def test_bad_space_name_exits_2_with_help(capsys):
    code, out, err = run_cli(capsys, "show", "no_such_space")
    assert code == 2
    assert "no_such_space" in err and "gtn_cifar" in err and ".py" in err


def test_missing_space_file_exits_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "show", str(tmp_path / "nope.py"))
    assert code == 2 and "does not exist" in err


def test_file_without_space_exits_2(capsys, tmp_path):
    path = tmp_path / "empty_space.py"
    path.write_text("X = 1\n")
    code, _, err = run_cli(capsys, "show", str(path))
    assert code == 2 and "SPACE" in err


def test_space_given_as_py_path(capsys, tmp_path):
    path = tmp_path / "tiny_user.py"
    path.write_text(USER_SPACE)
    code, out, _ = run_cli(capsys, "show", str(path))
    assert code == 0
    assert "space tiny_user" in out and "architectures: 4" in out
    code, out, _ = run_cli(capsys, "sample", str(path), "--seed", "1", "--json")
    assert code == 0
    assert set(json.loads(out)["arch"]) == {"layer1", "layer2"}


def console_script():
    here = os.path.join(os.path.dirname(sys.executable), "nasdistill")
    if os.path.exists(here):
        return here
    import shutil

    found = shutil.which("nasdistill")
    assert found, "the nasdistill console script is not installed (pip install -e .)"
    return found


def test_console_script_subprocess(tmp_path):
    proc = subprocess.run([console_script(), "space", "sample", "digits_small", "--seed", "3", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert DIGITS.validate(json.loads(proc.stdout)["arch"]) == DIGITS.sample(seed=3)
    proc = subprocess.run([console_script(), "space", "show", "no_such_space"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "no search space named" in proc.stderr
