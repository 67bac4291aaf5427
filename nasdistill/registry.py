"""The one by-name lookup pattern: every family of named things registers the same way.

A family (datasets, models, candidate ops, teacher methods, distillation methods, run kinds,
benchmarks, commands) keeps one :class:`Registry`, created by the package that owns the family;
its package imports every module in it (:func:`import_submodules`: discovery), and each module
registers its own entries with their metadata, in one shape::

    register("dataset", "digits", load_digits_splits, default_space="digits_small", order=10)

    @register("teacher", "gtn", config=GTNConfig, display_name="GTN", order=20, uses_space=True)
    def make_gtn_task(cfg, model, splits): ...

    DATASETS.get("digit")   # ValueError: unknown dataset 'digit': did you mean 'digits'? available: ...

Adding a dataset, model family, op, teacher, distillation method, run kind, benchmark or command is
one module of the family's package plus its test; nothing else names it.

Metadata are keyword arguments of :func:`register`, read with :meth:`Registry.meta` (the entry's
own attribute of that name answers when the registration gave none). Every family understands:

- ``order``: where the entry comes in listings and reports (lower first; entries without one come
  after, in registration order);
- ``display_name``: how reports write it (``"FitNets"``, ``"SoTeacher"``);

and each family declares the others it reads (a dataset's ``default_space``, a teacher's
``uses_space``, ...). A family that builds a richer entry from the registered object and its
metadata (a teacher's task factory and config section, say) gives its registry ``make_entry``.

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


#: Every family's registry, by kind (one registry per family).
FAMILIES: dict = {}


class Registry(Generic[T]):
    """Entries by name, listed by their ``order`` metadata, then in registration order.

    ``normalize`` maps a name to its lookup key (datasets ignore case, ``-`` and ``_``); the name an
    entry was registered under is the one listings show. ``make_entry(name, obj, meta)`` (optional)
    builds the stored entry from what was registered and its metadata, and may refuse bad
    metadata. ``replace``: whether registering a taken name replaces its entry (re-running a
    definition) or is an error. Creating a registry makes it the family ``kind``'s
    (:func:`register`, :func:`family`).
    """

    def __init__(self, kind: str, normalize: Optional[Callable[[str], str]] = None,
                 make_entry: Optional[Callable] = None, replace: bool = False, what: Optional[str] = None):
        self.family = kind
        self.kind = what or kind  # how messages name an entry ("teacher method")
        self._normalize = normalize or (lambda s: s)
        self._make_entry = make_entry
        self._replace = replace
        self._entries: dict[str, T] = {}     # key -> entry, in registration order
        self._names: dict[str, str] = {}     # key -> the name it was registered under
        self._meta: dict[str, dict] = {}     # key -> metadata given at registration
        FAMILIES[kind] = self

    def key(self, name: str) -> str:
        """The lookup key of ``name`` (the registry's normalisation)."""
        return self._normalize(str(name))

    def register(self, name: str, entry: T, replace: Optional[bool] = None, **meta) -> T:
        """Add ``entry`` under ``name`` with metadata ``meta``; registering another entry under a
        taken name is an error unless ``replace`` (default: the registry's); re-registering the same
        entry is a no-op. Returns what was registered (not the built entry: a decorated function
        stays itself)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        key = self._normalize(name)
        stored = self._make_entry(name, entry, meta) if self._make_entry is not None else entry
        old = self._entries.get(key)
        replace = self._replace if replace is None else replace
        if old is not None and old is not stored and not replace and self._meta.get(key, {}).get("_source") is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered ({_describe(old)}); "
                             "pick another name")
        self._entries[key] = stored
        self._names.setdefault(key, name)
        self._meta[key] = {**meta, "_source": entry}
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (tests that register a temporary entry)."""
        key = self._normalize(str(name))
        if key not in self._entries:
            raise ValueError(self.unknown_message(name))
        self._names.pop(key, None)
        self._meta.pop(key, None)
        return self._entries.pop(key)

    @contextlib.contextmanager
    def restoring(self):
        """``with registry.restoring(): ...`` puts the entries back as they were afterwards."""
        saved = dict(self._entries), dict(self._names), dict(self._meta)
        try:
            yield self
        finally:
            self._entries, self._names, self._meta = saved

    def decorator(self, name: str, **meta) -> Callable[[T], T]:
        """``@registry.decorator("name", **meta)`` registers the decorated object."""
        def decorate(entry: T) -> T:
            self.register(name, entry, **meta)
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
        """Metadata ``field`` of entry ``name``: given at registration, else the entry's attribute of
        that name; ``default`` when the name is not registered or neither declares it."""
        key = self._normalize(str(name))
        if key not in self._entries:
            return default
        value = self._meta.get(key, {}).get(field)
        if value is None:
            value = getattr(self._entries[key], field, None)
        return default if value is None else value

    def having(self, field: str, value: Any = True) -> list[str]:
        """The names (in listing order) whose metadata ``field`` equals ``value``."""
        return [n for n in self.names() if self.meta(n, field) == value]

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
            order = self.meta(self._names[k], "order")
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
        return f"Registry({self.family!r}, {self.names()})"


def family(kind: str) -> Registry:
    """The registry of family ``kind`` (its owning package must have been imported)."""
    if kind not in FAMILIES:
        raise ValueError(f"no family {kind!r} of registered things;{did_you_mean(kind, FAMILIES)} "
                         f"families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[kind]


_MISSING = object()


def register(kind: str, name: str, entry: Any = _MISSING, **meta):
    """Register ``entry`` as ``name`` in family ``kind`` with metadata ``meta``; without ``entry``,
    a decorator that registers what it decorates. See the module docstring."""
    reg = family(kind)
    if entry is _MISSING:
        def decorate(obj):
            reg.register(name, obj, **meta)
            return obj
        return decorate
    return reg.register(name, entry, **meta)


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


__all__ = ["FAMILIES", "Registry", "config_sections", "did_you_mean", "family", "import_submodules", "register",
           "sectioned_config", "submodule_names"]
