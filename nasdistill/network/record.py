"""The model record: how to rebuild a network, as data (``model.json``).

One record describes every network nasdistill writes: a search's student, a teacher or distilled
student in a run directory, an export folder. It is either a zoo model (``kind: zoo``: name,
options) or an architecture of a search space (``kind: space``: the space *described as data* --
stem, layers, widths, strides, candidates, labels, head, input size, classes -- and the arch)::

    record = ModelRecord.of_space(space, arch)
    record.write(folder)                      # folder/model.json (+ folder/code/ for custom ops)
    model = ModelRecord.read(folder).build()  # a fresh network; load its weights next

Rebuilding never imports user code: a space made only of built-in candidates is data. A space
with custom candidates (code) builds only when those ops are registered in this process, or with
``trust_code=True``, which imports the code files saved next to the record (``code/*.py``, copied
when the record was written) -- and only those, resolved inside the record's folder. Records hold
no absolute paths.

Where an architecture comes from (a mapping, JSON text, a file, a folder, with or without a space)
is resolved by :mod:`nasdistill.network.source`.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..atomic import atomic_path, write_json

FORMAT = "nasdistill-model"
VERSION = 2
FILENAME = "model.json"
CODE_DIR = "code"

PathLike = Union[str, os.PathLike]


@dataclass
class ModelRecord:
    """A network as data; see the module docstring."""

    kind: str                                   # "zoo" or "space"
    num_classes: int
    input_size: tuple
    name: Optional[str] = None                  # zoo: registered model name
    options: dict = field(default_factory=dict) # zoo: builder keyword arguments
    space: Optional[dict] = None                # space: describe_space(space)
    arch: Optional[dict] = None                 # space: label -> choice
    code: list = field(default_factory=list)    # space: [{"op", "file"}] code of custom ops

    def __post_init__(self):
        if self.kind not in ("zoo", "space"):
            raise ValueError(f"model record kind must be 'zoo' or 'space', got {self.kind!r}")
        self.num_classes = int(self.num_classes)
        self.input_size = tuple(int(v) for v in self.input_size)
        if self.kind == "zoo" and not self.name:
            raise ValueError("a zoo model record needs the model name")
        if self.kind == "space" and (self.space is None or self.arch is None):
            raise ValueError("a space model record needs the space description and the arch")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def zoo(cls, name: str, num_classes: int, input_size, options: Optional[Mapping] = None) -> "ModelRecord":
        return cls("zoo", num_classes, input_size, name=name, options=dict(options or {}))

    @classmethod
    def of_space(cls, space, arch: Mapping) -> "ModelRecord":
        """The record of ``space.build(arch)`` (``space``: a :class:`~nasdistill.space.SearchSpace`)."""
        from ..space import custom_ops, describe_space

        arch = space.validate(arch)
        code = [{"op": op.name, "file": _source_file(op.builder)} for op in custom_ops(space)]
        rec = cls("space", space.num_classes, space.input_size, space=describe_space(space), arch=arch,
                  code=code)
        rec._space = space
        return rec

    @classmethod
    def from_config(cls, model_cfg, num_classes: int, input_size, where: str = "model") -> "ModelRecord":
        """The record of a :class:`~nasdistill.engine.config.ModelConfig` for the given data.

        ``arch`` may be a mapping, JSON text, a JSON file or a folder holding ``model.json``; a full
        record (a search run, an export) needs no ``space``. An explicit ``space`` is loaded and
        adapted to the data, and the arch is checked against it
        (:func:`~nasdistill.network.source.record_from_source`). ``where``: the config section, for
        messages (``model``, ``student``, ``sftn.student``).
        """
        from .source import SourceNames, record_from_source

        input_size = tuple(int(v) for v in input_size)
        if model_cfg.arch is None:
            if model_cfg.space is not None:
                raise ValueError(f"{where}.space={model_cfg.space!r} needs {where}.arch (a mapping, a JSON "
                                 "string, a JSON file, or a run directory holding model.json)")
            return cls.zoo(model_cfg.name, num_classes, input_size, getattr(model_cfg, "options", None))
        record = record_from_source(model_cfg.arch, model_cfg.space, num_classes, input_size,
                                    SourceNames.setting(where))
        if record.kind != "space":
            raise ValueError(f"{where}.arch names a zoo model record ({record.name}); set {where}.name "
                             "instead")
        return record

    def adapted(self, num_classes: Optional[int] = None, input_size=None) -> "ModelRecord":
        """The same network built for other classes / input size (None keeps the record's)."""
        num_classes = self.num_classes if num_classes is None else int(num_classes)
        input_size = self.input_size if input_size is None else tuple(int(v) for v in input_size)
        if (num_classes, input_size) == (self.num_classes, self.input_size):
            return self
        if self.kind == "zoo":
            return dataclasses.replace(self, num_classes=num_classes, input_size=input_size)
        space = dict(self.space, num_classes=num_classes, input_size=list(input_size))
        return dataclasses.replace(self, num_classes=num_classes, input_size=input_size, space=space)

    # ------------------------------------------------------------------ building
    def space_object(self, trust_code: Union[bool, str] = False, base_dir: Optional[PathLike] = None):
        """The :class:`~nasdistill.space.SearchSpace` of a space record (see ``trust_code`` in
        :meth:`build`)."""
        if self.kind != "space":
            raise ValueError(f"the record describes the zoo model {self.name!r}, not a space architecture")
        cached = getattr(self, "_space", None)
        if cached is not None:
            return cached
        from ..space import space_from_description

        if trust_code:
            self._import_code(trust_code, base_dir)
        try:
            space = space_from_description(self.space, "model record")
        except ValueError as err:
            if self.code and not trust_code:
                files = [c["file"] for c in self.code if c.get("file")]
                where = f" ({', '.join(files)} next to the record)" if files else ""
                raise ValueError(f"{err}. The record saved the code of its custom ops{where}: pass "
                                 f"trust_code=True (CLI: --trust-code) to import it") from None
            raise
        self._space = space
        return space

    def _import_code(self, trust_code: Union[bool, str], base_dir: Optional[PathLike]) -> None:
        from ..space.loading import import_file

        if isinstance(trust_code, (str, os.PathLike)):
            files = [Path(trust_code)]
        else:
            if base_dir is None:
                raise ValueError("trust_code=True needs the folder of the record (base_dir) to find its code")
            base = Path(base_dir).resolve()
            files = []
            for entry in self.code:
                rel = entry.get("file")
                if not rel:
                    continue
                path = (base / rel).resolve()
                if base not in path.parents:
                    raise ValueError(f"model record: code file {rel!r} lies outside {base}; refusing to import it")
                files.append(path)
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"trust_code: code file {path} does not exist")
            print(f"trust_code: importing {path}", file=sys.stderr, flush=True)
            import_file(path, "nasdistill_record_code")

    def build(self, trust_code: Union[bool, str] = False, base_dir: Optional[PathLike] = None,
              for_weights: bool = False):
        """A fresh network (a :class:`~nasdistill.models.staged.StagedModel`).

        ``trust_code``: ``True`` imports the custom-op code saved with the record (in ``base_dir``),
        a path imports that file; by default no code is imported. ``for_weights``: the weights are
        loaded next, so a zoo option that fetches pretrained weights (``weights``) is dropped.
        """
        if self.kind == "zoo":
            from ..models import create_model

            options = {k: v for k, v in self.options.items() if not (for_weights and k == "weights")}
            return create_model(self.name, num_classes=self.num_classes, in_channels=self.input_size[0],
                                **options)
        return self.space_object(trust_code, base_dir).build(self.arch)

    # ------------------------------------------------------------------ identity
    @property
    def arch_id(self) -> Optional[str]:
        return self.space_object().arch_id(self.arch) if self.kind == "space" else None

    def describe(self) -> str:
        """``zoo model resnet8`` / ``digits_small architecture 4a2eed856e``."""
        if self.kind == "zoo":
            return f"zoo model {self.name}"
        return f"{self.space['name']} architecture {self.arch_id}"

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """The JSON mapping of ``model.json`` (space records add id, MACs and params for readers)."""
        out = {"format": FORMAT, "version": VERSION, "kind": self.kind,
               "num_classes": self.num_classes, "input_size": list(self.input_size)}
        if self.kind == "zoo":
            out.update(name=self.name, options=dict(self.options))
        else:
            try:
                space = self.space_object()
                cost = space.cost(self.arch)
                derived = {"arch_id": space.arch_id(self.arch), "macs": int(cost["macs"]),
                           "params": int(cost["params"])}
            except ValueError:  # custom ops not registered here: the record is still complete
                derived = {}
            out.update(space=self.space, arch=dict(self.arch), **derived)
            if self.code:
                out["code"] = [{"op": c["op"], "file": _relative_code_path(c.get("file"))} for c in self.code]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "model record") -> "ModelRecord":
        """Parse a ``model.json`` mapping; also reads the records of earlier versions (a space
        named by a module of ``search_spaces``). Raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: a model record is a JSON mapping, got {type(data).__name__}")
        kind = data.get("kind") or ("space" if "arch" in data else "zoo" if ("model" in data or "name" in data) else None)
        if kind not in ("zoo", "space"):
            raise ValueError(f"{where}: needs kind 'zoo' (name, num_classes, input_size) or 'space' "
                             f"(space, arch, num_classes, input_size); got keys {sorted(data)}")
        missing = [k for k in ("num_classes", "input_size") if k not in data]
        if kind == "space":
            missing += [k for k in ("space", "arch") if k not in data]
        elif not (data.get("name") or data.get("model")):
            missing.append("name")
        if missing:
            raise ValueError(f"{where}: a {kind} record misses {missing}; got keys {sorted(data)}")
        try:
            if kind == "zoo":
                return cls.zoo(data.get("name") or data["model"], data["num_classes"], data["input_size"],
                               data.get("options"))
            space = data["space"]
            if isinstance(space, str):  # an earlier version: the space by name
                space = _legacy_space(space, data["num_classes"], data["input_size"], where)
            if not isinstance(data["arch"], Mapping):
                raise ValueError(f"'arch' must be a mapping label -> choice, got {data['arch']!r}")
            return cls("space", data["num_classes"], data["input_size"], space=dict(space),
                       arch=dict(data["arch"]), code=[dict(c) for c in data.get("code") or []])
        except (TypeError, KeyError) as err:
            raise ValueError(f"{where}: malformed record ({err})") from None

    def write(self, folder: PathLike) -> Path:
        """Write ``folder/model.json`` (and copy custom-op code into ``folder/code/``)."""
        folder = Path(folder)
        base = getattr(self, "_base_dir", None)
        for entry in self.code:
            src = entry.get("file")
            if src and not os.path.isabs(src) and base is not None:
                src = str(Path(base) / src)  # code saved next to the record this one was read from
            if src and os.path.isfile(src) and Path(src).resolve() != (folder / _relative_code_path(src)).resolve():
                with atomic_path(folder / _relative_code_path(src)) as tmp:
                    shutil.copyfile(src, tmp)
        write_json(folder / FILENAME, self.to_json())
        return folder / FILENAME

    @classmethod
    def read(cls, folder: PathLike) -> "ModelRecord":
        """The record of ``folder/model.json`` (``FileNotFoundError`` / ``ValueError`` when absent
        or malformed)."""
        path = Path(folder) / FILENAME
        if not path.is_file():
            students = sorted(p.parent.name for p in Path(folder).glob("students/*/" + FILENAME))
            if students:  # a main job's folder: its models are its students' exports
                shown = ", ".join(students[:4]) + (f" and {len(students) - 4} more" if len(students) > 4 else "")
                raise FileNotFoundError(f"{folder} is a main job's folder, which holds no model of its own: "
                                        f"its students are exported in {Path(folder) / 'students'}/<id> "
                                        f"({shown}); give one of those folders")
            raise FileNotFoundError(f"{path} does not exist: {folder} holds no model record (a run "
                                    "directory or an export folder written by nasdistill has one)")
        record = cls.from_json(_load_json(path), str(path))
        record._base_dir = Path(folder)
        return record


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def _legacy_space(name: str, num_classes, input_size, where: str) -> dict:
    """The description of a space an earlier record named: only modules of ``search_spaces``
    (installed with nasdistill) are imported, never a file the record points to."""
    from ..space import available_spaces, describe_space, load_space

    if name not in available_spaces():
        raise ValueError(f"{where}: names the space {name!r} by file or module; records of this version "
                         "describe the space as data. Rebuild it with nasdistill.load_space(<that file>) "
                         "and ModelRecord.of_space(space, arch), or re-export the model")
    return describe_space(load_space(name, num_classes, input_size))


def _relative_code_path(path: Optional[str]) -> Optional[str]:
    """Where a custom op's code lives next to a record: ``code/<file name>`` (never absolute)."""
    if not path:
        return None
    return f"{CODE_DIR}/{Path(path).name}" if os.path.isabs(path) else path


def _source_file(fn) -> Optional[str]:
    """The absolute path of the file defining ``fn`` (copied next to a record), or None."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    return os.path.abspath(path) if path and os.path.isfile(path) else None


__all__ = ["CODE_DIR", "FILENAME", "FORMAT", "ModelRecord", "VERSION"]
