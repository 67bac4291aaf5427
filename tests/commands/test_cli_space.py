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
    assert "architectures: 108,549" in out
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
    """The installed ``nasdistill`` script runs the CLI (``nasdistill.cli:main``, whose return value
    the script exits with: the exit codes are checked through ``main`` above)."""
    proc = subprocess.run([console_script(), "space", "sample", "digits_small", "--seed", "3", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert DIGITS.validate(json.loads(proc.stdout)["arch"]) == DIGITS.sample(seed=3)


# ----------------------------------------------------------------------------- --range, --graph
def test_cost_range_digits_exact(capsys):
    code, out, _ = run_cli(capsys, "cost", "digits_small", "--range")
    assert code == 0
    assert out.splitlines() == ["space digits_small: input 1x8x8, 10 classes",
                                "MACs: 43,264 .. 14,625,024",
                                "params: 3,770 .. 487,162"]


def test_cost_range_adapts_to_input_size_and_classes(capsys):
    code, out, _ = run_cli(capsys, "cost", "digits_small", "--range", "--json",
                           "--input-size", "1,16,16", "--num-classes", "3")
    assert code == 0
    got = json.loads(out)
    assert got == {"space": "digits_small", "input_size": [1, 16, 16], "num_classes": 3,
                   "macs_min": 168_320, "macs_max": 58_495_360, "params_min": 2_867,
                   "params_max": 486_259}
    adapted = digits_small.make_space(num_classes=3, input_size=(1, 16, 16))
    costs = [adapted.cost(a) for a in adapted.architectures()]
    assert got["macs_min"] == min(c["macs"] for c in costs)
    assert got["macs_max"] == max(c["macs"] for c in costs)
    assert got["params_min"] == min(c["params"] for c in costs)
    assert got["params_max"] == max(c["params"] for c in costs)


def test_cost_of_an_arch_follows_the_input_size(capsys):
    arch = DIGITS.sample(seed=2)
    code, out, _ = run_cli(capsys, "cost", "digits_small", json.dumps(arch), "--json",
                           "--input-size", "1,16,16")
    assert code == 0
    assert json.loads(out)["cost"] == digits_small.make_space(input_size=(1, 16, 16)).cost(arch)


@pytest.mark.parametrize("argv,needle", [
    (["cost", "digits_small"], "either an architecture"),
    (["cost", "digits_small", '{"layer1": "zero"}', "--range"], "either an architecture"),
    (["cost", "digits_small", "--range", "--input-size", "8,8"], "C,H,W"),
    (["cost", "digits_small", "--range", "--num-classes", "0"], "--num-classes"),
])
def test_cost_range_errors_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and needle in err and out == "" and "Traceback" not in err


def test_show_graph_text(capsys):
    code, out, _ = run_cli(capsys, "show", "digits_small", "--graph")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "space digits_small: layered graph, 20 nodes, 71 edges, 15,625 paths (MACs per edge)"
    assert lines[1] == "stem: 1x8x8 -> 16x8x8  9,216"
    # layer 5 (64 wide, stride 2) reads the three shapes layers 3 and 4 can produce
    block = out.split("layer 5 (layer5, 64 channels, stride 2): 3 arriving shape(s)\n")[1].split("layer 6")[0]
    shapes = [l.strip() for l in block.splitlines() if not l.startswith("    ")]
    assert shapes == ["32x8x8", "32x4x4", "16x8x8"]
    assert {(c, hw) for c, hw in DIGITS.arriving_states(0, DIGITS.stem_shape())[4]} == {
        (32, (8, 8)), (32, (4, 4)), (16, (8, 8))}
    edges = [l.split() for l in block.split("  32x4x4\n")[1].split("  16x8x8")[0].splitlines()]
    assert edges == [["k3_d2", "->", "64x2x2", "229,376"], ["k3_d4", "->", "64x2x2", "524,288"],
                     ["k5_d2", "->", "64x2x2", "622,592"], ["identity", "->", "64x2x2", "0"],
                     ["zero", "->", "32x4x4", "0"]]
    assert DIGITS.layer_ops(4)["k5_d2"].cost(32, 64, 2, (4, 4))[0] == 622_592
    head = out.split("head: 6 arriving shape(s), each with the head's cost\n")[1].splitlines()
    assert head[0].split() == ["64x8x8", "525,568"]
    assert DIGITS.head_cost(64, (8, 8))[0] == 525_568


def test_show_graph_png(capsys, tmp_path):
    path = tmp_path / "graph.png"
    code, out, _ = run_cli(capsys, "show", "digits_small", "--graph-out", str(path))
    assert code == 0 and str(path) in out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
