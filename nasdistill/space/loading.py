"""The one space loader: a space by module name, ``.py`` file, description or object, adapted to
the data it will be trained on.

A space module (in ``search_spaces`` or any ``.py`` file) defines ``SPACE = SearchSpace(...)``,
or ``make_space(num_classes, input_size)``, or both. Given the data's ``num_classes`` and
``input_size``:

- with ``make_space``, the loader calls ``make_space(num_classes=..., input_size=...)`` (the author
  decides how the space adapts, e.g. another stem stride for 64x64 images);
- with ``SPACE`` alone, the loader adapts it itself (:meth:`SearchSpace.adapted`: the same stem,
  layers and head, with the data's input channels, image size and classes).

Without ``num_classes`` / ``input_size`` the space is returned as the module defines it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any, Mapping, Optional

from .space import SearchSpace


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def import_file(path: "str | os.PathLike", prefix: str):
    """Import the ``.py`` file ``path`` as a module named ``PREFIX_<stem>_<hash of its absolute
    path>`` (registered in ``sys.modules``, removed again when the import fails)."""
    path = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    mod_name = f"{prefix}_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module


def import_space_module(spec: str):
    """The module ``spec`` names: a module of ``search_spaces``, a dotted module path, or a
    ``.py`` file (imported under a name unique to its absolute path)."""
    if _is_file_spec(spec):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"search space file {spec!r} does not exist")
        return import_file(spec, "nasdistill_user_space")
    name = spec if "." in spec else f"search_spaces.{spec}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name not in (name, name.split(".")[0]):
            raise
        raise ValueError(f"no search space named {spec!r}: give a module of search_spaces "
                         f"({', '.join(available_spaces())}) or a path to a .py file") from None


def load_space(spec: "str | SearchSpace | Mapping", num_classes: Optional[int] = None,
               input_size: Optional[tuple] = None) -> SearchSpace:
    """The space ``spec`` names, for ``num_classes`` classes and ``input_size`` (C, H, W) inputs.

    ``spec``: a module name of ``search_spaces`` (``"gtn_cifar"``), a dotted module path, a path
    to a ``.py`` file, a :class:`SearchSpace`, or a description mapping
    (:func:`~.description.describe_space`). See the module docstring for how the space is adapted.
    """
    input_size = None if input_size is None else tuple(int(v) for v in input_size)
    num_classes = None if num_classes is None else int(num_classes)
    if isinstance(spec, SearchSpace):
        return spec.adapted(num_classes, input_size)
    if isinstance(spec, Mapping):
        from .description import space_from_description

        return space_from_description(spec).adapted(num_classes, input_size)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a search space is named by a module of search_spaces or a .py path, got {spec!r}")
    module = import_space_module(spec)
    make = getattr(module, "make_space", None)
    base = getattr(module, "SPACE", None)
    if make is None and base is None:
        raise ValueError(f"search space {spec!r} defines neither SPACE = SearchSpace(...) nor "
                         "make_space(num_classes, input_size); define one of them")
    if make is not None and (base is None or num_classes is not None or input_size is not None):
        kwargs: dict[str, Any] = {}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if input_size is not None:
            kwargs["input_size"] = input_size
        try:
            space = make(**kwargs)
        except TypeError as err:
            raise ValueError(f"search space {spec!r}: make_space({', '.join(kwargs)}) failed ({err}); "
                             "its signature must be make_space(num_classes, input_size)") from None
        where = f"{spec!r}: make_space(...)"
    else:
        space, where = base, f"{spec!r}: SPACE"
    if not isinstance(space, SearchSpace):
        raise ValueError(f"{where} must be a SearchSpace, got {type(space).__name__}")
    return space.adapted(num_classes, input_size)


def available_spaces() -> list[str]:
    import search_spaces

    folder = os.path.dirname(search_spaces.__file__)
    return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
