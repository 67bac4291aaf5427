"""model.py of an export: plain PyTorch that runs where nasdistill cannot be imported, gives the
outputs of `nasdistill.load`, trains, and is checked and recorded by the export like any format."""
import ast
import json
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import nasdistill
from nasdistill.network.folder import sha256_file
from nasdistill.network.export import export_model, finished_export
from nasdistill.network.model_source import UnsupportedSource, model_source
from nasdistill.models import create_model
from nasdistill.models.resnetv2 import BottleneckResNet
from nasdistill.network.record import ModelRecord
from nasdistill.space import load_space

# skipped (zero) and identity layers, one identity that subsamples and pads (layer5: 32 -> 64, /2)
ARCH = {"layer1": "k3_d2", "layer2": "identity", "layer3": "zero", "layer4": "k5_d2",
        "layer5": "identity", "layer6": "zero"}
OPS_SPACE = '''
from torch import nn
from nasdistill.registry import register
from nasdistill.space import Layer, SearchSpace

GROUPS = 1


def sep3(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin * GROUPS, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


register("op", "sep3_src", sep3)
SPACE = SearchSpace(name="src_space", input_size=(1, 8, 8), num_classes=10, stem_channels=8,
                    layers=[Layer(8, 1, ["sep3_src", "zero"]), Layer(16, 2, ["sep3_src", "k3_d2"])],
                    head_width=None)
'''
# what model.py may import: torch, safetensors and the standard library
ALLOWED_IMPORTS = {"__future__", "hashlib", "os", "math", "dataclasses", "typing", "torch", "safetensors"}

# Runs in a fresh interpreter where `import nasdistill` fails: for each case, load model.py's network
# (its load(), or a constructor of the file with given weights), record its outputs on the case's
# input, then take one SGD step and record whether every parameter that got a gradient changed.
RUNNER = textwrap.dedent('''
    import json, runpy, sys
    sys.modules["nasdistill"] = None  # an import of nasdistill (or of any submodule) now fails
    try:
        import nasdistill  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("nasdistill is importable: the test would prove nothing")
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    out = {}
    for case in json.load(open(sys.argv[1])):
        ns = runpy.run_path(case["model_py"])
        if case["construct"]:
            net = eval(case["construct"], ns)
            net.load_state_dict(load_file(case["weights"]))
            net.eval()
        else:
            net = ns["load"]()
        x = torch.load(case["input"])
        with torch.no_grad():
            y = net(x)
        net.train()
        before = {k: p.detach().clone() for k, p in net.named_parameters()}
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loss = F.cross_entropy(net(x), torch.arange(x.shape[0]) % y.shape[1])
        loss.backward()
        opt.step()
        moved = [not torch.equal(before[k], p) for k, p in net.named_parameters() if p.grad is not None]
        torch.save(y, case["output"])
        out[case["name"]] = {"loss": float(loss), "trained": len(moved) > 0 and all(moved),
                             "params": len(before)}
    print(json.dumps(out))
''')


def imported_roots(source: str) -> set:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    return roots


def run_without_nasdistill(tmp_path, cases):
    """Run RUNNER on ``cases``; return its per-case report and outputs."""
    spec = tmp_path / "cases.json"
    for case in cases:
        case.setdefault("construct", None)
        case["output"] = str(tmp_path / f"{case['name']}.out.pt")
    spec.write_text(json.dumps(cases))
    done = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report, {c["name"]: torch.load(c["output"]) for c in cases}


def test_exported_model_py_runs_without_nasdistill_and_matches_load(tmp_path, randomize):
    space = load_space("digits_small", num_classes=10, input_size=(1, 8, 8))
    ops_file = tmp_path / "src_space.py"
    ops_file.write_text(OPS_SPACE)
    ops_space = load_space(str(ops_file))
    exports = {
        "space": (randomize(space.build(ARCH)).eval(), {"space": space, "arch": ARCH}),
        "resnet8": (randomize(create_model("resnet8", num_classes=5, in_channels=1)).eval(),
                    {"record": ModelRecord.zoo("resnet8", 5, (1, 8, 8))}),
        "custom_op": (randomize(ops_space.build({"layer1": "sep3_src", "layer2": "sep3_src"})).eval(),
                      {"space": ops_space, "arch": {"layer1": "sep3_src", "layer2": "sep3_src"}}),
    }
    cases, inputs = [], {}
    for name, (model, how) in exports.items():
        folder = tmp_path / name
        result = export_model(model, folder, onnx=False, verbose=False, **how)
        source = (folder / "model.py").read_text()
        assert imported_roots(source) <= ALLOWED_IMPORTS, imported_roots(source)
        # recorded and checked like every format
        assert result["files"]["python"] == {"file": "model.py", "bytes": len(source.encode()),
                                             "sha256": sha256_file(folder / "model.py")}
        assert result["max_abs_diff"]["python"] == 0.0 and "python" not in result["errors"]
        assert json.loads((folder / "export.json").read_text())["files"]["python"]["sha256"] == \
            sha256_file(folder / "model.py")
        inputs[name] = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(len(cases)))
        torch.save(inputs[name], tmp_path / f"{name}.in.pt")
        cases.append({"name": name, "model_py": str(folder / "model.py"), "input": str(tmp_path / f"{name}.in.pt")})
    ops_file.unlink()  # model.py holds the custom op's source itself
    assert "def sep3(cin, cout, stride):" in (tmp_path / "custom_op" / "model.py").read_text()
    assert "GROUPS = 1" in (tmp_path / "custom_op" / "model.py").read_text()  # what the op refers to
    space_py = (tmp_path / "space" / "model.py").read_text()
    for block in ("class ShapeIdentity", "class Skip", "class ResStack", "class SpaceHead", "class StagedModel"):
        assert block in space_py
    assert "# layer5: identity, 32 -> 64 channels, 8x8 -> 4x4" in space_py

    report, outputs = run_without_nasdistill(tmp_path, cases)
    for name, (model, _) in exports.items():
        loaded = nasdistill.load(tmp_path / name)
        with torch.no_grad():
            expected = loaded(inputs[name])
            assert torch.equal(expected, model(inputs[name]))
        assert torch.equal(outputs[name], expected), name
        assert report[name]["trained"], report[name]
        assert report[name]["params"] == len(dict(model.named_parameters()))


def test_every_zoo_family_copies_standalone(tmp_path, randomize):
    """The family's module made standalone: resnet, resnetv2, wrn, vgg, mobilenetv2, shufflenet v1/v2.
    ResNet50 (94 MB) is checked on a one-block-per-stage network of the same copied classes."""
    families = {"resnet8x4": None, "ResNet50": "BottleneckResNet((1, 1, 1, 1), 3, 1)", "wrn_16_1": None,
                "vgg8": None, "MobileNetV2": None, "ShuffleV1": None, "ShuffleV2": None}
    cases, expected = [], {}
    for i, (name, construct) in enumerate(families.items()):
        folder = tmp_path / name
        folder.mkdir()
        model = randomize(BottleneckResNet((1, 1, 1, 1), 3, 1) if construct else
                          create_model(name, num_classes=3, in_channels=1), seed=i).eval()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
        source = model_source(ModelRecord.zoo(name, 3, (1, 8, 8)), sha256_file(folder / "model.safetensors"))
        assert "nasdistill" not in imported_roots(source) and imported_roots(source) <= ALLOWED_IMPORTS
        (folder / "model.py").write_text(source)
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(i))
        torch.save(x, tmp_path / f"{name}.in.pt")
        with torch.no_grad():
            expected[name] = model(x)
        cases.append({"name": name, "model_py": str(folder / "model.py"), "input": str(tmp_path / f"{name}.in.pt"),
                      "construct": construct, "weights": str(folder / "model.safetensors")})
    report, outputs = run_without_nasdistill(tmp_path, cases)
    for name in families:
        assert (outputs[name] - expected[name]).abs().max().item() <= 1e-6, name
        assert report[name]["trained"], (name, report[name])
    # one family's file builds any of its models by name, with the state-dict keys of nasdistill's
    ns = runpy.run_path(str(tmp_path / "resnet8x4" / "model.py"))
    assert sorted(ns["MODELS"]) == sorted(f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110, "8x4", "32x4"))
    assert list(ns["MODELS"]["resnet14"](num_classes=3, in_channels=1).state_dict()) == \
        list(create_model("resnet14", num_classes=3, in_channels=1).state_dict())


def test_model_py_refuses_weights_that_differ_from_its_digest(tmp_path, randomize):
    model = randomize(create_model("resnet8", num_classes=3, in_channels=1)).eval()
    export_model(model, tmp_path / "e", record=ModelRecord.zoo("resnet8", 3, (1, 8, 8)), onnx=False, verbose=False)
    ns = runpy.run_path(str(tmp_path / "e" / "model.py"))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(ns["load"]()(x), model(x))
    weights = tmp_path / "e" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = b"\xff" * 100
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors does not match the SHA-256 this file records"):
        ns["load"]()
    # an edited model.py makes the export incomplete: the main job exports it again
    (tmp_path / "e2").mkdir()
    export_model(model, tmp_path / "e2", record=ModelRecord.zoo("resnet8", 3, (1, 8, 8)), onnx=False, verbose=False)
    assert finished_export(tmp_path / "e2") is not None
    with open(tmp_path / "e2" / "model.py", "a") as f:
        f.write("# edited\n")
    assert finished_export(tmp_path / "e2") is None


def test_what_cannot_be_copied_is_recorded_with_the_reason(tmp_path, randomize):
    with pytest.raises(UnsupportedSource, match="torchvision network"):
        model_source(ModelRecord.zoo("tv_resnet18", 10, (3, 32, 32)), "0" * 64)
    from nasdistill.models import MODELS
    from nasdistill.registry import register

    def nested(num_classes=10, in_channels=1):  # a builder inside a function has no source to copy
        return create_model("resnet8", num_classes=num_classes, in_channels=in_channels)

    if "nested_builder" not in MODELS:
        register("model", "nested_builder", nested)
    model = randomize(nested(3)).eval()
    result = export_model(model, tmp_path / "n", record=ModelRecord.zoo("nested_builder", 3, (1, 8, 8)),
                          onnx=False, verbose=False)
    assert "python" not in result["files"] and "python" not in result["errors"]
    assert "not a function or class defined at the top level" in result["skipped"]["python"]
    assert not (tmp_path / "n" / "model.py").exists()
    assert finished_export(tmp_path / "n") is not None  # a skipped format is accounted for
