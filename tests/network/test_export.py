"""Export folders: model.json + safetensors + torch.export (+ ONNX) round trips, errors, CLI, and
digests: a damaged file is refused by name, an export never passes outputs that are not finite."""
import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import nasdistill
from nasdistill.cli import main
from nasdistill.network.export import export_model, finished_export, onnx_available
from nasdistill.network import load, load_pt2, supernet_modules
from nasdistill.models import create_model
from nasdistill.network.record import ModelRecord
from nasdistill.space import describe_space, load_space
from nasdistill.supernet import Supernet

# identity and zero layers, including an identity that subsamples and pads (layer5: 32 -> 64, /2)
ARCH = {"layer1": "k3_d2", "layer2": "identity", "layer3": "zero", "layer4": "k5_d2",
        "layer5": "identity", "layer6": "zero"}
ONNX_MISSING = onnx_available()


@pytest.fixture(scope="module")
def space():
    return load_space("digits_small", num_classes=10, input_size=(1, 8, 8))


def max_diff(a, b, x):
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def test_space_arch_round_trips_through_every_format(space, tmp_path, capsys, randomize):
    model = randomize(space.build(ARCH))
    model.train()
    result = export_model(model, tmp_path / "e", space=space, arch=ARCH, onnx=False)
    assert model.training  # the caller's mode is restored
    model.eval()
    names = {p.name for p in (tmp_path / "e").iterdir()}
    assert names == {"model.json", "model.safetensors", "model.py", "model.pt2", "export.json"}  # no temp files
    rec = json.loads((tmp_path / "e" / "model.json").read_text())
    assert rec["space"] == describe_space(space) and rec["kind"] == "space" and rec["arch"] == ARCH
    assert rec["num_classes"] == 10 and rec["input_size"] == [1, 8, 8]
    assert rec["arch_id"] == space.arch_id(ARCH)
    assert {"macs": rec["macs"], "params": rec["params"]} == space.cost(ARCH)
    assert rec["params"] == sum(p.numel() for p in model.parameters())
    assert result["max_abs_diff"]["safetensors"] <= 1e-6 and result["max_abs_diff"]["pt2"] <= 1e-5
    assert result["max_abs_diff"]["onnx"] is None and "disabled" in result["skipped"]["onnx"]
    assert json.loads((tmp_path / "e" / "export.json").read_text()) == result
    printed = capsys.readouterr().out
    assert "model.pt2" in printed and "max |diff|" in printed and "skipped" in printed

    x = torch.randn(7, 1, 8, 8)
    loaded = nasdistill.load(tmp_path / "e")
    assert type(loaded).__name__ == "SpaceNet" and not loaded.training
    assert supernet_modules(loaded) == []
    assert not any(type(m).__module__.startswith("nasdistill.supernet") for m in loaded.modules())
    assert max_diff(loaded, model, x) <= 1e-5
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    program = load_pt2(tmp_path / "e")
    assert max_diff(program, model, x) <= 1e-5  # batch 7 != traced batch 2: dynamic batch size
    assert result["pt2_dynamic_batch"] is True


def test_zoo_model_round_trips(tmp_path, randomize):
    model = randomize(create_model("resnet8", num_classes=10, in_channels=1)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = export_model(model, tmp_path / "z", record=ModelRecord.zoo("resnet8", 10, (1, 8, 8)), onnx=False)
    # measuring and exporting run in eval mode: BatchNorm statistics are untouched
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    model.eval()
    rec = json.loads((tmp_path / "z" / "model.json").read_text())
    assert rec["kind"] == "zoo" and rec["name"] == "resnet8" and rec["input_size"] == [1, 8, 8]
    assert "arch" not in rec and result["params"] == sum(p.numel() for p in model.parameters())
    assert result["max_abs_diff"]["pt2"] <= 1e-5
    x = torch.randn(3, 1, 8, 8)
    loaded = load(tmp_path / "z")
    assert type(loaded) is type(model) and max_diff(loaded, model, x) <= 1e-5
    assert max_diff(load_pt2(tmp_path / "z"), model, x) <= 1e-5


def test_extracted_supernet_student_round_trips(space, tmp_path, randomize):
    torch.manual_seed(0)
    supernet = randomize(Supernet(space, seed=0), seed=1).eval()
    student = supernet.extract(ARCH).eval()
    with pytest.raises(ValueError, match="supernet modules"):
        export_model(supernet, tmp_path / "sn", space=space, arch=ARCH)
    # a SpaceNet knows its space name and arch: the example batch gives the input size
    example = torch.randn(4, 1, 8, 8)
    result = export_model(student, tmp_path / "s", example_input=example, onnx=False)
    assert result["batches"] == [4, 5] and result["model"] == space.arch_id(ARCH)
    x = torch.randn(5, 1, 8, 8)
    loaded = load(tmp_path / "s")
    assert supernet_modules(loaded) == []
    supernet.set_arch(ARCH)
    try:
        assert max_diff(loaded, supernet, x) <= 1e-4  # the supernet path itself
    finally:
        supernet.set_arch(None)
    assert max_diff(loaded, student, x) <= 1e-5
    assert max_diff(load_pt2(tmp_path / "s"), student, x) <= 1e-5


def test_missing_or_corrupt_folders_give_clear_errors(space, tmp_path, randomize):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.json does not exist"):
        load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model.pt2 does not exist"):
        load_pt2(tmp_path / "empty")

    good = tmp_path / "good"
    export_model(randomize(space.build(ARCH)), good, space=space, arch=ARCH, onnx=False, verbose=False)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="model.json is not valid JSON"):
        load(folder)
    (folder / "model.json").write_text(json.dumps({"kind": "space", "space": "digits_small", "arch": ARCH}))
    with pytest.raises(ValueError, match=r"misses \['num_classes', 'input_size'\]"):
        load(folder)
    (folder / "model.json").write_text((good / "model.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors does not exist"):
        load(folder)
    (folder / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:500])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load(folder)
    other = {**ARCH, "layer3": "k3_d2"}  # weights of another architecture
    save_file(space.build(other).state_dict(), str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="does not fit the network.*missing"):
        load(folder)
    (folder / "model.pt2").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable torch.export archive"):
        load_pt2(folder)
    # a model that does not match the arch it is exported with is refused before writing
    with pytest.raises(ValueError, match="does not match its record"):
        export_model(space.build(other), tmp_path / "mismatch", space=space, arch=ARCH, onnx=False)
    assert not (tmp_path / "mismatch").exists()


def test_failed_format_leaves_no_half_file(space, tmp_path, monkeypatch):
    out = tmp_path / "e"
    export_model(space.build(ARCH), out, space=space, arch=ARCH, onnx=False, verbose=False)
    assert (out / "model.pt2").exists()

    def broken_save(program, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch.export, "save", broken_save)
    result = export_model(space.build(ARCH), out, space=space, arch=ARCH, onnx=False, verbose=False)
    assert result["max_abs_diff"]["pt2"] is None and "disk full" in result["errors"]["pt2"]
    # neither the half file nor the stale pt2 of the earlier export remains
    assert {p.name for p in out.iterdir()} == {"model.json", "model.safetensors", "model.py", "export.json"}


def test_onnx_auto_without_the_extra_says_why(space, tmp_path, monkeypatch, capsys):
    import nasdistill.network.export as export

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "model.onnx").write_bytes(b"stale")
    monkeypatch.setattr(export, "onnx_available", lambda: "onnx is not installed; pip install x")
    result = export_model(space.build(ARCH), tmp_path / "e", space=space, arch=ARCH)
    assert result["skipped"]["onnx"].startswith("onnx is not installed")
    assert not (tmp_path / "e" / "model.onnx").exists()
    assert "model.onnx         skipped: onnx is not installed" in capsys.readouterr().out
    with pytest.raises(ImportError, match="ONNX export requested"):
        export_model(space.build(ARCH), tmp_path / "e2", space=space, arch=ARCH, onnx=True)


@pytest.mark.skipif(ONNX_MISSING is not None,
                    reason=f"ONNX path needs the onnx extra: {ONNX_MISSING}")
def test_onnx_export_matches(space, tmp_path, randomize):
    import onnxruntime as ort

    model = randomize(space.build(ARCH)).eval()
    result = export_model(model, tmp_path / "e", space=space, arch=ARCH, onnx=True)
    assert result["max_abs_diff"]["onnx"] <= 1e-4 and not result["errors"]
    session = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(9, 1, 8, 8)
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(y) - model(x)).abs().max().item() <= 1e-4


def _fake_search_run(space, folder, randomize):
    """What `nasdistill search` leaves: model.json (the space as data) + the extracted student."""
    folder.mkdir()
    student = Supernet(space, seed=0).extract(ARCH)
    randomize(student, seed=3)
    ModelRecord.of_space(space, ARCH).write(folder)
    save_file(student.state_dict(), str(folder / "model.safetensors"))
    return student.eval()


def test_cli_exports_a_search_run(space, tmp_path, capsys, randomize):
    student = _fake_search_run(space, tmp_path / "search", randomize)
    assert main(["export", str(tmp_path / "search"), "--out", str(tmp_path / "out"), "--no-onnx"]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors  max |diff| 0.000e+00" in out and "model.pt2" in out
    assert "nasdistill.load(" in out
    x = torch.randn(4, 1, 8, 8)
    assert max_diff(load(tmp_path / "out"), student, x) <= 1e-5
    assert max_diff(load_pt2(tmp_path / "out"), student, x) <= 1e-5
    # the default folder is SOURCE/export; the search run directory itself is left alone
    before = (tmp_path / "search" / "model.json").read_text()
    assert main(["export", str(tmp_path / "search"), "--no-onnx"]) == 0
    assert (tmp_path / "search" / "export" / "model.pt2").is_file()
    assert (tmp_path / "search" / "model.json").read_text() == before


def test_cli_exports_a_teacher_run_and_an_arch_file(space, tmp_path, capsys, randomize):
    run = tmp_path / "teacher"
    run.mkdir()
    teacher = randomize(create_model("resnet8", num_classes=10, in_channels=1)).eval()
    (run / "model.json").write_text(json.dumps({"kind": "zoo", "name": "resnet8", "num_classes": 10,
                                                "input_size": [1, 8, 8]}))
    save_file(teacher.state_dict(), str(run / "model.safetensors"))
    assert main(["export", str(run), "--out", str(tmp_path / "t"), "--no-onnx"]) == 0
    assert max_diff(load(tmp_path / "t"), teacher, torch.randn(2, 1, 8, 8)) <= 1e-5

    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(ARCH))
    assert main(["export", str(arch_file), "--space", "digits_small", "--no-onnx"]) == 0
    rec = json.loads((tmp_path / "arch-export" / "model.json").read_text())
    assert rec["arch"] == ARCH and rec["space"]["name"] == "digits_small"
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(arch_file), "--no-onnx"]) == 2  # a bare arch names no space
    assert "pass --space" in capsys.readouterr().err


def test_cli_builds_a_record_file_for_the_data_asked_and_names_a_space_that_does_not_fit(space, tmp_path, capsys, randomize):
    """A model record given as a JSON file is resolved like a config's student.arch: --num-classes and
    --input-size rebuild it for that data, and a --space it does not fit is refused by name."""
    _fake_search_run(space, tmp_path / "search", randomize)
    record_file = tmp_path / "search" / "model.json"
    assert main(["export", str(record_file), "--num-classes", "3", "--input-size", "1,16,16", "--no-onnx",
                 "--out", str(tmp_path / "wide")]) == 0
    rec = ModelRecord.read(tmp_path / "wide")
    assert (rec.num_classes, rec.input_size, rec.arch) == (3, (1, 16, 16), ARCH)
    assert load(tmp_path / "wide")(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    other = tmp_path / "two_layers.py"
    other.write_text("from nasdistill.space import Layer, SearchSpace\n"
                     "SPACE = SearchSpace(name='two_layers', input_size=(1, 8, 8), num_classes=10, stem_channels=8,\n"
                     "                    layers=[Layer(8, 1, ['k3_d2', 'zero']), Layer(16, 2, ['k3_d2', 'zero'])])\n")
    capsys.readouterr()
    assert main(["export", str(record_file), "--space", str(other), "--no-onnx", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert (f"{record_file} is a network recorded with its own space ('digits_small'), and --space {other} does "
            "not fit it") in err and "Drop --space to use the recorded space" in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_export_keeps_zoo_options_and_load_skips_pretrained_downloads(tmp_path, randomize):
    """A zoo model's builder options travel with the record; ``weights`` (a pretrained download)
    is dropped when the record is rebuilt to load trained weights."""
    from nasdistill.models import MODELS
    from nasdistill.registry import register

    def build(num_classes=10, in_channels=1, width=4, weights=None):
        if weights is not None:
            raise RuntimeError("would download pretrained weights")
        torch.manual_seed(0)
        return create_model("resnet8", num_classes=num_classes, in_channels=in_channels) if width == 4 \
            else create_model("resnet8x4", num_classes=num_classes, in_channels=in_channels)

    if "toy_opts" not in MODELS:
        register("model", "toy_opts", build)
    model = randomize(build(width=8)).eval()
    record = ModelRecord.zoo("toy_opts", 10, (1, 8, 8), {"width": 8, "weights": "DEFAULT"})
    export_model(model, tmp_path / "z", record=record, onnx=False, verbose=False)
    saved = json.loads((tmp_path / "z" / "model.json").read_text())
    assert saved["options"] == {"width": 8, "weights": "DEFAULT"}
    assert max_diff(load(tmp_path / "z"), model, torch.randn(2, 1, 8, 8)) <= 1e-5


def damage(path):
    """Overwrite 1,000 bytes in the middle of a file's data with 0xff (NaN as float32); a safetensors
    header stays intact, so only the digest can tell."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little") if path.suffix == ".safetensors" else 0
    assert len(data) - header > 2000
    start = header + (len(data) - header) // 2 - 500
    data[start:start + 1000] = b"\xff" * 1000
    path.write_bytes(bytes(data))


def test_damaged_files_of_an_export_are_refused_by_load_and_export(space, tmp_path, capsys, randomize):
    from safetensors.torch import load_file

    folder = tmp_path / "students" / "s1"
    model = randomize(space.build(ARCH)).eval()
    export_model(model, folder, space=space, arch=ARCH, onnx=False, verbose=False)
    intact = tmp_path / "intact"
    shutil.copytree(folder, intact)
    damage(folder / "model.safetensors")
    assert any(torch.isnan(t).any() for t in load_file(str(folder / "model.safetensors")).values())
    with pytest.raises(ValueError, match=r"s1/model.safetensors does not match the SHA-256 that \S*s1/export.json "
                                         r"records for it .*; export the model again"):
        load(folder)
    assert finished_export(folder) is None  # the main job exports it again
    capsys.readouterr()
    assert main(["export", str(folder), "--out", str(tmp_path / "re"), "--no-onnx"]) == 2
    captured = capsys.readouterr()
    assert "s1/model.safetensors does not match the SHA-256" in captured.err and "Traceback" not in captured.err
    assert "max |diff|" not in captured.out and not (tmp_path / "re").exists()

    damage(intact / "model.pt2")  # every weights file of the folder is checked, the pt2 program too
    with pytest.raises(ValueError, match=r"intact/model.pt2 does not match the SHA-256"):
        load_pt2(intact)
    assert max_diff(load(intact), model, torch.randn(3, 1, 8, 8)) == 0.0  # its weights are intact
    assert finished_export(intact) is None


def test_damaged_weights_of_a_run_directory_are_refused(space, tmp_path, capsys, randomize):
    run = tmp_path / "run"
    student = _fake_search_run(space, run, randomize)
    digest = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    (run / "result.json").write_text(json.dumps({"weights_sha256": digest, "epochs": 1}))
    assert max_diff(load(run), student, torch.randn(3, 1, 8, 8)) == 0.0
    damage(run / "model.safetensors")
    with pytest.raises(ValueError, match=r"run/model.safetensors does not match the SHA-256 that \S*run/result.json "
                                         r"records for it .*; rerun the run with --restart"):
        load(run)
    capsys.readouterr()
    assert main(["export", str(run), "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert "run/model.safetensors does not match" in err and "Traceback" not in err
    assert not (run / "export").exists()
    (run / "result.json").write_text("{half a file")
    with pytest.raises(ValueError, match=r"result.json is not readable JSON.*rerun the run"):
        load(run)


def test_outputs_that_are_not_finite_fail_the_export(space, tmp_path, capsys, monkeypatch, randomize):
    import nasdistill.network.export as export

    # a folder that records no digest (written by hand): it loads, but its network outputs NaN
    handmade = tmp_path / "handmade"
    _fake_search_run(space, handmade, randomize)
    damage(handmade / "model.safetensors")
    assert torch.isnan(load(handmade)(torch.randn(2, 1, 8, 8))).all()
    capsys.readouterr()
    assert main(["export", str(handmade), "--out", str(tmp_path / "o1"), "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert "outputs NaN or inf" in err and "Traceback" not in err and not (tmp_path / "o1" / "export.json").exists()

    # the weights read back give NaN (a file damaged between writing and reading): an error, not "nan"
    good = tmp_path / "good"
    _fake_search_run(space, good, randomize)
    real_load = export.load

    def damaged_reload(folder, device="cpu"):
        model = real_load(folder, device)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    monkeypatch.setattr(export, "load", damaged_reload)
    assert main(["export", str(good), "--out", str(tmp_path / "o2"), "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert "o2/model.safetensors reloaded gives outputs that differ from the original's by nan (not finite)" in err
    assert "Traceback" not in err and not (tmp_path / "o2" / "export.json").exists()
    monkeypatch.setattr(export, "load", real_load)

    # another format read back as NaN fails that format: the command exits non-zero, never 0
    class NanProgram:
        def module(self):
            return lambda x: torch.full((x.shape[0], 10), float("nan"))

    monkeypatch.setattr(torch.export, "load", lambda *a, **k: NanProgram())
    assert main(["export", str(good), "--out", str(tmp_path / "o3"), "--no-onnx"]) == 1
    out = capsys.readouterr().out
    assert "failed formats: pt2" in out and "model.pt2          FAILED: ValueError:" in out and "not finite" in out
    info = json.loads((tmp_path / "o3" / "export.json").read_text())
    assert info["max_abs_diff"]["pt2"] is None and not (tmp_path / "o3" / "model.pt2").exists()


def test_main_job_exports_refuse_a_damaged_run_and_redo_a_damaged_export(space, tmp_path, randomize):
    """`export_students` (the main job's last step) loads each student's run through the digest
    check, and exports again a student whose export folder no longer matches its digests."""
    from types import SimpleNamespace

    from nasdistill.pipeline.steps import distill_dir, export_students

    out = tmp_path / "job"
    arch_id = space.arch_id(ARCH)
    src = distill_dir(out, arch_id, "ce", "kd", 0)
    src.parent.mkdir(parents=True)
    student = _fake_search_run(space, src, randomize)
    digest = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    (src / "result.json").write_text(json.dumps({"weights_sha256": digest, "epochs": 1}))
    cfg = SimpleNamespace(distill=SimpleNamespace(seeds=[0]), export=SimpleNamespace(onnx=False), threads=None,
                          workers=1)
    splits = SimpleNamespace(test=SimpleNamespace(images=torch.rand(8, 1, 8, 8)), mean=(0.5,), std=(0.5,))
    rows = [{"student": arch_id, "teacher": "ce", "method": "kd", "seed": 0, "test_acc": 90.0}]
    log = SimpleNamespace(say=lambda text: None)

    def export():
        return export_students(cfg, out, [{"student": arch_id}], rows, [{"weights_sha256": digest}], splits, log)

    [row] = export()
    folder = out / "students" / arch_id
    assert row["formats"]["safetensors"] == 0.0 and row["formats"]["python"] == 0.0
    x = torch.randn(3, 1, 8, 8)
    assert max_diff(load(folder), student, x) == 0.0
    damage(folder / "model.safetensors")
    export()  # the damaged export is made again from the run
    assert max_diff(load(folder), student, x) == 0.0
    damage(src / "model.safetensors")
    shutil.rmtree(folder)
    with pytest.raises(ValueError, match=r"kd_s0/model.safetensors does not match the SHA-256 that \S*result.json"):
        export()
    assert not (folder / "export.json").exists()
