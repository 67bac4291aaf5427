"""Configuration: dataclasses filled from a YAML file plus ``key.sub=value`` overrides.

Every training command declares its config as a dataclass built from the reusable sections below
(:class:`DataConfig`, :class:`TrainConfig`, :class:`ModelConfig`). :func:`load_config` fills it,
checking every key and every value type:

- an unknown key raises :class:`ConfigError` naming the full dotted key and the closest valid one;
- a value of the wrong type raises :class:`ConfigError` naming the key and the expected type
  (``int`` is accepted where ``float`` is expected).

Override values are parsed with ``yaml.safe_load`` (``train.lr=0.1`` is a float,
``train.milestones=[10,20]`` a list, ``model.space=null`` is ``None``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what to do."""


# ---------------------------------------------------------------------------- reusable sections
@dataclass
class DataConfig:
    """Which dataset, where it lives, and how it is split and augmented."""

    name: str = "digits"
    root: Optional[str] = None
    split_seed: int = 0
    val_size: Optional[Union[int, float]] = None
    augment: Optional[bool] = None          # None: the dataset's default


@dataclass
class TrainConfig:
    """Optimizer, schedule, precision and evaluation cadence of one training run."""

    epochs: int = 240
    batch_size: int = 64                     # global batch (split over ranks when distributed)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    amp: Literal["auto", "bf16", "off"] = "auto"          # auto: bf16 on CUDA, fp32 on CPU
    channels_last: Union[bool, Literal["auto"]] = "auto"  # auto: on CUDA only
    compile: bool = False                                 # torch.compile (fixed models only)
    device: str = "auto"                                  # auto, cpu, cuda, cuda:1, ...
    eval_every: int = 1
    threads: Optional[int] = None            # CPU intra-op threads (torch.set_num_threads); None: torch default


@dataclass
class ModelConfig:
    """A zoo model by ``name``, or an architecture ``arch`` of the search space ``space``.

    ``arch`` is a mapping label -> choice, a JSON string, or a path to a JSON file holding the
    mapping or ``{"arch": mapping}``. ``space`` is a module of ``search_spaces`` or a ``.py`` path.
    """

    name: str = "resnet8"
    space: Optional[str] = None
    arch: Optional[Any] = None
    options: dict = field(default_factory=dict)   # zoo keyword arguments, e.g. {weights: DEFAULT}


# ---------------------------------------------------------------------------- loading
def load_config(cls, path: Optional[str] = None, overrides: Optional[list[str]] = None):
    """Return ``cls`` filled from the YAML file ``path`` (optional) and ``key=value`` overrides."""
    data: dict = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        with open(path) as f:
            loaded = yaml.safe_load(f)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file holds a mapping of keys, got {type(loaded).__name__}")
        data = loaded or {}
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(cls, data)


def apply_override(data: dict, item: str) -> None:
    """Set ``data[k1][k2]... = yaml.safe_load(value)`` for the override ``k1.k2...=value``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: cannot parse value {raw!r} ({err})") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def from_dict(cls, data: Any, prefix: str = ""):
    """Build the dataclass ``cls`` from a nested mapping, checking keys and value types."""
    where = prefix.rstrip(".") or "the config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            raise ConfigError(_unknown_key_message(cls, prefix, str(key)))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if isinstance(v, dict) and dataclasses.is_dataclass(hints[k]):
            # a partial section keeps the defaults this parent gives it, not only the class's
            default = _field_default(fields[k])
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                v = _deep_merge(to_dict(default), v)
        kwargs[k] = check_value(v, hints[k], prefix + k)
    return cls(**kwargs)


def _field_default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _unknown_key_message(cls, prefix: str, key: str) -> str:
    full = prefix + key
    valid = [prefix + k for k in dotted_keys(cls)]
    near = difflib.get_close_matches(full, valid, n=1, cutoff=0.4)
    hint = f"did you mean {near[0]!r}?" if near else f"valid keys here: {', '.join(valid)}"
    return f"unknown config key {full!r}: {hint}"


def dotted_keys(cls) -> list[str]:
    """All valid dotted keys of the dataclass ``cls`` (sections expanded)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(f"{f.name}.{k}" for k in dotted_keys(tp))
        else:
            out.append(f.name)
    return out


def check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise :class:`ConfigError` naming ``key``."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key + ".")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return check_value(value, option, key)
            except ConfigError:
                pass
        raise _type_error(key, tp, value)
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(args)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is list or origin is list or tp is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            if args and origin is list:
                return [check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
            return list(value)
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        raise ConfigError(f"config key {key!r}: unsupported field type {tp!r} (a bug in the config class)")
    raise _type_error(key, tp, value)


def _type_error(key: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"config key {key!r} expects {_type_name(tp)}, got {value!r} "
                       f"({type(value).__name__})")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"Optional[{text}] (or null)" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------------------- saving
def to_dict(cfg) -> dict:
    """The config as plain nested dicts/lists (tuples become lists), ready for YAML or JSON."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(dataclasses.asdict(cfg))


def save_yaml(cfg, path) -> None:
    """Write the resolved config to ``path`` as YAML (loadable again with :func:`load_config`)."""
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


# ---------------------------------------------------------------------------- CLI glue
def add_config_arguments(parser) -> None:
    """Add ``CONFIG``, ``key=value`` overrides, ``--out-dir`` and ``--resume`` to ``parser``."""
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help="YAML config file (optional: defaults and overrides alone also work)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="override a config key, e.g. train.lr=0.1 model.name=resnet20")
    parser.add_argument("--out-dir", default=None, help="run directory (overrides out_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in out_dir from its last.ckpt")


def config_from_args(cls, args):
    """Build ``cls`` from parsed CLI ``args`` (see :func:`add_config_arguments`).

    With ``--resume`` and no CONFIG, the run directory's own ``config.yaml`` is the base.
    """
    path = args.config
    overrides = list(args.overrides or [])
    if path is not None and "=" in path and not os.path.exists(path):
        overrides.insert(0, path)  # argparse took the first override for CONFIG
        path = None
    if path is None and getattr(args, "resume", False):
        out_dir = args.out_dir or load_config(cls, None, overrides).out_dir
        saved = os.path.join(out_dir, "config.yaml")
        if os.path.isfile(saved):
            path = saved
    cfg = load_config(cls, path, overrides)
    if args.out_dir is not None:
        cfg.out_dir = args.out_dir
    return cfg
