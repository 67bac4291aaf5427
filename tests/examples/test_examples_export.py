"""examples/export_student.py runs as a user would run it and its reloaded copies match."""
import json
import re


def test_export_student_example_runs(tmp_path, monkeypatch, run_example):
    out = tmp_path / "student"
    monkeypatch.chdir(tmp_path)
    # --no-onnx keeps it to a few seconds; the ONNX path is tested in test_export.py
    text = run_example("examples/export_student.py", "--out", str(out), "--no-onnx")
    assert "export check: OK" in text
    assert "supernet modules in it: none" in text
    diffs = [float(v) for v in re.findall(r"max \|diff\| ([0-9.e+-]+)", text)]
    # supernet path, safetensors, model.py, pt2, load, load_pt2
    assert len(diffs) == 6 and max(diffs) <= 1e-4
    assert {p.name for p in out.iterdir()} == {"model.json", "model.safetensors", "model.py", "model.pt2",
                                              "export.json"}
    assert list(tmp_path.iterdir()) == [out]  # nothing written beside the export folder
    rec = json.loads((out / "model.json").read_text())
    assert rec["space"]["name"] == "digits_small" and rec["arch"]["layer2"] == "identity"
    assert rec["arch"]["layer4"] == "zero"
