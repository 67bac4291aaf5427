"""`load_dataset(name, ...)`: one entry point for every dataset, by name (:data:`DATASETS`)."""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from functools import partial
from typing import Callable

from nasdistill.data.cifar import load_cifar_splits
from nasdistill.data.digits import load_digits_splits
from nasdistill.data.imagefolder import load_imagefolder_splits
from nasdistill.data.splits import DatasetSplits
from nasdistill.data.synthetic import load_synthetic_splits
from nasdistill.registry import Registry, did_you_mean


@dataclass(frozen=True)
class DatasetEntry:
    """How to load one dataset: ``loader(seed=, [val_size=], [root=], **options) -> DatasetSplits``."""

    loader: Callable[..., DatasetSplits]
    takes_root: bool = False

    def options(self) -> list[str]:
        """The dataset-specific keyword options of the loader (``data.options`` keys)."""
        return [p for p in inspect.signature(self.loader).parameters
                if p not in ("root", "seed", "val_size")]


DATASETS: Registry[DatasetEntry] = Registry("dataset", normalize=lambda s: s.lower().replace("-", "").replace("_", ""))
DATASETS.register("digits", DatasetEntry(load_digits_splits))
DATASETS.register("synthetic", DatasetEntry(load_synthetic_splits))
DATASETS.register("cifar10", DatasetEntry(partial(load_cifar_splits, "cifar10"), takes_root=True))
DATASETS.register("cifar100", DatasetEntry(partial(load_cifar_splits, "cifar100"), takes_root=True))
DATASETS.register("imagefolder", DatasetEntry(load_imagefolder_splits, takes_root=True))


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
    ``options`` are dataset-specific (digits: test_size; synthetic: num_classes, size, channels,
    n_train, n_test, noise, bayes_accuracy, priors, smoothness; imagefolder: image_size); an
    unknown one is refused by name. ``root`` is used by cifar10/cifar100/imagefolder and ignored
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
