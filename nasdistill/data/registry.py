"""`load_dataset(name, ...)`: one entry point for every dataset, by name (:data:`DATASETS`).

A dataset is one module of :mod:`nasdistill.data` that registers itself (the package imports every
module in it)::

    register("dataset", "digits", load_digits_splits, default_space="digits_small", order=10)

Metadata (:class:`DatasetEntry`): ``takes_root`` (the loader reads files under ``data.root``),
``default_space``, ``order``, ``display_name``.

Dataset names are compared through one normaliser, :func:`normalize_dataset_name` (case, ``-``
and ``_`` do not matter: ``CIFAR-100`` is ``cifar100``); :func:`same_dataset` uses it.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Callable, Optional

from nasdistill.data.splits import DatasetSplits
from nasdistill.registry import Registry, did_you_mean


@dataclass(frozen=True)
class DatasetEntry:
    """How to load one dataset: ``loader(seed=, [val_size=], [root=], **options) -> DatasetSplits``.

    ``default_space``: the search space sized for this data (GTN's space when ``gtn.space`` is not
    set); ``order``: its place in listings; ``display_name``: how reports write it.
    """

    loader: Callable[..., DatasetSplits]
    takes_root: bool = False
    default_space: Optional[str] = None
    order: Optional[float] = None
    display_name: Optional[str] = None

    def options(self) -> list[str]:
        """The dataset-specific keyword options of the loader (``data.options`` keys)."""
        return [p for p in inspect.signature(self.loader).parameters
                if p not in ("root", "seed", "val_size")]


def normalize_dataset_name(name: str) -> str:
    """The one dataset-name normaliser: lower case, without ``-`` and ``_`` (``CIFAR-100`` -> ``cifar100``)."""
    return str(name).lower().replace("-", "").replace("_", "")


def same_dataset(a: str, b: str) -> bool:
    """Whether two dataset names denote the same dataset (``cifar_100`` and ``CIFAR100`` do)."""
    return normalize_dataset_name(a) == normalize_dataset_name(b)


def _dataset_entry(name: str, loader, meta: dict) -> DatasetEntry:
    """The entry of dataset ``name``: ``loader(seed=, [val_size=], [root=] when takes_root,
    **options)`` returns its :class:`DatasetSplits`; see :class:`DatasetEntry` for the metadata."""
    if not callable(loader):
        raise TypeError(f"dataset {name!r}: the loader must be callable, got {loader!r}")
    fields = {"takes_root", "default_space", "order", "display_name"}
    unknown = sorted(set(meta) - fields)
    if unknown:
        raise TypeError(f"dataset {name!r}: unknown metadata {unknown}; a dataset declares {sorted(fields)}")
    return DatasetEntry(loader, **meta)


#: Re-running a definition replaces its entry.
DATASETS: Registry[DatasetEntry] = Registry("dataset", normalize=normalize_dataset_name, make_entry=_dataset_entry,
                                            replace=True)


def default_space(name: str) -> Optional[str]:
    """The search space declared for dataset ``name`` (None: unknown dataset, or none declared)."""
    return DATASETS.meta(name, "default_space")


def unknown_option(name: str, options: dict):
    """``None`` when dataset ``name`` has every option in ``options``, else a sentence that names
    the first unknown one, the closest valid one and all valid ones."""
    valid = DATASETS.get(name).options()
    for opt in options or {}:
        if opt not in valid:
            return (f"has no option {opt!r} for dataset {name!r};{did_you_mean(opt, valid)} "
                    f"valid options: {', '.join(valid) or 'none'}")
    return None


def check_dataset_options(name: str, options: dict, where: str = "data.options") -> None:
    """Refuse an option that dataset ``name`` does not have, naming it and the valid ones."""
    problem = unknown_option(name, options)
    if problem:
        raise ValueError(f"{where} {problem}")


def load_dataset(name: str, root: str | os.PathLike | None = None, seed: int = 0,
                 val_size: float | int | None = None, **options) -> DatasetSplits:
    """Load dataset ``name`` (one of :data:`DATASETS`) split into train/val/test by ``seed``.

    ``val_size``: a fraction < 1 or a count; None keeps the dataset's default (digits 0.1 of the
    set, synthetic 500 draws, cifar/imagefolder 0). 0 means "val is the test split".
    ``options`` are dataset-specific (digits: test_size, train_size; synthetic: num_classes, size,
    channels, n_train, n_test, noise, bayes_accuracy, priors, smoothness; imagefolder: image_size);
    an unknown one is refused by name. ``root`` is used by cifar10/cifar100/imagefolder and ignored
    by the embedded datasets.
    """
    entry = DATASETS.get(name)
    check_dataset_options(name, options, "dataset options:")
    kwargs = dict(options, seed=seed)
    if val_size is not None:
        kwargs["val_size"] = val_size
    if entry.takes_root:
        kwargs["root"] = root
    return entry.loader(**kwargs)
