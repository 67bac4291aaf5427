"""Datasets and the device-resident loader.

``load_dataset(name, root=None, seed=0, val_size=None, **options) -> DatasetSplits`` loads one of
`DATASETS` (digits, synthetic, cifar10, cifar100, imagefolder) split by ``seed``;
``DeviceLoader``/``loaders_for`` iterate ``(x, y, idx)`` batches with batched crop+flip on the device.
"""
from nasdistill.data.device_loader import DeviceLoader, loaders_for
from nasdistill.data.registry import DATASETS, check_dataset_options, load_dataset
from nasdistill.data.splits import DatasetSplits, Split

__all__ = ["load_dataset", "check_dataset_options", "DatasetSplits", "Split", "DeviceLoader", "loaders_for", "DATASETS"]
