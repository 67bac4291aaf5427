"""A search space as plain data, so a record of a network can be rebuilt without importing code.

:func:`describe_space` turns a :class:`~.space.SearchSpace` into a JSON-ready mapping::

    {"name": "digits_small", "input_size": [1, 8, 8], "num_classes": 10,
     "stem_channels": 16, "stem_kernel": 3, "stem_stride": 1, "head_width": 128,
     "layers": [{"out_channels": 16, "stride": 1, "label": "layer1",
                 "candidates": ["k3_d2", "k3_d4", "k5_d2", "identity", "zero"]}, ...]}

and :func:`space_from_description` rebuilds the identical space (same labels, candidates, costs,
architecture ids). Built-in candidates (``k{K}_d{D}``, ``identity``, ``zero``) are data; a custom
candidate is code: it resolves only when the process has registered it (``register("op", ...)``), otherwise
a ``ValueError`` names the op and says how to provide it.
"""
from __future__ import annotations

from typing import Any, Mapping

from .ops import CustomOp, get_op
from .space import Layer, SearchSpace

_KEYS = ("name", "input_size", "num_classes", "stem_channels", "stem_kernel", "stem_stride",
         "head_width", "layers")
_LAYER_KEYS = ("out_channels", "stride", "label", "candidates")


def describe_space(space: SearchSpace) -> dict:
    """The space as JSON-ready data (see the module docstring)."""
    return {"name": space.name, "input_size": [int(v) for v in space.input_size],
            "num_classes": int(space.num_classes), "stem_channels": int(space.stem_channels),
            "stem_kernel": int(space.stem_kernel), "stem_stride": int(space.stem_stride),
            "head_width": None if space.head_width is None else int(space.head_width),
            "layers": [{"out_channels": int(layer.out_channels), "stride": int(layer.stride),
                        "label": space.layer_label(i),
                        "candidates": list(space.layer_ops(i))}
                       for i, layer in enumerate(space.layers)]}


def custom_ops(space: SearchSpace) -> list[CustomOp]:
    """The registered (code) candidates the space uses, each once, in layer order."""
    out: list = []
    for i in range(len(space.layers)):
        for op in space.layer_ops(i).values():
            if isinstance(op, CustomOp) and op not in out:
                out.append(op)
    return out


def space_from_description(desc: Any, where: str = "space description") -> SearchSpace:
    """The :class:`SearchSpace` described by ``desc`` (see :func:`describe_space`).

    Raises ``ValueError`` naming the missing or malformed key, or the custom op that is not
    registered in this process.
    """
    if not isinstance(desc, Mapping):
        raise ValueError(f"{where}: a space description is a mapping, got {type(desc).__name__}")
    missing = [k for k in _KEYS if k not in desc]
    if missing:
        raise ValueError(f"{where}: misses {missing}; got keys {sorted(desc)}")
    layers = desc["layers"]
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{where}: 'layers' must be a non-empty list")
    built = []
    for i, layer in enumerate(layers):
        here = f"{where}, layer {i + 1}"
        if not isinstance(layer, Mapping) or any(k not in layer for k in _LAYER_KEYS):
            raise ValueError(f"{here}: needs keys {list(_LAYER_KEYS)}, got {layer!r}")
        names = layer["candidates"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{here}: 'candidates' must be a list of op names, got {names!r}")
        for name in names:
            try:
                get_op(name)
            except ValueError:
                raise ValueError(
                    f"{here}: candidate {name!r} is a custom op (code) that is not registered in "
                    f"this process; import the module that calls nasdistill.register('op', "
                    f"{name!r}, ...) first, or load with trust_code (it imports the op's code "
                    f"saved with the record)") from None
        built.append(Layer(int(layer["out_channels"]), int(layer["stride"]), list(names),
                           label=str(layer["label"])))
    try:
        return SearchSpace(name=str(desc["name"]), layers=built,
                           input_size=tuple(int(v) for v in desc["input_size"]),
                           num_classes=int(desc["num_classes"]), stem_channels=int(desc["stem_channels"]),
                           stem_kernel=int(desc["stem_kernel"]), stem_stride=int(desc["stem_stride"]),
                           head_width=None if desc["head_width"] is None else int(desc["head_width"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


__all__ = ["custom_ops", "describe_space", "space_from_description"]
