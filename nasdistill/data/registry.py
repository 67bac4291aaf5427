"""`load_dataset(name, ...)`: one entry point for every dataset, by name."""
from __future__ import annotations

import difflib
import inspect
import os
from functools import partial
from typing import Callable

from nasdistill.data.cifar import load_cifar_splits
from nasdistill.data.digits import load_digits_splits
from nasdistill.data.imagefolder import load_imagefolder_splits
from nasdistill.data.splits import DatasetSplits
from nasdistill.data.synthetic import load_synthetic_splits

# name -> (loader, takes root)
_LOADERS: dict[str, tuple[Callable[..., DatasetSplits], bool]] = {
    "digits": (load_digits_splits, False),
    "synthetic": (load_synthetic_splits, False),
    "cifar10": (partial(load_cifar_splits, "cifar10"), True),
    "cifar100": (partial(load_cifar_splits, "cifar100"), True),
    "imagefolder": (load_imagefolder_splits, True),
}
DATASETS: list[str] = list(_LOADERS)


def _options_of(fn: Callable) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in ("root", "seed", "val_size")]


def load_dataset(name: str, root: str | os.PathLike | None = None, seed: int = 0,
                 val_size: float | int | None = None, **options) -> DatasetSplits:
    """Load dataset ``name`` (one of `DATASETS`) split into train/val/test by ``seed``.

    ``val_size``: a fraction < 1 or a count; None keeps the dataset's default (digits 0.1 of the
    set, synthetic 500 draws, cifar/imagefolder 0). 0 means "val is the test split".
    ``options`` are dataset-specific (digits: test_size; synthetic: num_classes, size, channels,
    n_train, n_test, noise, bayes_accuracy, priors, smoothness; imagefolder: image_size).
    ``root`` is used by cifar10/cifar100/imagefolder and ignored by the embedded datasets.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    loader, takes_root = _LOADERS[key]
    valid = _options_of(loader)
    for opt in options:
        if opt not in valid:
            near = difflib.get_close_matches(opt, valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"dataset {key!r} has no option {opt!r}{hint}; "
                             f"valid options: {', '.join(valid) or 'none'}")
    kwargs = dict(options, seed=seed)
    if val_size is not None:
        kwargs["val_size"] = val_size
    if takes_root:
        kwargs["root"] = root
    return loader(**kwargs)
