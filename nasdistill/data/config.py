"""The data section of a config: which dataset, where it lives, how it is split and augmented."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

from ..config import ConfigError, require


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how it is split and augmented."""

    name: str = "digits"
    root: Optional[str] = None
    split_seed: int = 0
    val_size: Optional[Union[int, float]] = None
    augment: Optional[bool] = None          # None: the dataset's default
    options: dict = field(default_factory=dict)   # dataset-specific, e.g. synthetic {size: 16, n_train: 1000}

    def __post_init__(self):
        from .registry import DATASETS, unknown_option

        if self.name not in DATASETS:
            raise ConfigError.for_key("name", f"names no dataset: {DATASETS.unknown_message(self.name)}")
        require(isinstance(self.options, dict), "options", f"must be a mapping, got {self.options!r}")
        problem = unknown_option(self.name, self.options)
        require(problem is None, "options", problem)
        require(self.val_size is None or self.val_size >= 0, "val_size",
               f"must be a fraction in [0, 1) or a count >= 0, got {self.val_size}")

    def load(self):
        """The dataset this section describes (a :class:`~nasdistill.data.DatasetSplits`).

        A split its loader refuses (``digits: test_size=0.95 and val_size=0.1 leave no training
        samples``) is a :class:`ConfigError` about the key it names (``data.options.test_size``), so
        a command says where that value came from; the first named key the user set is blamed."""
        from . import load_dataset

        try:
            return load_dataset(self.name, root=self.root, seed=self.split_seed, val_size=self.val_size,
                                **self.options)
        except ConfigError:
            raise
        except ValueError as err:
            key = self._named_key(str(err))
            if key is None:
                raise
            text = str(err).removeprefix(f"{self.name}: ")
            raise ConfigError.for_key(key, f"does not fit dataset {self.name!r}: {text}") from None

    def _named_key(self, message: str) -> Optional[str]:
        """``data.<key>`` of the first value ``message`` names as ``name=``: a set option or
        ``val_size`` first, then any option the dataset has."""
        from .registry import DATASETS

        named = [k for k in ("val_size", *DATASETS.get(self.name).options())
                 if re.search(rf"(?<![\w.]){re.escape(k)}=", message)]  # whole names: 'size=' is not in 'val_size='
        given = [k for k in named if (k == "val_size" and self.val_size is not None) or k in self.options]
        key = (given or named or [None])[0]
        return None if key is None else "data." + (key if key == "val_size" else f"options.{key}")
