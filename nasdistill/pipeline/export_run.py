"""The main job's exports as runs: a student's export folder, reused when it holds what it should.

An export is a run of kind ``export`` (:mod:`nasdistill.engine.runs`) like the searches, teachers
and distillations, so every backend runs it the same way. Its lifecycle: the folder's lock (the
job's own runs may write inside the job's folder), then reuse when ``export.json`` says the folder
is a complete export (:func:`~nasdistill.network.export.finished_export`: every file present with
its recorded digest) of the same source weights, else the network of
the source run is exported again (``export.json`` written last: a killed export is done again).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from ..engine.rundir import RunDirectory
from ..registry import register


@dataclass
class ExportConfig:
    """``source``: the run whose network is exported; ``onnx``: write ``model.onnx`` (``auto``: when
    the onnx extra imports); ``example_input``: the batch ``torch.export`` traces and every format is
    compared on (nested lists of floats); ``provenance``: what ``export.json`` says of the source
    (its teacher, method, seed, and ``source_weights_sha256``, the digest of the exported weights)."""

    source: str = ""
    onnx: Union[bool, Literal["auto"]] = "auto"
    example_input: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


class ExportRun:
    """The ``export`` run kind (module docstring)."""

    kind = "export"

    def execute(self, cfg: ExportConfig, spec) -> tuple[dict, bool]:
        rd = RunDirectory(spec.run_dir)
        rd.lock(job=spec.job)
        try:
            current = finished(Path(spec.run_dir), cfg)
            if current is not None:
                return current, True
            return export_student(cfg, Path(spec.run_dir)), False
        finally:
            rd.unlock()


def finished(target: Path, cfg: ExportConfig):
    """``export.json`` of ``target`` when it is a complete export of ``cfg``'s source weights, else None."""
    from ..network.export import finished_export

    info = finished_export(target) or {}
    digest = cfg.provenance.get("source_weights_sha256")
    if not info or digest is None or info.get("source_weights_sha256") != digest:
        return None
    return info


def export_student(cfg: ExportConfig, target: Path) -> dict:
    """Export the network of the run ``cfg.source`` into ``target`` (each format reloaded and compared
    on ``cfg.example_input``); its ``export.json`` mapping."""
    import torch

    from ..network import load_with_record
    from ..network.export import export_model

    model, record = load_with_record(Path(cfg.source))
    example = torch.tensor(cfg.example_input, dtype=torch.float32) if cfg.example_input else None
    return export_model(model, target, record=record, example_input=example, onnx=cfg.onnx, verbose=False,
                        source=dict(cfg.provenance))


register("run", "export", ExportRun(), config=lambda: ExportConfig)

__all__ = ["ExportConfig", "ExportRun", "export_student", "finished"]
