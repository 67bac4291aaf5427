"""The run directory: what every training command leaves on disk.

::

    config.yaml        resolved config                         (written by the command)
    model.json         how to rebuild the model (modelspec)    (written by the command)
    metrics.csv        one row per epoch
    metrics.jsonl      the same rows, one JSON object a line
    last.ckpt          atomic checkpoint after every epoch (resume point)
    model.safetensors  final weights
    result.json        best / last accuracy, epochs, wall time
    tb/                TensorBoard scalars (when tensorboard imports)
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

RUN_FILES = ("last.ckpt", "metrics.jsonl", "result.json", "model.safetensors")


def holds_run(path) -> bool:
    """True when ``path`` already contains the files of a training run."""
    return any((Path(path) / name).exists() for name in RUN_FILES + ("config.yaml",))


def prepare_run_dir(path, resume: bool = False, is_main: bool = True) -> Path:
    """Create the run directory; refuse to overwrite an existing run unless ``resume``."""
    path = Path(path)
    if not resume and holds_run(path):
        raise FileExistsError(
            f"{path} already holds a run; pass --resume to continue it, or choose another "
            f"directory with --out-dir (or out_dir=...), or delete it")
    if is_main:
        path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _clean(value):
    """JSON-safe number: NaN/inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Per-epoch rows to ``metrics.jsonl`` (appended), ``metrics.csv`` (rewritten) and TensorBoard."""

    def __init__(self, run_dir, resume_epoch: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if resume_epoch > 0 and self.jsonl.exists():
            # keep only epochs covered by the checkpoint; later rows belong to the killed run
            with open(self.jsonl) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            self.rows = [r for r in rows if r.get("epoch", 0) <= resume_epoch]
        self._rewrite_jsonl()
        self._rewrite_csv()
        self.tb = self._open_tensorboard() if tensorboard else None

    def _open_tensorboard(self):
        if os.environ.get("NASDISTILL_TENSORBOARD", "1") == "0":
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def log(self, row: dict) -> None:
        """Record one epoch's ``row`` (must contain ``epoch``)."""
        row = {k: _clean(v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._rewrite_csv()
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()

    def _rewrite_jsonl(self) -> None:
        with open(self.jsonl, "w") as f:
            for r in self.rows:
                f.write(json.dumps(r) + "\n")

    def _rewrite_csv(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=self.run_dir)
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        os.replace(tmp, self.csv)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``metrics.jsonl`` of ``run_dir``."""
    path = Path(run_dir) / "metrics.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_result(run_dir) -> Optional[dict]:
    """``result.json`` of ``run_dir``, or None when the run has not finished."""
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)
