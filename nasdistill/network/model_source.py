"""``model.py`` of an export folder: the network as plain PyTorch source.

:func:`model_source` writes a file that needs no nasdistill: it imports ``torch``, ``safetensors``
and a few modules of Python's standard library, defines the network as an ``nn.Module`` and offers
``build()`` (fresh weights) and ``load(device="cpu")`` (the weights of ``model.safetensors`` next
to the file, checked against their SHA-256). The state-dict keys are those of ``model.safetensors``
because the classes are the ones nasdistill builds, copied:

- a space architecture: the blocks it uses (``ConvBNReLU``, ``ResStack``/``BasicBlock``,
  ``ShapeIdentity``, ``Skip``, ``SpaceHead``, custom ops' builders) and ``StagedModel``, and a
  ``build()`` that lists its stem, one line per layer, head and classifier;
- a zoo model: its family's module (e.g. all CIFAR ResNets) made standalone, and ``build()``
  calling the family's builder by name.

The copy is made from the source of the defining modules (``ast``): a definition is taken with
the definitions it refers to, transitively; ``nasdistill`` imports are replaced by those
definitions, other imports are kept. What cannot be copied -- a torchvision network (its source
is torchvision's), a builder that is a lambda or a nested function -- raises
:class:`UnsupportedSource` with the reason, which the export records.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Optional

FILENAME = "model.py"

#: Members left out of copied classes: nasdistill's feature contract (``forward_features`` and the
#: ``Features`` dataclass it returns, grafting units) is not part of the network, and a dataclass
#: fails in a file imported without a ``sys.modules`` entry.
OMIT_MEMBERS = {
    ("nasdistill.models.staged", "StagedModel"): {"forward_features", "units", "feature_shapes"},
}

#: The registration a copied family module makes, and the registry ``build()`` reads, become this
#: stub: ``register("model", name, builder)`` (or as a decorator) keeps the builder in ``MODELS``.
STUBBED = {("nasdistill.registry", "register"), ("nasdistill.models.registry", "MODELS")}
REGISTRY_STUB = '''MODELS = {}


def register(kind, name, builder=None, **meta):
    """Keep a builder of this file under its model name: ``MODELS[name](num_classes, in_channels)``."""
    def keep(builder):
        MODELS[name] = builder
        return builder
    return keep if builder is None else keep(builder)'''


class UnsupportedSource(ValueError):
    """The network cannot be written as standalone source; the message says why."""


class _Module:
    """One module's top-level definitions and imports, parsed once."""

    def __init__(self, name: str, path: Path, is_package: bool):
        self.name, self.path = name, path
        self.lines = path.read_text().splitlines()
        self.tree = ast.parse("\n".join(self.lines), str(path))
        self.package = name if is_package else name.rpartition(".")[0]
        self.defs: dict[str, ast.stmt] = {}
        # bound name -> ("from", module, name) | ("import", module, import line)
        self.imports: dict[str, tuple] = {}
        for stmt in self.tree.body:
            for bound in _bound_names(stmt):
                self.defs[bound] = stmt
            if isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__":
                module = importlib.util.resolve_name("." * stmt.level + (stmt.module or ""), self.package) \
                    if stmt.level else stmt.module
                for alias in stmt.names:
                    self.imports[alias.asname or alias.name] = ("from", module, alias.name)
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    line = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                    self.imports[bound] = ("import", alias.name, line)

    def text(self, stmt: ast.stmt, omit: frozenset = frozenset()) -> str:
        """The statement's source (decorators included), without the members in ``omit``."""
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        lines = self.lines[first - 1:stmt.end_lineno]
        if omit and isinstance(stmt, ast.ClassDef):
            drop = set()
            for member in stmt.body:
                if getattr(member, "name", None) in omit:
                    start = min([member.lineno] + [d.lineno for d in member.decorator_list])
                    drop.update(range(start, member.end_lineno + 1))
            lines = [line for n, line in enumerate(lines, first) if n not in drop]
            while lines and not lines[-1].strip():
                lines.pop()
        return "\n".join(lines)


def _is_nasdistill(module: Optional[str]) -> bool:
    return bool(module) and (module == "nasdistill" or module.startswith("nasdistill."))


def _bound_names(stmt: ast.stmt) -> list[str]:
    """The names a top-level definition binds: a def or class, the targets of an assignment."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return [n for t in targets for n in _names_in(t)]
    return []


def _is_definition(stmt: ast.stmt) -> bool:
    return isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def _names_in(stmt: ast.AST) -> list[str]:
    seen: dict[str, None] = {}
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            seen.setdefault(node.id)
    return list(seen)


class SourceWriter:
    """Collects copied definitions (dependencies first) and the imports they need."""

    def __init__(self):
        self.modules: dict[str, _Module] = {}
        self.imports: dict[str, None] = {}
        self.chunks: list[tuple[str, bool]] = []  # (source, is a def or class)
        self.defined: dict[str, tuple] = {}  # local name -> (module, name) it was copied from
        self.done: set = set()
        self.about: Optional[str] = None  # the docstring of a copied family module

    # ------------------------------------------------------------------ modules
    def module(self, name: str, path: Optional[Path] = None) -> _Module:
        if name not in self.modules:
            mod = sys.modules.get(name)
            if mod is None and path is None:
                mod = importlib.import_module(name)
            file = path or inspect.getsourcefile(mod)
            if not file or not Path(file).is_file():
                raise UnsupportedSource(f"the source of module {name} is not available")
            self.modules[name] = _Module(name, Path(file), hasattr(mod, "__path__"))
        return self.modules[name]

    def _claim(self, local: str, origin: tuple) -> None:
        if self.defined.setdefault(local, origin) != origin:
            other = self.defined[local]
            raise UnsupportedSource(f"two definitions named {local} are needed ({other[0]}.{other[1]} and "
                                    f"{origin[0]}.{origin[1]}); model.py has one namespace")

    # ------------------------------------------------------------------ copying
    def require(self, module: str, name: str) -> str:
        """Copy the definition of ``module.name`` (and what it refers to); return its local name."""
        key = (module, name)
        if key in self.done:
            return name
        self.done.add(key)
        if key in STUBBED:
            for stub in STUBBED:
                self._claim(stub[1], stub)
            self.done.update(STUBBED)
            self.chunks.append((REGISTRY_STUB, True))
            return name
        mod = self.module(module)
        if name in mod.defs:
            stmt = mod.defs[name]
            self._claim(name, key)
            self._copy(mod, stmt)
            return name
        if name in mod.imports:
            kind, source, original = mod.imports[name]
            if kind == "import":
                if _is_nasdistill(source):
                    raise UnsupportedSource(f"{module} refers to the module {source} as {name}; model.py "
                                            "can copy names imported from nasdistill, not whole modules")
                self.imports.setdefault(original)
                return name
            if not _is_nasdistill(source):
                line = f"from {source} import {original}" + (f" as {name}" if name != original else "")
                self.imports.setdefault(line)
                return name
            local = self.require(source, original)
            if local != name:
                self._claim(name, key)
                self.chunks.append((f"{name} = {local}", False))
            return name
        raise UnsupportedSource(f"{name} is not defined at the top level of {module}")

    def _copy(self, mod: _Module, stmt: ast.stmt) -> None:
        """Copy ``stmt`` of ``mod`` after the definitions it refers to."""
        if id(stmt) in self.done:
            return
        self.done.add(id(stmt))
        omit = frozenset(OMIT_MEMBERS.get((mod.name, getattr(stmt, "name", None)), ()))
        body = stmt
        if omit and isinstance(stmt, ast.ClassDef):
            body = ast.Module(body=[s for s in stmt.body if getattr(s, "name", None) not in omit],
                              type_ignores=[])
            refs = _names_in(body) + [n for b in (*stmt.bases, *stmt.decorator_list) for n in _names_in(b)]
        else:
            refs = _names_in(body)
        own = set(_bound_names(stmt))
        for ref in refs:
            if ref not in own and (ref in mod.defs or ref in mod.imports):
                self.require(mod.name, ref)
        self.chunks.append((mod.text(stmt, omit), _is_definition(stmt)))

    def include_module(self, module: str) -> None:
        """Copy every top-level statement of ``module`` but its docstring and imports."""
        mod = self.module(module)
        for stmt in mod.tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt is mod.tree.body[0]:
                continue
            for name in _bound_names(stmt):
                self._claim(name, (module, name))
                self.done.add((module, name))
            self._copy(mod, stmt)

    def callable_name(self, fn, what: str) -> str:
        """Copy the top-level function or class ``fn`` with what it needs; return its name."""
        name, qualname = getattr(fn, "__name__", None), getattr(fn, "__qualname__", None)
        mod = sys.modules.get(getattr(fn, "__module__", None) or "")
        if name is None or name == "<lambda>" or qualname != name or getattr(mod, name, None) is not fn:
            raise UnsupportedSource(f"{what} ({fn!r}) is not a function or class defined at the top level of "
                                    "its module, so its source cannot be copied")
        try:
            path = Path(inspect.getsourcefile(fn))
        except TypeError:
            raise UnsupportedSource(f"{what} ({fn!r}) has no Python source to copy") from None
        self.module(fn.__module__, path)
        return self.require(fn.__module__, name)

    # ------------------------------------------------------------------ the file
    def render(self, header: str, tail: str) -> str:
        for line in self.imports:
            root = line.split()[1].split(".")[0]
            if root == "nasdistill":
                raise UnsupportedSource(f"the copied source imports nasdistill ({line})")

        def group(line: str) -> tuple:  # the standard library first, as isort would
            root = line.split()[1].split(".")[0]
            return (root not in sys.stdlib_module_names, not line.startswith("import "), line)

        text = f"{header}\n\nfrom __future__ import annotations\n\n" + "\n".join(sorted(self.imports, key=group))
        previous_def = True
        for chunk, is_def in self.chunks:
            # consecutive plain statements (constants, registration calls) stay together
            text += ("\n" if not (is_def or previous_def) else "\n\n\n") + chunk.strip("\n")
            previous_def = is_def
        return text + "\n\n\n" + tail.strip("\n") + "\n"


# ---------------------------------------------------------------------------- the two kinds
def _space_build(writer: SourceWriter, record) -> str:
    from ..models.staged import StagedModel
    from ..space.blocks import ConvBNReLU, SpaceHead

    def cls(c) -> str:
        return writer.require(c.__module__, c.__name__)

    space = record.space_object()
    layers = space.resolve(record.arch)
    lines = [(f"    stem = {cls(ConvBNReLU)}({space.input_size[0]}, {space.stem_channels}, "
              f"{space.stem_kernel}, {space.stem_stride})"), "    stages = ["]
    for r in layers:
        out = space.layers[r.index].out_channels
        try:
            call = r.op.source(writer, r.in_channels, out, r.stride)  # each op writes its own line
        except NotImplementedError as err:
            raise UnsupportedSource(str(err)) from None
        lines.append(f"        {call},  # {r.label}: {r.choice}, {r.in_channels} -> {r.out_channels} channels, "
                     f"{r.in_hw[0]}x{r.in_hw[1]} -> {r.out_hw[0]}x{r.out_hw[1]}")
    width = layers[-1].out_channels
    writer.imports.setdefault("from torch import nn")
    lines += ["    ]", f"    embed = {cls(SpaceHead)}({width}, {space.head_width!r})",
              f"    classifier = nn.Linear({space.head_width or width}, {space.num_classes})",
              f"    return {cls(StagedModel)}(stem, stages, embed, classifier)"]
    doc = f'    """{record.describe()}, fresh weights."""'
    return "def build():\n" + doc + "\n" + "\n".join(lines)


def _zoo_build(writer: SourceWriter, record) -> str:
    from ..models import MODELS

    builder = MODELS.get(record.name)
    module = getattr(builder, "__module__", "")
    options = {k: v for k, v in record.options.items() if k != "weights"}
    args = ", ".join([f"num_classes={record.num_classes}", f"in_channels={record.input_size[0]}",
                      *(f"{k}={v!r}" for k, v in options.items())])
    if module == "nasdistill.models.torchvision_models":
        raise UnsupportedSource(f"{record.name} is a torchvision network: its source is torchvision's, so "
                                "a standalone model.py would have to import torchvision; use model.pt2 or "
                                "nasdistill.load")
    if module.startswith("nasdistill.models."):
        writer.require("nasdistill.models.registry", "MODELS")
        writer.include_module(module)
        # the family docstring's first paragraph; the rest may describe nasdistill-only features
        writer.about = (ast.get_docstring(writer.module(module).tree) or "").split("\n\n")[0] or None
        call = f"MODELS[{record.name!r}]({args})"
    else:
        call = f"{writer.callable_name(builder, f'the builder of model {record.name!r}')}({args})"
    return f'def build():\n    """{record.describe()}, fresh weights."""\n    return {call}'


def model_source(record, weights_sha256: str) -> str:
    """The text of ``model.py`` for the network ``record`` describes (a
    :class:`~nasdistill.network.ModelRecord`); ``weights_sha256``: the digest of the
    ``model.safetensors`` it loads. Raises :class:`UnsupportedSource` with the reason when the
    network cannot be written as standalone source."""
    writer = SourceWriter()
    build = _space_build(writer, record) if record.kind == "space" else _zoo_build(writer, record)
    for line in ("import hashlib", "import os", "import torch", "from safetensors.torch import load_file"):
        writer.imports.setdefault(line)
    about = f"{writer.about.strip()}\n\n" if writer.about else ""
    header = (f'"""{record.describe()}: {record.num_classes} classes, inputs {tuple(record.input_size)}.\n\n'
              f"{about}Plain PyTorch, written by `nasdistill export`: it needs torch and safetensors, not nasdistill.\n\n"
              "    from model import load\n"
              "    net = load()          # model.safetensors next to this file, eval mode\n"
              "    logits = net(images)  # (N, C, H, W) -> (N, classes)\n"
              '"""')
    tail = (f"NUM_CLASSES = {record.num_classes}\nINPUT_SIZE = {tuple(record.input_size)!r}\n"
            f"WEIGHTS = \"model.safetensors\"\nWEIGHTS_SHA256 = \"{weights_sha256}\"\n\n\n"
            f"{build}\n\n\n"
            "def load(device=\"cpu\", check_digest=True):\n"
            "    \"\"\"The network with the weights of this folder, on ``device``, in eval mode.\"\"\"\n"
            "    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS)\n"
            "    if check_digest:\n"
            "        with open(path, \"rb\") as f:\n"
            "            if hashlib.sha256(f.read()).hexdigest() != WEIGHTS_SHA256:\n"
            "                raise ValueError(f\"{path} does not match the SHA-256 this file records \"\n"
            "                                 \"(damaged or replaced); export the model again\")\n"
            "    model = build()\n"
            "    model.load_state_dict(load_file(path, device=str(device)))\n"
            "    return model.to(device).eval()\n\n\n"
            "if __name__ == \"__main__\":\n"
            "    net = load()\n"
            "    print(net(torch.zeros(1, *INPUT_SIZE)).shape)")
    return writer.render(header, tail)


__all__ = ["FILENAME", "UnsupportedSource", "model_source"]
