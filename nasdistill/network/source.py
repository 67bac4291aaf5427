"""Where an architecture comes from: "a network" given as data, text, a file or a folder, and the
one resolver from such a source (and optionally a space) to a :class:`ModelRecord`.

:func:`read_model_source` is the one parser for "a network given as a mapping, JSON text, a JSON
file or a folder": it returns a :class:`ModelSource`, what the source gives -- a full record, or a
bare architecture mapping with the space name when the source names one. :func:`record_from_source` turns what it read into the record of a
network for given data; the config's ``model``/``student`` sections
(:meth:`ModelRecord.from_config`), ``nasdistill export`` on a JSON file and
:func:`~nasdistill.network.export.export_model` all go through it::

    record_from_source("runs/search1")                            # the searched student, as recorded
    record_from_source({"layer1": "k3_d2", ...}, "digits_small")  # an arch of a space
    record_from_source("arch.json", "digits_small", num_classes=3, input_size=(3, 16, 16))

The rules: an explicit space is loaded for the data and the arch checked against it (a full
record's own arch is used, its recorded space is not); otherwise a full record is adapted to the
data, and a bare architecture must name its space. Messages name the inputs the way the caller's
user wrote them (:class:`SourceNames`: config keys or command-line options).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from .record import FILENAME, FORMAT, ModelRecord, _load_json


# ---------------------------------------------------------------------------- the one parser
@dataclass(frozen=True)
class ModelSource:
    """What a network source gives: ``record``, the full record when the source is one (None for a
    bare architecture); ``arch``, the architecture (the record's for a space network, None for a
    zoo model); ``space``, the name of the space it names (None when it names none)."""

    record: Optional[ModelRecord] = None
    arch: Optional[dict] = None
    space: Optional[str] = None

    @classmethod
    def of_record(cls, record: ModelRecord) -> "ModelSource":
        return cls(record, record.arch, (record.space or {}).get("name"))


def read_model_source(value: Any, where: str = "model") -> ModelSource:
    """Read "a network" given as a mapping, JSON text, a JSON file, or a folder with ``model.json``
    (or a :class:`ModelRecord`): a :class:`ModelSource` (the full record when the source is one,
    else the bare architecture mapping and the space it names, ``{"space": ..., "arch": {...}}``)."""
    if isinstance(value, ModelRecord):
        return ModelSource.of_record(value)
    raw = value
    if isinstance(value, (str, os.PathLike)):
        text = str(value)
        if os.path.isdir(text):
            path = Path(text) / FILENAME
            if not path.is_file():
                raise FileNotFoundError(f"{where}: folder {text} holds no {FILENAME} (give a run directory "
                                        "of search/teacher/distill, an export folder, or a JSON file)")
            raw = _load_json(path)
        elif os.path.isfile(text):
            raw = _load_json(Path(text))
        elif text.strip().startswith("{"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err}): {text!r}") from None
        else:
            raise FileNotFoundError(f"{where}: {text!r} is neither an existing file or folder nor a JSON "
                                    "mapping")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping label -> choice or a model record, got "
                         f"{type(raw).__name__}")
    if raw.get("format") in (FORMAT, "nasdistill-export") or (
            "kind" in raw and "num_classes" in raw and ("arch" in raw or "name" in raw or "model" in raw)):
        return ModelSource.of_record(ModelRecord.from_json(raw, where))
    if isinstance(raw.get("arch"), Mapping):
        space = raw.get("space")
        if isinstance(space, Mapping) and "num_classes" in raw:
            return ModelSource.of_record(ModelRecord.from_json(dict(raw, kind="space"), where))
        return ModelSource(None, dict(raw["arch"]), space if isinstance(space, str) else None)
    return ModelSource(None, dict(raw), None)


# ---------------------------------------------------------------------------- the one resolver
@dataclass(frozen=True)
class SourceNames:
    """How messages name the architecture source and its space: settings (``student.arch``,
    ``student.space='x'``, the default) or command-line options (``arch.json``, ``--space x``)."""

    arch: str = "model.arch"
    space: str = "model.space"
    bare_arch: Optional[str] = None   # what to do about an architecture that names no space
    option: bool = False              # names are command-line options, not key=value settings

    @classmethod
    def setting(cls, section: str = "model") -> "SourceNames":
        """The keys ``<section>.arch`` / ``<section>.space`` of a configuration."""
        return cls(f"{section}.arch", f"{section}.space",
                   f"{section}.arch is a bare architecture: name its search space with {section}.space "
                   "(a module of search_spaces such as digits_small, or a .py file)")

    @classmethod
    def command_line(cls, source, option: str = "--space") -> "SourceNames":
        """A file given on the command line, with its space in ``option``."""
        return cls(str(source), option, f"{source} is an architecture without a space: pass {option} "
                   "NAME_OR_FILE.py", option=True)

    def space_is(self, spec) -> str:
        shown = spec if isinstance(spec, (str, os.PathLike)) else getattr(spec, "name", spec)
        return f"{self.space} {shown}" if self.option else f"{self.space}={shown!r}"

    def arch_is(self, shown: str) -> str:
        return self.arch if self.option else f"{self.arch}={shown}"

    def drop_space(self) -> str:
        return f"Drop {self.space}" if self.option else f"Drop {self.space} ({self.space}=null)"


def record_from_source(source, space=None, num_classes: Optional[int] = None, input_size=None,
                       names: SourceNames = SourceNames()) -> ModelRecord:
    """The :class:`ModelRecord` of the network ``source`` gives, for ``num_classes`` classes and
    ``input_size`` inputs (None: the record's or the space's own).

    ``source``: anything :func:`read_model_source` reads. ``space``: a space spec (module of
    ``search_spaces``, ``.py`` path) or a :class:`~nasdistill.space.SearchSpace`; when given, the
    source's arch is checked against it. Raises ``ValueError`` / ``FileNotFoundError`` naming the
    inputs as ``names`` says.
    """
    from ..space import load_space

    found = read_model_source(source, names.arch)
    if space is not None:
        loaded = load_space(space, num_classes, input_size)
        try:
            return ModelRecord.of_space(loaded, found.arch)
        except ValueError as err:
            if found.record is None or found.record.kind != "space":
                raise ValueError(f"{names.arch} does not fit {names.space_is(space)}: {err}") from None
            recorded = found.space or "?"
            shown = str(source) if isinstance(source, (str, os.PathLike)) else "(a model record)"
            raise ValueError(
                f"{names.arch_is(shown)} is a network recorded with its own space ({recorded!r}), and "
                f"{names.space_is(space)} does not fit it ({err}). {names.drop_space()} to use the "
                "recorded space, or name the space it was searched in") from None
    if found.record is not None:
        return found.record.adapted(num_classes, input_size)
    if found.space is None:
        raise ValueError(names.bare_arch or f"{names.arch} is an architecture without a space: name "
                         f"its search space with {names.space}")
    return ModelRecord.of_space(load_space(found.space, num_classes, input_size), found.arch)


__all__ = ["ModelSource", "SourceNames", "read_model_source", "record_from_source"]
