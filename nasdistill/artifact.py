"""Loading a network back from a folder nasdistill wrote: an export folder or any run directory.

Both hold ``model.json`` (a :class:`~nasdistill.record.ModelRecord`: the network as data) and
``model.safetensors``; :func:`load` rebuilds the network from the record with no supernet class and
no import of user code (custom ops need ``trust_code``, see :mod:`nasdistill.record`), then loads
the weights strictly. Writing exports lives in :mod:`nasdistill.export`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

from .engine.checkpoint import state_dict_diff as key_diff
from .record import FILENAME, ModelRecord

FILES = {"safetensors": "model.safetensors", "pt2": "model.pt2", "onnx": "model.onnx"}
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
ONNX_HINT = "pip install 'nasdistill[onnx]'  (onnx, onnxscript, onnxruntime)"

PathLike = Union[str, os.PathLike]


def read_record(folder: PathLike) -> ModelRecord:
    """The :class:`ModelRecord` of ``folder`` with errors that say what the folder should hold."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: expected an export folder or run directory "
                                f"with {FILENAME} and model.safetensors (write one with `nasdistill export`)")
    return ModelRecord.read(folder)


def load_weights(model: nn.Module, path: PathLike, device="cpu") -> None:
    """Load ``path`` (safetensors) into ``model`` strictly; a clear error when missing or unfit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the folder {path.parent} is incomplete (an "
                                "unfinished run, or a partial copy); finish the run or re-export the model")
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-export the model") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the network described by {path.parent / FILENAME}: "
                         f"{str(err).splitlines()[0]} {key_diff(model, weights)}") from None


def load(folder: PathLike, device="cpu", trust_code: Union[bool, str] = False) -> nn.Module:
    """The network of an export folder or run directory, weights loaded, in eval mode.

    Rebuilt from ``model.json`` (no user code is imported unless ``trust_code``: ``True`` imports
    the custom-op code saved in the folder, a path imports that file), then ``model.safetensors``
    is loaded strictly. Raises ``FileNotFoundError`` / ``ValueError`` saying which file is missing
    or corrupt.
    """
    return load_with_record(folder, device, trust_code)[0]


def load_with_record(folder: PathLike, device="cpu",
                     trust_code: Union[bool, str] = False) -> tuple[nn.Module, ModelRecord]:
    """``(network, record)`` of an export folder or run directory: :func:`load` and the
    :class:`ModelRecord` it was rebuilt from (``model.json`` is read once)."""
    folder = Path(folder)
    record = read_record(folder)
    model = record.build(trust_code=trust_code, base_dir=folder, for_weights=True)
    load_weights(model, folder / FILES["safetensors"], device)
    return model.to(device).eval(), record


def load_pt2(folder: PathLike) -> nn.Module:
    """The ``torch.export`` program of an export folder, as a callable module."""
    path = Path(folder) / FILES["pt2"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: export the model with `nasdistill export` "
                                "(the pt2 export may have failed: see export.json)")
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # torch raises a variety of errors on a damaged archive
        raise ValueError(f"{path} is not a readable torch.export archive ({type(err).__name__}: "
                         f"{err}); re-export the model") from None
    return program.module()


def supernet_modules(model: nn.Module) -> list[str]:
    """Names of submodules whose class comes from ``nasdistill.supernet`` (none in an export)."""
    return [name or "<root>" for name, m in model.named_modules()
            if type(m).__module__.startswith("nasdistill.supernet")]
