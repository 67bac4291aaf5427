"""examples/define_space.py runs as a user would run it and its cost check passes."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_define_space_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "define_space.py")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "space example_16px" in out and "architectures:" in out
    assert "separable 3x3 conv" in out          # the custom op appears in the layer table
    assert "rejected as expected: label 'last'" in out
    assert "logits: (2, 10)" in out
    assert "cost check: OK" in out
    predicted = next(line for line in out.splitlines() if line.startswith("predicted cost:"))
    measured = next(line for line in out.splitlines() if line.startswith("measured cost:"))
    assert predicted.split(":", 1)[1].strip() == measured.split(":", 1)[1].strip()
