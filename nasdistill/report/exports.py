"""Where each exported student comes from, in words: used by the report's "Exported students"
section and by the main job's log lines.

``exports`` rows::

    {"student": arch_id, "folder": "students/<arch_id>" (relative to the run directory),
     "teacher": "gtn"|"ce"|...|"none", "method": "kd"|"dkd"|"none", "seed": int,
     "formats": {format name: max |reloaded - original| output difference, or None}}
"""
from __future__ import annotations

from typing import Optional, Sequence

from .tables import BASELINE, as_float, display_name


def describe_source(teacher: str, method: str, seed=None) -> str:
    """How a student was trained, in words.

    ``("gtn", "kd", 0)`` -> ``"distilled with KD from the GTN teacher (seed 0)"``;
    ``("none", "none", 0)`` -> ``"trained alone with cross-entropy (seed 0)"``; no seed part when
    ``seed`` is None. Method and teacher names keep the papers' spelling (``DISPLAY_NAMES``).
    """
    if (teacher, method) == BASELINE or teacher in (None, "none"):
        text = "trained alone with cross-entropy"
    else:
        name = display_name(teacher)
        who = f"the {name}" if name.lower().endswith("teacher") else f"the {name} teacher"
        text = f"distilled with {display_name(method)} from {who}"
    return text if seed is None else f"{text} (seed {seed})"


def _formats_text(formats: Optional[dict]) -> str:
    """``safetensors, pt2 reload max |diff| 0.0e+00`` (one difference) or
    ``pt2, onnx; reload max |diff|: pt2 0.0e+00, onnx 1.2e-06`` (several)."""
    formats = formats or {}
    diffs = {f: as_float(v) for f, v in formats.items() if as_float(v) is not None}
    if not diffs:  # a format without a difference was skipped or failed: no file of it
        return "no files"
    names = ", ".join(str(f) for f in diffs)
    missing = [f for f in formats if f not in diffs]
    if missing:
        names += f" (no {', '.join(missing)})"
    if len(diffs) == 1:
        return f"{names} reload max |diff| {next(iter(diffs.values())):.1e}"
    return f"{names}; reload max |diff|: " + ", ".join(f"{f} {v:.1e}" for f, v in diffs.items())


def export_line(row: dict) -> str:
    """``students/4a2eed856e: distilled with KD from the GTN teacher (seed 0); safetensors, pt2
    reload max |diff| 0.0e+00``."""
    folder = row.get("folder") or f"students/{row.get('student')}"
    return (f"{folder}: {describe_source(row.get('teacher', 'none'), row.get('method', 'none'), row.get('seed'))}"
            f"; {_formats_text(row.get('formats'))}")


def exports_section(exports: Sequence[dict]) -> str:
    if not exports:
        return "No student was exported in this run."
    return ("Each folder holds one student's weights and the architecture to rebuild it; \"reload max "
            "|diff|\" is the largest absolute difference between the outputs of the reloaded file and of "
            "the trained model on a few test images (0 means identical).\n\n"
            + "\n".join(f"- {export_line(r)}" for r in exports))


__all__ = ["describe_source", "export_line", "exports_section"]
