"""The one by-name lookup pattern: a :class:`Registry` maps names to entries, says "did you mean".

Datasets, models, candidate ops, teacher methods, distillers and benches each keep one registry::

    DATASETS = Registry("dataset")
    DATASETS.register("digits", entry)
    DATASETS.get("digit")   # ValueError: unknown dataset 'digit': did you mean 'digits'? available: ...

An entry is whatever the family needs (a builder, a class, a small dataclass); a family whose
entries carry a config section gives them a ``config_class`` attribute, and
:func:`config_sections` turns those into dataclass fields (teachers and distillers build their
config classes this way).
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices, n: int = 1, cutoff: float = 0.6) -> str:
    """`` did you mean 'x'?`` (with a leading space) for the closest choices, or ``""``."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=cutoff)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"


class Registry(Generic[T]):
    """Entries by name, in registration order."""

    def __init__(self, kind: str, normalize: Optional[Callable[[str], str]] = None):
        self.kind = kind
        self._normalize = normalize or (lambda s: s)
        self._entries: dict[str, T] = {}

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
        return entry

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

    def unknown_message(self, name: str) -> str:
        return (f"unknown {self.kind} {name!r}:{did_you_mean(name, self._entries)} "
                f"available: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _describe(entry) -> str:
    name = getattr(entry, "__qualname__", None) or type(entry).__qualname__
    module = getattr(entry, "__module__", None) or type(entry).__module__
    return f"{module}.{name}"


def config_sections(registry: Registry) -> list[tuple[str, type]]:
    """``(name, config_class)`` of every entry that has a config section (a dataclass)."""
    return [(name, entry.config_class) for name, entry in registry.items()
            if getattr(entry, "config_class", None) is not None]


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


__all__ = ["Registry", "config_sections", "did_you_mean", "sectioned_config"]
