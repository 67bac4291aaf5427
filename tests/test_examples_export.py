"""examples/export_student.py runs as a user would run it and its reloaded copies match."""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_student_example_runs(tmp_path):
    out = tmp_path / "student"
    # --no-onnx keeps it to a few seconds; the ONNX path is tested in test_export.py
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "export_student.py"),
                           "--out", str(out), "--no-onnx"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "export check: OK" in text
    assert "supernet modules in it: none" in text
    diffs = [float(v) for v in re.findall(r"max \|diff\| ([0-9.e+-]+)", text)]
    assert len(diffs) == 5 and max(diffs) <= 1e-4  # supernet path, safetensors, pt2, load, load_pt2
    assert {p.name for p in out.iterdir()} == {"model.json", "model.safetensors", "model.pt2",
                                              "export.json"}
    rec = json.loads((out / "model.json").read_text())
    assert rec["space"]["name"] == "digits_small" and rec["arch"]["layer2"] == "identity"
    assert rec["arch"]["layer4"] == "zero"
