"""One model record, one space loader, one registry pattern: exports stand alone, a tampered folder
never runs code, a user space with SPACE alone goes through search, distillation and export, and a
new distiller is one file."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nasdistill
from nasdistill.cli import main
from nasdistill.network.record import ModelRecord
from nasdistill.network.source import ModelSource, read_model_source
from nasdistill.space import load_space

from small_data import TENTH_OF_DIGITS

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, NASDISTILL_PROGRESS="0", NASDISTILL_TENSORBOARD="0", OMP_NUM_THREADS="1")
# a user space that defines SPACE alone, named unlike its file
USER_SPACE = '''
from nasdistill.space import Layer, SearchSpace

SPACE = SearchSpace(name="bar_space", input_size=(1, 8, 8), num_classes=10, stem_channels=8,
                    layers=[Layer(8, 1, ["k3_d2", "zero"]), Layer(16, 2, ["k3_d2", "identity", "zero"])],
                    head_width=32)
'''
MARKER_CODE = '''
from pathlib import Path
Path(__file__).with_name("MARKER").write_text("code ran")
'''
TINY_TRAIN = ["train.epochs=1", "train.batch_size=128", "train.threads=1", TENTH_OF_DIGITS]


def test_top_level_names():
    from nasdistill import Supernet, create_model, load, load_space as ls  # noqa: F401

    assert nasdistill.Supernet is Supernet and callable(nasdistill.create_model)


def test_user_space_with_only_SPACE_is_searched_distilled_and_exported_and_loads_without_its_file(tmp_path, capsys):
    space_file = tmp_path / "src" / "my_space.py"
    space_file.parent.mkdir()
    space_file.write_text(USER_SPACE)
    search = tmp_path / "search"
    assert main(["search", "examples/digits_search.yaml", f"search.space={space_file}", *TINY_TRAIN,
                 "train.epochs=2", "search.warmup_epochs=1", "search.target=50000", "--out-dir", str(search)]) == 0
    record = json.loads((search / "model.json").read_text())
    assert record["space"]["name"] == "bar_space" and str(tmp_path) not in (search / "model.json").read_text()
    teacher = tmp_path / "teacher"
    assert main(["teacher", "examples/digits_teacher.yaml", *TINY_TRAIN, "--out-dir", str(teacher)]) == 0
    # distilled from the search's record (no space named) and with the space file named explicitly
    for name, student in (("a", [f"student.arch={search}", "student.space=null"]),
                          ("b", [f"student.space={space_file}", f"student.arch={search / 'model.json'}"])):
        assert main(["distill", "examples/digits_distill.yaml", f"teacher={teacher}", *student, *TINY_TRAIN,
                     "--out-dir", str(tmp_path / name)]) == 0
        assert json.loads((tmp_path / name / "model.json").read_text())["arch"] == record["arch"]
    # the example YAML's own student.space kept by mistake: a sentence that says what to drop, and the
    # corrected command then runs in the same folder (a run that never trained holds nothing to keep)
    capsys.readouterr()
    assert main(["distill", "examples/digits_distill.yaml", f"teacher={teacher}", f"student.arch={search}",
                 *TINY_TRAIN, "--out-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "recorded with its own space ('bar_space')" in err and "student.space=null" in err, err
    assert "Traceback" not in err and not (tmp_path / "c" / "last.ckpt").exists()
    assert main(["distill", "examples/digits_distill.yaml", f"teacher={teacher}", f"student.arch={search}",
                 "student.space=null", *TINY_TRAIN, "--out-dir", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "model.json").read_text())["arch"] == record["arch"]
    assert main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "export"), "--no-onnx"]) == 0
    before = nasdistill.load(tmp_path / "export")
    shutil.rmtree(space_file.parent)  # the author renames or deletes the space file
    after = subprocess.run([sys.executable, "-c", (
        "import nasdistill, torch; m = nasdistill.load(%r); torch.manual_seed(0); "
        "print(float(m(torch.randn(2, 1, 8, 8)).sum()))") % str(tmp_path / "export")],
        capture_output=True, text=True, env=ENV, timeout=120)
    assert after.returncode == 0, after.stderr
    torch.manual_seed(0)
    with torch.no_grad():
        assert abs(float(after.stdout) - float(before(torch.randn(2, 1, 8, 8)).sum())) < 1e-4


def test_a_tampered_folder_never_runs_code(tmp_path):
    space = load_space("digits_small")
    folder = tmp_path / "export"
    from nasdistill.network.export import export_model

    export_model(space.build(space.sample(1)), folder, space=space, arch=space.sample(1), onnx=False, verbose=False)
    planted = folder / "evil_space.py"
    planted.write_text(MARKER_CODE)
    good = json.loads((folder / "model.json").read_text())
    attempts = [
        dict(good, space="evil_space.py"),                              # the space named by a file
        dict(good, space=str(planted)),                                 # by an absolute path
        dict(good, space=dict(good["space"], layers=[dict(l, candidates=["evil"]) for l in good["space"]["layers"]]),
             arch={l: "evil" for l in good["arch"]}, code=[{"op": "evil", "file": "evil_space.py"}]),
        dict(good, space=dict(good["space"], layers=[dict(l, candidates=["evil"]) for l in good["space"]["layers"]]),
             arch={l: "evil" for l in good["arch"]}, code=[{"op": "evil", "file": "../export/evil_space.py"}]),
    ]
    for tampered in attempts:
        (folder / "model.json").write_text(json.dumps(tampered))
        with pytest.raises(ValueError):
            nasdistill.load(folder)
        assert not (folder / "MARKER").exists(), "loading a folder ran code from it"
    with pytest.raises(ValueError, match="trust_code=True"):
        nasdistill.load(folder)  # the last attempt: the message says how to opt in, and to what


OPS_SPACE = '''
from torch import nn
from nasdistill.registry import register
from nasdistill.space import Layer, SearchSpace

def sep3(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

register("op", "sep3_rec", sep3)
SPACE = SearchSpace(name="ops_space", input_size=(1, 8, 8), num_classes=10, stem_channels=8,
                    layers=[Layer(8, 1, ["sep3_rec", "zero"]), Layer(16, 2, ["sep3_rec", "k3_d2"])],
                    head_width=None)
'''


def test_custom_ops_load_only_when_registered_or_trusted(tmp_path):
    space_file = tmp_path / "ops_space.py"
    space_file.write_text(OPS_SPACE)
    space = load_space(str(space_file))
    arch = {"layer1": "sep3_rec", "layer2": "sep3_rec"}
    folder = tmp_path / "export"
    from nasdistill.network.export import export_model

    export_model(space.build(arch), folder, space=space, arch=arch, onnx=False, verbose=False)
    assert (folder / "code" / "ops_space.py").is_file() and str(tmp_path) not in (folder / "model.json").read_text()
    space_file.unlink()
    # a fresh process (the op is registered nowhere): refused twice without trust_code (a refusal
    # leaves nothing behind that a later load could use), then loaded with it
    probe = """if True:
        import sys, nasdistill
        for attempt in (1, 2):
            try:
                nasdistill.load(sys.argv[1])
            except Exception as err:
                print(f"refused {attempt}: {err}", flush=True)
        print(type(nasdistill.load(sys.argv[1], trust_code=True)).__name__)
    """
    done = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["refused 1", "refused 2"], done.stdout
    assert all("sep3_rec" in line and "trust_code" in line for line in lines[:2]) and lines[2:] == ["SpaceNet"]
    assert f"importing {(folder / 'code' / 'ops_space.py').resolve()}" in done.stderr  # names the file it runs


def test_a_run_directory_keeps_the_code_of_its_custom_ops(tmp_path):
    """A teacher run on a space with a custom op saves that op's code next to its model.json, so the
    run directory loads with trust_code after the space file is gone (as an export does)."""
    space_file = tmp_path / "src" / "ops_space.py"
    space_file.parent.mkdir()
    space_file.write_text(OPS_SPACE)
    run = tmp_path / "run"
    assert main(["teacher", "examples/digits_teacher.yaml", f"model.space={space_file}",
                 "model.arch={layer1: sep3_rec, layer2: sep3_rec}", *TINY_TRAIN, "--out-dir", str(run)]) == 0
    assert (run / "code" / "ops_space.py").read_text() == OPS_SPACE
    shutil.rmtree(space_file.parent)
    probe = "import nasdistill, sys; m = nasdistill.load(sys.argv[1], trust_code=True); print(type(m).__name__)"
    loaded = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "SpaceNet", loaded.stderr


def test_distillation_refuses_a_teacher_whose_weights_differ_from_their_digest(tmp_path, capsys):
    """A finished teacher run whose model.safetensors was damaged since (header intact, 1,000 bytes
    of its data overwritten) is refused naming the file, before any data is loaded or run written."""
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from nasdistill.distill.runner import finished_teacher, load_teacher
    from nasdistill.models import create_model

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    ModelRecord.zoo("resnet8", 10, (1, 8, 8)).write(teacher)
    save_file(create_model("resnet8", num_classes=10, in_channels=1).state_dict(), str(teacher / "model.safetensors"))
    data = bytearray((teacher / "model.safetensors").read_bytes())
    (teacher / "result.json").write_text(json.dumps({"weights_sha256": hashlib.sha256(data).hexdigest(), "epochs": 1}))
    splits = SimpleNamespace(num_classes=10, input_size=(1, 8, 8), name="digits")
    assert finished_teacher(teacher)["epochs"] == 1 and not load_teacher(teacher, splits, verbose=False)[0].training
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 5000:header + 6000] = b"\xff" * 1000
    (teacher / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"teacher/model.safetensors does not match the SHA-256 that \S*result.json"):
        load_teacher(teacher, splits, verbose=False)
    capsys.readouterr()
    assert main(["distill", "examples/digits_distill.yaml", f"teacher={teacher}", *TINY_TRAIN,
                 "--out-dir", str(tmp_path / "kd")]) == 2
    err = capsys.readouterr().err
    assert "teacher/model.safetensors does not match the SHA-256" in err and "rerun the run" in err, err
    assert "Traceback" not in err and not (tmp_path / "kd" / "last.ckpt").exists()


def test_one_parser_for_a_network_given_as_data_text_file_or_folder(tmp_path):
    space = load_space("digits_small")
    arch = space.sample(2)
    ModelRecord.of_space(space, arch).write(tmp_path)
    assert read_model_source(arch) == ModelSource(None, arch, None)
    assert read_model_source(json.dumps({"space": "digits_small", "arch": arch})) == ModelSource(None, arch, "digits_small")
    for source in (tmp_path, tmp_path / "model.json", json.loads((tmp_path / "model.json").read_text())):
        found = read_model_source(source)
        rec = found.record
        assert isinstance(rec, ModelRecord) and rec.arch == arch and rec.arch_id == space.arch_id(arch)
        assert (found.arch, found.space) == (arch, "digits_small")  # one shape, whatever the source
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder"):
        read_model_source("no/such/file.json")


def test_one_resolver_for_config_command_line_and_export_api(tmp_path):
    """Config sections, `nasdistill export FILE` and export_model resolve "an architecture from
    somewhere (+ a space)" with one function: the same record for the same source, adapted to the
    data, and messages that name the inputs as each user wrote them."""
    from types import SimpleNamespace

    from nasdistill.network.export import resolve_record
    from nasdistill.network import SourceNames, record_from_source

    space = load_space("digits_small")
    arch = space.sample(3)
    searched = tmp_path / "search"
    ModelRecord.of_space(space, arch).write(searched)

    def cfg(arch=None, space=None, name=None):
        return SimpleNamespace(name=name, arch=arch, space=space, options=None)

    from_config = ModelRecord.from_config(cfg(str(searched)), 3, (1, 16, 16), "student")
    assert (from_config.num_classes, from_config.input_size, from_config.arch) == (3, (1, 16, 16), arch)
    assert from_config.space["input_size"] == [1, 16, 16]
    for source in (searched, searched / "model.json", json.loads((searched / "model.json").read_text())):
        assert record_from_source(source, None, 3, (1, 16, 16)).to_json() == from_config.to_json()
    assert record_from_source(searched).to_json() == ModelRecord.read(searched).to_json()  # None keeps
    assert record_from_source(arch, "digits_small", 3, (1, 16, 16)).to_json() == from_config.to_json()
    assert resolve_record(space.build(arch), "digits_small", arch).to_json() == ModelRecord.of_space(space, arch).to_json()

    # a bare architecture names no space
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(arch))
    with pytest.raises(ValueError, match=r"^student.arch is a bare architecture: name its search space with "
                                         r"student.space \(a module"):
        ModelRecord.from_config(cfg(str(arch_file)), 10, (1, 8, 8), "student")
    with pytest.raises(ValueError, match=r"arch.json is an architecture without a space: pass --space NAME_OR_FILE.py$"):
        record_from_source(arch_file, names=SourceNames.command_line(arch_file))

    # a space that does not fit: a recorded network (say which space it has, and what to drop)
    other = tmp_path / "bar.py"
    other.write_text(USER_SPACE)
    with pytest.raises(ValueError, match=(rf"^student.arch={re.escape(str(searched))} is a network recorded with "
                                          rf"its own space \('digits_small'\), and student.space='{re.escape(str(other))}' "
                                          r"does not fit it \(.*\). Drop student.space \(student.space=null\) to use")):
        ModelRecord.from_config(cfg(str(searched), str(other)), 10, (1, 8, 8), "student")
    with pytest.raises(ValueError, match=(rf"^{re.escape(str(searched))} is a network recorded with its own space "
                                          rf"\('digits_small'\), and --space {re.escape(str(other))} does not fit "
                                          r"it \(.*\). Drop --space to use the recorded space")):
        record_from_source(searched, str(other), names=SourceNames.command_line(searched))
    # ... or a bare architecture
    with pytest.raises(ValueError, match=rf"^student.arch does not fit student.space='{re.escape(str(other))}': "):
        ModelRecord.from_config(cfg(str(arch_file), str(other)), 10, (1, 8, 8), "student")
    with pytest.raises(ValueError, match=r"^export_model: arch does not fit space='bar_space': "):
        resolve_record(space.build(arch), load_space(str(other)), arch)

    # a zoo record where a config expects an architecture; a command line takes it as it is
    zoo = tmp_path / "zoo"
    ModelRecord.zoo("resnet8", 10, (1, 8, 8)).write(zoo)
    with pytest.raises(ValueError, match=r"^student.arch names a zoo model record \(resnet8\); set student.name"):
        ModelRecord.from_config(cfg(str(zoo)), 10, (1, 8, 8), "student")
    adapted = record_from_source(zoo / "model.json", None, 3, (3, 16, 16), SourceNames.command_line(zoo))
    assert (adapted.kind, adapted.name, adapted.num_classes, adapted.input_size) == ("zoo", "resnet8", 3, (3, 16, 16))
    assert adapted.build()(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_a_network_on_disk_needs_no_training_engine():
    """Loading, exporting and the record import nothing of nasdistill.engine, and the version is a
    module of its own (the engine's run manifest reads it without importing the package's API)."""
    probe = ("import sys, nasdistill, nasdistill.network, nasdistill.network.export, nasdistill.network.model_source; "
             "from nasdistill.version import __version__; assert nasdistill.__version__ == __version__; "
             "print(sorted(m for m in sys.modules if m.startswith('nasdistill.engine')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    from nasdistill.engine.rundir import RUN_FILES
    from nasdistill.network import RUN_FILES as REFUSED

    assert set(RUN_FILES) <= set(REFUSED)  # an export refuses every folder the engine calls a run


def test_space_loader_SPACE_alone_or_make_space(tmp_path):
    only = tmp_path / "only.py"
    only.write_text(USER_SPACE)
    space = load_space(str(only), num_classes=3, input_size=(3, 16, 16))
    assert (space.num_classes, space.input_size, space.name) == (3, (3, 16, 16), "bar_space")
    assert load_space(str(only)).num_classes == 10  # as the module defines it
    made = load_space("gtn_cifar", num_classes=10, input_size=(1, 8, 8))
    assert made.num_classes == 10 and made.layers[0].out_channels == 64
    neither = tmp_path / "neither.py"
    neither.write_text("x = 1\n")
    with pytest.raises(ValueError, match="neither SPACE"):
        load_space(str(neither))


def test_readme_space_example_runs_against_the_default_data(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Defining a search space", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    space_file = tmp_path / "readme_space.py"
    space_file.write_text(code)
    out = tmp_path / "search"
    assert main(["search", "examples/digits_search.yaml", f"search.space={space_file}", *TINY_TRAIN,
                 "train.epochs=2", "search.warmup_epochs=1", "--out-dir", str(out)]) == 0
    assert nasdistill.load(out) is not None


def test_registries_name_the_closest_entry():
    from nasdistill.commands.bench import BENCHES
    from nasdistill.data import DATASETS
    from nasdistill.distill import DISTILLERS
    from nasdistill.models import MODELS
    from nasdistill.space import OPS, get_op
    from nasdistill.teachers import TEACHERS

    for registry, wrong, right in ((DATASETS, "digit", "digits"), (MODELS, "resnet8x5", "resnet8x4"),
                                   (TEACHERS, "gnt", "gtn"), (DISTILLERS, "dkdd", "dkd"),
                                   (BENCHES, "loadr", "loader")):
        with pytest.raises(ValueError, match=f"did you mean '{right}'"):
            registry.get(wrong)
    # the ops are a registry like the others: every built-in family's examples resolve by name
    assert {"identity", "zero"} <= set(OPS.names()) and get_op("k3_d2").name == "k3_d2"
    with pytest.raises(ValueError, match="did you mean 'identity'"):
        get_op("identiy")


def test_a_new_distiller_is_one_file(tmp_path, resnet8_teacher):
    """Drop one module into nasdistill/distill/ (here: of a copy of the package): the method exists
    for `nasdistill distill`, with its config section, in the main job's config too."""
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "nasdistill", pkg / "nasdistill", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "search_spaces", pkg / "search_spaces", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "nasdistill" / "distill" / "toy.py").write_text('''
"""A toy method: CE plus the squared distance between student and teacher logits."""
from dataclasses import dataclass

import torch.nn.functional as F

from ..registry import register
from .base import Distiller


@dataclass
class ToyConfig:
    weight: float = 0.5


@register("distiller", "toy", config=ToyConfig, reads_features=False)
class ToyDistiller(Distiller):

    def forward_train(self, x, y, idx=None, epoch=0):
        logits = self.student(x)
        z_t = self.teacher_features(x).logits
        return logits, {"loss_ce": F.cross_entropy(logits, y),
                        "loss_kd": self.cfg.weight * (logits - z_t).pow(2).mean()}
''')
    env = dict(ENV, PYTHONPATH=str(pkg))
    # one interpreter on the copy (importing torch once): distill from the session's CE teacher with
    # the new method, then ask the main job's CLI and config about it
    script = """
import sys
from nasdistill.cli import main
from nasdistill.config import load_config
from nasdistill.pipeline import pipeline_config_class

teacher, root, out, *train = sys.argv[1:]
rc = main(["distill", root + "/examples/digits_distill.yaml", "teacher=" + teacher, "method=toy", "toy.weight=0.25",
           "cache_teacher_logits=true", *train, "--out-dir", out])
print("@@distill", rc)
try:
    rc = main(["run", "distill.methods=[kd,toy]", "distill.toy.weight=0.3", "--help"])
except SystemExit as exit_:
    rc = exit_.code or 0
print("@@help", rc)
print("@@weight", load_config(pipeline_config_class(), None, ["distill.methods=[kd,toy]", "distill.toy.weight=0.3"])
      .distill.toy.weight)
"""
    done = subprocess.run([sys.executable, "-c", script, str(resnet8_teacher), str(ROOT), str(tmp_path / "toy"),
                           *TINY_TRAIN], cwd=pkg, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = dict(line[2:].split(" ", 1) for line in done.stdout.splitlines() if line.startswith("@@"))
    assert said == {"distill": "0", "help": "0", "weight": "0.3"}, (done.stdout[-2000:], done.stderr[-2000:])
    result = json.loads((tmp_path / "toy" / "result.json").read_text())
    assert result["method"] == "toy" and "toy.weight" in json.loads((tmp_path / "toy" / "run.json").read_text())["identity"]
    rows = [json.loads(l) for l in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_loss_kd"] > 0
