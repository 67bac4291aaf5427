"""The package's layers, read from the source: every import, lazy ones inside functions included,
points down the list of ``../shared/DESIGN.md`` ("Layers"), and no two first-level units depend on
each other in a cycle. A test on the source, so a new import cannot quietly turn the order round."""
import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "nasdistill"

#: Lowest first. A unit may import units of lower layers, and units of its own layer as long as
#: the first-level graph stays acyclic.
LAYERS = [
    ("base", {"atomic", "config", "registry", "version"}),
    ("models and data", {"models", "data"}),
    ("space", {"space"}),
    ("supernet", {"supernet"}),
    ("network", {"network"}),
    ("engine", {"engine"}),
    ("methods", {"search", "teachers", "distill", "analysis"}),
    ("the main job", {"report", "pipeline"}),
    ("what a user types", {"commands", "bench", "cli", "__main__", "__init__"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path):
    """``(line, imported module)`` of every import statement in ``path`` that names nasdistill,
    at any depth (a function's lazy import counts), and every ``importlib.import_module`` /
    ``import_submodules`` call with a literal nasdistill module name."""
    name, is_package = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nasdistill":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "nasdistill":  # from nasdistill import x: x is a first-level unit
                for alias in node.names:
                    yield node.lineno, f"nasdistill.{alias.name}"
            elif target.split(".")[0] == "nasdistill":
                yield node.lineno, target
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "import_submodules"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                    and node.args[0].value.startswith("nasdistill"):
                yield node.lineno, node.args[0].value


def edges() -> dict:
    """``{(unit, imported unit): ["file:line", ...]}`` between first-level units."""
    out: dict = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        src_unit = unit(module_name(path)[0])
        for line, target in imports(path):
            dst = unit(target)
            if dst != src_unit:
                out.setdefault((src_unit, dst), []).append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    return out


def test_every_first_level_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    units = {"__init__" if u == "__init__" else u for u in units}
    assert not units - set(LAYER_OF), f"give these units a layer in LAYERS: {sorted(units - set(LAYER_OF))}"


def test_no_import_points_up_a_layer():
    upward = {k: v for k, v in edges().items() if LAYER_OF[k[1]] > LAYER_OF[k[0]]}
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(
        f"  {a} ({LAYERS[LAYER_OF[a]][0]}) -> {b} ({LAYERS[LAYER_OF[b]][0]}): {', '.join(where[:3])}"
        for (a, b), where in sorted(upward.items()))


def test_no_cycle_between_first_level_units():
    graph = nx.DiGraph(list(edges()))
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"first-level units in a cycle: {cycles}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    # the reader itself: a lazy relative import inside a function is an edge like any other
    src = PACKAGE / "space" / "ops.py"
    found = dict((t, n) for n, t in imports(src))
    assert "nasdistill.space.elastic" in found  # `from .elastic import share_widest`, inside a method
    assert unit("nasdistill.space.ops") == "space" and unit("nasdistill") == "__init__"
