"""Datasets and the device-resident loader.

``load_dataset(name, root=None, seed=0, val_size=None, **options) -> DatasetSplits`` loads one of
`DATASETS` (digits, synthetic, cifar10, cifar100, imagefolder) split by ``seed``;
``DeviceLoader``/``loaders_for`` iterate ``(x, y, idx)`` batches with batched crop+flip on the device.

Importing this package imports every module in it, and a dataset module registers its dataset
(``register("dataset", name, loader, **meta)``, :mod:`nasdistill.registry`): adding a dataset is one
file here.
"""
from nasdistill.data.device_loader import DeviceLoader, loaders_for
from nasdistill.data.registry import (DATASETS, DatasetEntry, check_dataset_options, default_space, load_dataset,
                                      normalize_dataset_name, same_dataset)
from nasdistill.data.splits import DatasetSplits, Split
from nasdistill.registry import import_submodules

import_submodules(__name__)

__all__ = ["load_dataset", "check_dataset_options", "DatasetSplits", "Split", "DeviceLoader", "loaders_for", "DATASETS",
           "DatasetEntry", "default_space", "normalize_dataset_name", "same_dataset"]
