"""The one by-name lookup pattern: a :class:`Registry` maps names to entries, says "did you mean".

Datasets, models, candidate ops, teacher methods, distillers and benches each keep one registry,
and each is filled the same way: its package imports every module in it
(:func:`import_submodules`), and a module registers its own entries. Adding a dataset, model
family, teacher, distillation method or bench is one module of that package::

    DATASETS = Registry("dataset")
    DATASETS.register("digits", entry)
    DATASETS.get("digit")   # ValueError: unknown dataset 'digit': did you mean 'digits'? available: ...

An entry is whatever the family needs (a builder, a class, a small dataclass) and carries its own
metadata as attributes, read with :meth:`Registry.meta`:

- ``order``: where the entry comes in listings and reports (lower first; entries without one come
  after, in registration order);
- ``display_name``: how reports write it (``"FitNets"``, ``"SoTeacher"``);
- family-specific defaults (a dataset's ``default_space``, ...).

A family whose entries carry a config section gives them a ``config_class`` attribute, and
:func:`config_sections` turns those into dataclass fields (teachers and distillers build their
config classes this way).
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import pkgutil
from types import ModuleType
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices, n: int = 1, cutoff: float = 0.6) -> str:
    """`` did you mean 'x'?`` (with a leading space) for the closest choices, or ``""``."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=cutoff)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"


def import_submodules(package: str) -> list[ModuleType]:
    """Import every module of ``package`` (a dotted name), alphabetically: how a family package
    discovers its entries, each module registering its own. Returns the modules."""
    pkg = importlib.import_module(package)
    return [importlib.import_module(f"{package}.{info.name}")
            for info in pkgutil.iter_modules(pkg.__path__)]


def submodule_names(package: str) -> list[str]:
    """The public module names of ``package`` (no leading ``_``), alphabetically, without importing them."""
    pkg = importlib.import_module(package)
    return [info.name for info in pkgutil.iter_modules(pkg.__path__) if not info.name.startswith("_")]


class Registry(Generic[T]):
    """Entries by name, listed by their ``order`` metadata, then in registration order.

    ``normalize`` maps a name to its lookup key (datasets ignore case, ``-`` and ``_``); the name an
    entry was registered under is the one listings show.
    """

    def __init__(self, kind: str, normalize: Optional[Callable[[str], str]] = None):
        self.kind = kind
        self._normalize = normalize or (lambda s: s)
        self._entries: dict[str, T] = {}     # key -> entry, in registration order
        self._names: dict[str, str] = {}     # key -> the name it was registered under

    def key(self, name: str) -> str:
        """The lookup key of ``name`` (the registry's normalisation)."""
        return self._normalize(str(name))

    def register(self, name: str, entry: T, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; registering another entry under a taken name is an error
        unless ``replace`` (re-registering the same entry is a no-op)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        key = self._normalize(name)
        old = self._entries.get(key)
        if old is not None and old is not entry and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered ({_describe(old)}); "
                             "pick another name")
        self._entries[key] = entry
        self._names.setdefault(key, name)
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (tests that register a temporary entry)."""
        key = self._normalize(str(name))
        if key not in self._entries:
            raise ValueError(self.unknown_message(name))
        self._names.pop(key, None)
        return self._entries.pop(key)

    @contextlib.contextmanager
    def restoring(self):
        """``with registry.restoring(): ...`` puts the entries back as they were afterwards."""
        saved = dict(self._entries), dict(self._names)
        try:
            yield self
        finally:
            self._entries, self._names = saved

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated object."""
        def decorate(entry: T) -> T:
            self.register(name, entry)
            return entry
        return decorate

    def get(self, name: str) -> T:
        """The entry ``name``; a ``ValueError`` names the closest names and all available ones."""
        key = self._normalize(str(name))
        if key not in self._entries:
            raise ValueError(self.unknown_message(name))
        return self._entries[key]

    def canonical(self, name: str) -> str:
        """The name entry ``name`` was registered under (``"CIFAR-100"`` -> ``"cifar100"``)."""
        key = self._normalize(str(name))
        if key not in self._entries:
            raise ValueError(self.unknown_message(name))
        return self._names[key]

    def meta(self, name: str, field: str, default: Any = None) -> Any:
        """Metadata ``field`` of entry ``name`` (an attribute of the entry), or ``default`` when the
        name is not registered or its entry does not declare it."""
        key = self._normalize(str(name))
        if key not in self._entries:
            return default
        value = getattr(self._entries[key], field, None)
        return default if value is None else value

    def order(self, name: str) -> Optional[float]:
        """The entry's declared ``order`` (None: unregistered, or none declared)."""
        return self.meta(name, "order")

    def display_name(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """How reports write entry ``name`` (its ``display_name``), else ``default``."""
        return self.meta(name, "display_name", default)

    def unknown_message(self, name: str) -> str:
        return (f"unknown {self.kind} {name!r}:{did_you_mean(name, self.names())} "
                f"available: {', '.join(self.names())}")

    def _listing(self) -> list[str]:
        keys = list(self._entries)
        position = {k: i for i, k in enumerate(keys)}

        def rank(k):
            order = getattr(self._entries[k], "order", None)
            return (0, order, position[k]) if order is not None else (1, 0, position[k])
        return sorted(keys, key=rank)

    def names(self) -> list[str]:
        """Registered names: by declared ``order``, then the others in registration order."""
        return [self._names[k] for k in self._listing()]

    def items(self):
        """``(name, entry)`` pairs in the order of :meth:`names`."""
        return [(self._names[k], self._entries[k]) for k in self._listing()]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _describe(entry) -> str:
    name = getattr(entry, "__qualname__", None) or type(entry).__qualname__
    module = getattr(entry, "__module__", None) or type(entry).__module__
    return f"{module}.{name}"


def config_sections(registry: Registry) -> list[tuple[str, type]]:
    """``(name, config_class)`` of every entry that has a config section (a dataclass), sorted by
    name: a config file's layout does not depend on import or listing order."""
    return sorted((name, entry.config_class) for name, entry in registry.items()
                  if getattr(entry, "config_class", None) is not None)


_SECTIONED: dict = {}


def sectioned_config(name: str, base: type, registry: Registry, defaults: Optional[dict] = None) -> type:
    """The dataclass ``base`` plus one field per entry of ``registry`` with a config section, named
    after the entry (``ce``, ``gtn``, ``kd``, ...); ``defaults[entry]`` overrides that section's
    field defaults. The same registered sections give the same class (cached)."""
    import dataclasses

    defaults = defaults or {}
    sections = tuple(config_sections(registry))
    key = (name, base, sections, repr(sorted(defaults.items())))
    if key not in _SECTIONED:
        fields = [(entry, cls, dataclasses.field(
                      default_factory=lambda cls=cls, extra=defaults.get(entry, {}): cls(**extra)))
                  for entry, cls in sections]
        _SECTIONED[key] = dataclasses.make_dataclass(
            name, fields, bases=(base,), namespace={"__doc__": base.__doc__, "__module__": base.__module__})
    return _SECTIONED[key]


__all__ = ["Registry", "config_sections", "did_you_mean", "import_submodules", "sectioned_config",
           "submodule_names"]
