"""The configuration parser: dataclasses filled from a YAML file plus ``key.sub=value`` overrides.

Every training command declares its config as a dataclass built from reusable sections (the data
section :class:`~nasdistill.data.config.DataConfig`, the model section
:class:`~nasdistill.models.config.ModelConfig`, the engine's
:class:`~nasdistill.engine.config.TrainConfig`, a method's own). :func:`load_config` fills it,
checking every key and every value type:

- an unknown key raises :class:`ConfigError` naming the full dotted key and the closest valid one
  (``trian.epochs`` -> ``train.epochs``);
- a value of the wrong type raises :class:`ConfigError` naming the key and the expected type
  (``int`` is accepted where ``float`` is expected; numbers in any usual spelling -- ``1e-3``,
  ``1e6``, ``5E-4``, ``1.0e+6`` -- are accepted where a number is expected, which YAML 1.1 alone
  would read as strings);
- ``off``/``on``/``yes``/``no`` (which YAML reads as booleans) are accepted for a string choice
  that spells them (``train.amp=off``);
- a value out of range (``train.epochs=0``, ``train.device=banana``) raises :class:`ConfigError`
  naming the key, when the section is built.

Errors name the YAML file or the command-line override the value came from. Override values are
parsed with ``yaml.safe_load`` (``train.lr=0.1`` is a float, ``train.milestones=[10,20]`` a list,
``model.space=null`` is ``None``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what to do.

    ``key`` (optional) is the dotted key at fault, relative to the section that raised it; callers
    that know the section's place prefix it (:func:`from_dict`).
    """

    def __init__(self, message: str, key: Optional[str] = None, detail: Optional[str] = None):
        super().__init__(message)
        self.key, self.detail = key, detail

    @classmethod
    def for_key(cls, key: str, detail: str) -> "ConfigError":
        return cls(f"config key {key!r} {detail}", key=key, detail=detail)

    def prefixed(self, prefix: str) -> "ConfigError":
        if self.key is None or not prefix:
            return self
        return self.rekeyed(prefix + self.key)

    def rekeyed(self, key: str) -> "ConfigError":
        """The same error about ``key`` (a run's ``train.device`` is the main job's
        ``distill.train.device``): the message names ``key`` where it named the old one."""
        if self.key is None or key == self.key:
            return self
        if self.detail is not None:
            return ConfigError.for_key(key, self.detail)
        text = str(self)
        for old in (repr(self.key), f"{self.key}="):
            text = text.replace(old, repr(key) if old.startswith("'") else f"{key}=")
        return ConfigError(text, key, None)


def require(ok: bool, key: str, detail: str) -> None:
    """Raise :class:`ConfigError` for ``key`` with ``detail`` unless ``ok`` (range checks of sections)."""
    if not ok:
        raise ConfigError.for_key(key, detail)


# ---------------------------------------------------------------------------- loading
def load_config(cls, path: Optional[str] = None, overrides: Optional[list[str]] = None):
    """Return ``cls`` filled from the YAML file ``path`` (optional) and ``key=value`` overrides.

    Every error names where the bad value came from: the override, or the file and its line. The
    config remembers where each key came from (:func:`sources_of`), so that a check made later --
    of the data, a device, a model -- names the source too (:func:`attribute`).

    A later source wins over an earlier one: an override beats the file, and an override of one key
    of a group that says the same thing in two ways (a dataclass's ``__exclusive__``, e.g. a search's
    ``target`` and ``targets``) removes the file's other keys of that group.
    """
    data: dict = {}
    lines: dict[str, int] = {}
    if path is not None:
        data, lines = read_yaml_mapping(path, with_lines=True)
    given: dict[str, str] = {}
    for item in overrides or []:
        key = apply_override(data, item)
        given[key] = item
    _drop_overridden(cls, data, given)
    sources = ConfigSources(path, lines, given)
    try:
        cfg = from_dict(cls, data)
    except ConfigError as err:
        raise sources.attribute(err) from None
    object.__setattr__(cfg, "_config_sources", sources)
    return cfg


class ConfigSources:
    """Where each key of a loaded config came from: a command-line override (``given``: dotted key
    -> the override's text, the last one of a key), the YAML file ``path`` (``lines``: dotted key ->
    line), else the default."""

    def __init__(self, path: Optional[str] = None, lines: Optional[dict] = None, given: Optional[dict] = None):
        self.path, self.lines, self.given = path, dict(lines or {}), dict(given or {})

    def where(self, key: Optional[str]) -> Optional[str]:
        """``command-line override 'k=v'``, ``FILE, line N`` or None (a default value)."""
        if not key:
            return None
        for k, item in reversed(list(self.given.items())):
            if _related(k, key):
                return f"command-line override {item!r}"
        related = [(k, line) for k, line in self.lines.items() if _related(k, key)]
        if related:
            # the key itself, else the deepest section above it, else the first key below it
            k, line = max(related, key=lambda kv: (kv[0] == key, key.startswith(kv[0] + "."), -kv[1]))
            return f"{self.path}, line {line}"
        return None

    def attribute(self, err: "ConfigError") -> "ConfigError":
        """``err`` prefixed with where its key's value came from (unchanged when it says so already,
        or names no key, or the key holds its default: the message then says ``(the default)``)."""
        text = str(err)
        if err.key is None or text.startswith(("command-line override", f"{self.path}")):
            return err
        where = self.where(err.key)
        if where is None:
            return ConfigError(f"{text} ({err.key} holds its default value)", err.key, err.detail)
        return ConfigError(f"{where}: {text}", err.key, err.detail)


def _related(given: str, key: str) -> bool:
    """Whether the value at ``given`` decides ``key``: the same key, a section above it, or a key
    below it (an error about a whole section)."""
    return given == key or key.startswith(given + ".") or given.startswith(key + ".") or \
        key.startswith(given + "[")


def sources_of(cfg) -> ConfigSources:
    """Where the keys of ``cfg`` came from (a config not loaded by :func:`load_config`: defaults)."""
    return getattr(cfg, "_config_sources", None) or ConfigSources()


def attribute(err: "ConfigError", cfg) -> "ConfigError":
    """``err`` naming the source of its key's value in ``cfg`` (see :meth:`ConfigSources.attribute`)."""
    return sources_of(cfg).attribute(err)


def _drop_overridden(cls, data: dict, given: dict, prefix: str = "") -> None:
    """Remove from ``data`` the file's keys of an ``__exclusive__`` group one of whose other keys an
    override set (the later source wins)."""
    if not dataclasses.is_dataclass(cls) or not isinstance(data, dict):
        return
    for group in getattr(cls, "__exclusive__", ()):
        set_here = [k for k in group if prefix + k in given]
        if set_here:
            for k in group:
                if k not in set_here and prefix + k not in given:
                    data.pop(k, None)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name)
        if dataclasses.is_dataclass(tp) and isinstance(data.get(f.name), dict):
            _drop_overridden(tp, data[f.name], given, prefix + f.name + ".")


def read_yaml_mapping(path, with_lines: bool = False):
    """The mapping of the YAML file ``path``; errors name the file (and line) and what to do. With
    ``with_lines``: ``(mapping, {dotted key: line})``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        loaded = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader)) if with_lines else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}; fix the file (a mapping of "
                          "`key: value` lines)") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, got {type(loaded).__name__}")
    return (loaded or {}, lines) if with_lines else (loaded or {})


def _key_lines(node, prefix: str = "") -> dict:
    """``{dotted key: line}`` of every key of a composed YAML mapping (sections included)."""
    out: dict = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + str(key_node.value)
            out[key] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, key + "."))
    return out


def apply_override(data: dict, item: str) -> str:
    """Set ``data[k1][k2]... = yaml.safe_load(value)`` for the override ``k1.k2...=value``; return
    the dotted key."""
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
    return ".".join(parts)


def from_dict(cls, data: Any, prefix: str = ""):
    """Build the dataclass ``cls`` from a nested mapping, checking keys, value types and ranges."""
    where = prefix.rstrip(".") or "the config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {data!r}", prefix.rstrip(".") or None,
                          f"must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            raise ConfigError(_unknown_key_message(cls, prefix, str(key), data[key]), prefix + str(key),
                              "is unknown")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if isinstance(v, dict) and dataclasses.is_dataclass(hints[k]):
            # a partial section keeps the defaults this parent gives it, not only the class's
            default = _field_default(fields[k])
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                v = _deep_merge(to_dict(default), v)
        kwargs[k] = check_value(v, hints[k], prefix + k)
    try:
        built = cls(**kwargs)
    except ConfigError as err:
        raise err.prefixed(prefix) from None
    check_bounds(built, prefix)
    return built


def check_bounds(cfg, prefix: str = "") -> None:
    """Refuse a number outside the range its class declares in ``__bounds__`` (merged over the
    class's bases): ``{"temperature": "> 0", "label_smoothing": ">= 0, < 1"}`` -- each a
    comma-separated list of ``>``, ``>=``, ``<``, ``<=`` comparisons with a number. ``None`` (an
    optional key switched off) is not checked."""
    bounds: dict = {}
    for klass in reversed(type(cfg).__mro__):
        bounds.update(getattr(klass, "__bounds__", None) or {})
    for name, spec in bounds.items():
        value = getattr(cfg, name, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for part in spec.split(","):
            op, _, limit = part.strip().partition(" ")
            ok = {">": value > float(limit), ">=": value >= float(limit), "<": value < float(limit),
                  "<=": value <= float(limit)}.get(op)
            if ok is None:
                raise ConfigError(f"{type(cfg).__name__}.__bounds__[{name!r}]: {spec!r} is not a range "
                                  "(e.g. '> 0' or '>= 0, < 1'; a bug in the config class)")
            if not ok:
                raise ConfigError.for_key(prefix + name, f"must be {spec.replace(',', ' and')}, got {value}")


def _field_default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _unknown_key_message(cls, prefix: str, key: str, value: Any = None) -> str:
    """Name the unknown key and the closest valid one, comparing whole dotted keys: the override
    ``trian.epochs=3`` suggests ``train.epochs``, not ``train.lr``."""
    full = prefix + key
    valid = [prefix + k for k in dotted_keys(cls)]
    given = [full + "." + k for k in flatten(value)] if isinstance(value, dict) and value else [full]
    best, score = None, 0.0
    for g in given:
        for v in valid:
            r = difflib.SequenceMatcher(None, g, v).ratio()
            if r > score:
                best, score = (g, v), r
    if best is not None and score >= 0.6:
        return f"unknown config key {best[0]!r}: did you mean {best[1]!r}?"
    tops = sorted({v.split(".")[len(prefix.split(".")) - 1] for v in valid})
    return f"unknown config key {full!r}: valid keys here: {', '.join(prefix + t for t in tops)}"


def flatten(d: Any, prefix: str = "") -> dict:
    """``{"train.lr": 0.1, ...}`` from a nested mapping (lists and scalars are leaves)."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                out.update(flatten(v, key + "."))
            else:
                out[key] = v
    return out


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
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            spelled = _BOOL_WORDS[value] & set(a for a in args if isinstance(a, str))
            if len(spelled) == 1:  # YAML read `off` / `on` / `yes` / `no` as a boolean
                return spelled.pop()
        elif value in args:
            return value
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(args)}", key,
                          f"is {value!r}, not one of {list(args)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _number(value)
        if number is not None and float(number).is_integer() and abs(number) < 2 ** 63:
            return int(number)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        number = _number(value)
        if number is not None:
            return number
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


_BOOL_WORDS = {False: {"off", "no", "false"}, True: {"on", "yes", "true"}}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Optional[float]:
    """A number written as text in a usual spelling (``1e-3``, ``1e6``, ``5E-4``), else None."""
    if isinstance(value, float) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip().replace("_", "")):
        return float(value.strip().replace("_", ""))
    return None


def _type_error(key: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError.for_key(key, f"expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


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
    """Write the resolved config to ``path`` as YAML, atomically (loadable with :func:`load_config`)."""
    from .atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
