"""scikit-learn's handwritten digits: 1797 images, 1x8x8, 10 classes, shipped inside scikit-learn.

Pixel values 0..16 are scaled to [0, 1] (x / 16). Splits, stratified by class and fixed by ``seed``:
``test_size`` (default 20%) for test, then ``val_size`` (default 10% of the whole set) for val, the
rest train; ``train_size`` (a fraction of the whole set or a count) keeps only that many of the rest
for training (a learning curve, or a quick run that still evaluates on a full test split). Mean/std
are those of the train split. No augmentation by default (8x8 is too small for a 4-pixel crop to
mean anything).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from nasdistill.data.splits import DatasetSplits, Split, channel_stats, split_sizes, stratified_holdout
from nasdistill.registry import register


def load_digits_splits(seed: int = 0, val_size: float | int = 0.1, test_size: float | int = 0.2,
                       train_size: float | int | None = None) -> DatasetSplits:
    """The digits dataset split train/val/test by ``seed`` (stratified); ``train_size`` (None: all the
    rest) trains on a stratified part of what test and val leave."""
    pixels, labels = _digits_arrays()
    images = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 8, 8) / 16.0
    labels = np.array(labels, dtype=np.int64)  # a copy: the cached arrays are read-only
    n = len(labels)
    n_test = split_sizes(n, test_size, "test_size")
    n_val = split_sizes(n, val_size, "val_size")
    if n_test + n_val >= n:
        raise ValueError(f"digits: test_size={test_size} and val_size={val_size} leave no training "
                         f"samples out of {n}; lower them")
    rest, test_rows = stratified_holdout(labels, n_test, seed)
    train_pos, val_pos = stratified_holdout(labels[rest], n_val, seed + 1)
    if train_size is not None:
        n_train = split_sizes(n, train_size, "train_size")
        if not 0 < n_train <= len(train_pos):
            raise ValueError(f"digits: train_size={train_size} asks for {n_train} training samples; test_size="
                             f"{test_size} and val_size={val_size} leave 1 to {len(train_pos)}")
        _, kept = stratified_holdout(labels[rest[train_pos]], n_train, seed + 2)
        train_pos = train_pos[kept]
    full = Split(torch.from_numpy(images), torch.from_numpy(labels))
    train = full.subset(rest[train_pos])
    mean, std = channel_stats(train.images)
    test = full.subset(test_rows)
    val = full.subset(rest[val_pos]) if n_val else test
    return DatasetSplits(
        name="digits", train=train, val=val, test=test,
        num_classes=10, input_size=(1, 8, 8), mean=mean, std=std, augment=False,
        class_names=tuple(str(d) for d in range(10)),
    )


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """(pixels 1797x64, labels): read from the file scikit-learn ships (``datasets/data/digits.csv.gz``,
    what ``sklearn.datasets.load_digits`` reads) without importing scikit-learn, which costs a
    process about two seconds; through ``load_digits`` where the file is not where it used to be.
    Read once per process (parsing the CSV takes 30 ms; a job loads the data once per run), as
    read-only arrays."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz") if spec else None
    if path is not None and os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",")
        pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, labels = bunch.data, bunch.target
    for array in (pixels, labels):
        array.setflags(write=False)
    return pixels, labels


register("dataset", "digits", load_digits_splits, default_space="digits_small", order=10)
