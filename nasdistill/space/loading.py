"""Find a search space by module name (in ``search_spaces``) or by path to a ``.py`` file."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .space import SearchSpace


def load_space(spec: "str | SearchSpace", **overrides) -> SearchSpace:
    """Return the ``SPACE`` defined by ``spec``.

    ``spec`` is a module name of ``search_spaces`` (``"gtn_cifar"``), a dotted module path, or a
    path to a ``.py`` file. With ``overrides`` (e.g. ``num_classes=10``) the module's
    ``make_space(**overrides)`` is called instead of reading ``SPACE``.
    """
    if isinstance(spec, SearchSpace):
        if overrides:
            raise ValueError("overrides need a space given by name or file, not a SearchSpace object")
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a search space is named by a module of search_spaces or a .py path, got {spec!r}")
    if spec.endswith(".py") or os.sep in spec:
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"search space file {spec!r} does not exist")
        mod_name = "nasdistill_user_space_" + os.path.splitext(os.path.basename(spec))[0]
        module_spec = importlib.util.spec_from_file_location(mod_name, spec)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
    else:
        name = spec if "." in spec else f"search_spaces.{spec}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name not in (name, name.split(".")[0]):
                raise
            raise ValueError(f"no search space named {spec!r}: give a module of search_spaces "
                             f"({', '.join(available_spaces())}) or a path to a .py file") from None
    if overrides:
        make = getattr(module, "make_space", None)
        if make is None:
            raise ValueError(f"search space {spec!r} defines no make_space(); cannot apply {overrides}")
        space = make(**overrides)
    else:
        space = getattr(module, "SPACE", None)
    if not isinstance(space, SearchSpace):
        raise ValueError(f"{spec!r} must define SPACE = SearchSpace(...)")
    return space


def available_spaces() -> list[str]:
    import search_spaces

    folder = os.path.dirname(search_spaces.__file__)
    return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
