"""Loading a network back from a folder nasdistill wrote: an export folder or any run directory.

:func:`load` rebuilds the network from ``model.json`` (a
:class:`~nasdistill.network.record.ModelRecord`: the network as data) with no supernet class and
no import of user code (custom ops need ``trust_code``, see :mod:`nasdistill.network.record`),
then checks ``model.safetensors`` against the digest its folder records
(:func:`~nasdistill.network.folder.verify_file`) and loads it strictly. Writing exports lives in
:mod:`nasdistill.network.export`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from .folder import FILES, PathLike, verify_file
from .record import FILENAME, ModelRecord


def state_dict_diff(model: nn.Module, state) -> str:
    """``(missing [...]; unexpected [...])``: how the keys of ``state`` differ from ``model``'s."""
    expected, got = set(model.state_dict()), set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    return "(" + "; ".join(parts) + ")" if parts else "(shape mismatch)"


def read_record(folder: PathLike) -> ModelRecord:
    """The :class:`ModelRecord` of ``folder`` with errors that say what the folder should hold."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: expected an export folder or run directory "
                                f"with {FILENAME} and model.safetensors (write one with `nasdistill export`)")
    return ModelRecord.read(folder)


def load_weights(model: nn.Module, path: PathLike, device="cpu") -> None:
    """Load ``path`` (safetensors) into ``model`` strictly, after :func:`verify_file`; a clear
    error when missing, damaged or unfit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the folder {path.parent} is incomplete (an "
                                "unfinished run, or a partial copy); finish the run or re-export the model")
    verify_file(path)
    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-export the model") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the network described by {path.parent / FILENAME}: "
                         f"{str(err).splitlines()[0]} {state_dict_diff(model, weights)}") from None


def load(folder: PathLike, device="cpu", trust_code: Union[bool, str] = False) -> nn.Module:
    """The network of an export folder or run directory, weights loaded, in eval mode.

    Rebuilt from ``model.json`` (no user code is imported unless ``trust_code``: ``True`` imports
    the custom-op code saved in the folder, a path imports that file), then ``model.safetensors``
    is checked against the digest the folder records and loaded strictly. Raises
    ``FileNotFoundError`` / ``ValueError`` saying which file is missing, damaged or corrupt.
    """
    return load_with_record(folder, device, trust_code)[0]


def load_with_record(folder: PathLike, device="cpu",
                     trust_code: Union[bool, str] = False) -> tuple[nn.Module, ModelRecord]:
    """``(network, record)`` of an export folder or run directory: :func:`load` and the
    :class:`ModelRecord` it was rebuilt from (``model.json`` is read once)."""
    record = read_record(folder)
    return build_with_weights(record, folder, device, trust_code), record


def build_with_weights(record: ModelRecord, folder: PathLike, device="cpu",
                       trust_code: Union[bool, str] = False) -> nn.Module:
    """The network ``record`` (read from ``folder``) describes, with the folder's weights checked
    and loaded, in eval mode: :func:`load` for a caller that inspects the record first."""
    folder = Path(folder)
    model = record.build(trust_code=trust_code, base_dir=folder, for_weights=True)
    load_weights(model, folder / FILES["safetensors"], device)
    return model.to(device).eval()


def load_pt2(folder: PathLike) -> nn.Module:
    """The ``torch.export`` program of an export folder, as a callable module."""
    path = Path(folder) / FILES["pt2"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: export the model with `nasdistill export` "
                                "(the pt2 export may have failed: see export.json)")
    verify_file(path)
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


__all__ = ["build_with_weights", "load", "load_pt2", "load_weights", "load_with_record",
           "read_record", "state_dict_diff", "supernet_modules"]
