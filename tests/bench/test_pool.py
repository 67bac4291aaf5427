"""`nasdistill bench pool` at toy size: the same runs through 1 and 2 workers give the same results,
and the throughput figures follow from the measured times."""
import json

from nasdistill.cli import main


def test_the_pool_bench_runs_the_same_runs_at_each_setting_and_reports_runs_per_hour(tmp_path, capsys):
    assert main(["bench", "pool", "--runs", "2", "--runs-per-gpu", "1", "2", "--n-train", "128", "--size", "8",
                 "--channels", "1", "--num-classes", "10", "--epochs", "1", "--out", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    first, second = figures["rows"]
    assert figures["gpus"] == 0 and (first["workers"], second["workers"]) == (1, 2)  # no GPU here: k processes
    for row in (first, second):
        assert row["runs_per_hour"] == 2 / row["wall_s"] * 3600
        assert row["ratio"] == row["runs_per_hour"] / first["runs_per_hour"]
    # where a run ran does not change what it computes: each seed's run is the same at both settings
    for i in range(2):
        a, b = (json.loads((tmp_path / f"k{k}" / f"run{i}" / "result.json").read_text()) for k in (1, 2))
        assert a["test_acc"] == b["test_acc"] and a["weights_sha256"] == b["weights_sha256"]
    assert "| 2 | 2 |" in out
