"""CIFAR-10 and CIFAR-100 from the standard "python version" folders, read without torchvision.

Layouts (https://www.cs.toronto.edu/~kriz/cifar.html):

* ``cifar-100-python/{train,test,meta}``: pickled dicts, b'data' (N x 3072 uint8, channel-major
  R then G then B planes of 32x32), b'fine_labels'; meta has b'fine_label_names'.
* ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``: b'data', b'labels';
  meta has b'label_names'.

``root`` may be that folder itself or its parent; ``root=None`` uses ``$NASDISTILL_DATA`` or
``./data``. The files are pickles, so they are read with `CifarUnpickler`, which resolves only the
few numpy globals an array needs and refuses everything else (a pickle can otherwise run any code).

Images are kept as uint8 (N,3,32,32) (a quarter of the float32 memory); `DeviceLoader` scales them.
Validation: ``val_size`` images (a count, or a fraction < 1) are held out of train, stratified by
class and fixed by ``seed``. The default 0 follows the CIFAR KD literature (RepDistiller, mdistiller
report on the test set): val is then the test split itself.
"""
from __future__ import annotations

import os
import pickle
from functools import partial
from pathlib import Path

import numpy as np
import torch

from nasdistill.data.splits import DatasetSplits, Split, split_sizes, stratified_holdout
from nasdistill.registry import register

try:  # numpy >= 2 moved the internals; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

CIFAR_LAYOUT = {
    "cifar100": dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz",
                     train=("train",), test=("test",), meta="meta", label_key=b"fine_labels",
                     names_key=b"fine_label_names", num_classes=100,
                     mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
    "cifar10": dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
                    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
                    meta="batches.meta", label_key=b"labels", names_key=b"label_names",
                    num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy.core.numeric", "_frombuffer"): None,  # filled below when numpy has it
    ("numpy._core.numeric", "_frombuffer"): None,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): None,  # how Python 3 protocol-2 pickles spell bytes
}


def _fill_allowed() -> None:
    import codecs
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # pragma: no cover
        _frombuffer = None
    for key in list(_ALLOWED_GLOBALS):
        if key[1] == "_frombuffer":
            _ALLOWED_GLOBALS[key] = _frombuffer
    _ALLOWED_GLOBALS[("_codecs", "encode")] = codecs.encode
    for key in [k for k, v in _ALLOWED_GLOBALS.items() if v is None]:
        del _ALLOWED_GLOBALS[key]


_fill_allowed()


class CifarUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy array constructors CIFAR files need."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR file only needs numpy arrays"
            ) from None


def read_cifar_pickle(path: Path) -> dict:
    """One CIFAR file as a dict with bytes keys; ValueError naming the file if it is not one."""
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as err:
        raise ValueError(f"{path} is not a readable CIFAR python-format file ({err}); "
                         f"re-download it from {URL} and extract it again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected the CIFAR dict with "
                         f"b'data' and labels; re-download it from {URL}")
    return obj


def find_cifar_folder(name: str, root: str | os.PathLike | None) -> Path:
    """The folder holding ``name``'s files: ``root`` itself or ``root/<standard folder>``."""
    layout = CIFAR_LAYOUT[name]
    base = Path(root if root is not None else os.environ.get("NASDISTILL_DATA", "data")).expanduser()
    candidates = [base, base / layout["folder"]]
    probe = layout["train"][0]
    for folder in candidates:
        if (folder / probe).is_file():
            return folder
    looked = " and ".join(str(c / probe) for c in candidates)
    raise FileNotFoundError(
        f"{name}: file {probe!r} not found (looked for {looked}). Download {layout['archive']} "
        f"from {URL} and extract it into {base} (giving {base / layout['folder']}), or "
        f"set data.root=DIR (in the config or on the command line) to the folder that holds it"
    )


def _read_part(folder: Path, files: tuple[str, ...], label_key: bytes,
               num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for fname in files:
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR file {path} is missing; the folder {folder} is incomplete. "
                                    f"Re-extract the archive from {URL} into {folder.parent}")
        d = read_cifar_pickle(path)
        for key in (b"data", label_key):
            if key not in d:
                found = ", ".join(repr(k) for k in list(d)[:8])
                raise ValueError(f"{path} has no key {key!r} (found {found}); is this the right "
                                 f"dataset? Re-download it from {URL}")
        data = np.asarray(d[b"data"])
        lab = np.asarray(d[label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path}: b'data' must be an N x 3072 uint8 array, got "
                             f"{data.dtype} {data.shape}; re-download it from {URL}")
        if lab.shape != (data.shape[0],):
            raise ValueError(f"{path}: {data.shape[0]} images but {lab.size} labels under "
                             f"{label_key!r}; the file is truncated or wrong")
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise ValueError(f"{path}: labels must lie in 0..{num_classes - 1}, found "
                             f"{lab.min()}..{lab.max()}; is this the right CIFAR variant?")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar_splits(name: str, root: str | os.PathLike | None = None, seed: int = 0,
                      val_size: float | int = 0) -> DatasetSplits:
    """CIFAR-10/100 as `DatasetSplits` (uint8 images, recipe mean/std, augment=True)."""
    if name not in CIFAR_LAYOUT:
        raise ValueError(f"unknown CIFAR variant {name!r}; use one of {sorted(CIFAR_LAYOUT)}")
    layout = CIFAR_LAYOUT[name]
    folder = find_cifar_folder(name, root)
    k = layout["num_classes"]
    train_x, train_y = _read_part(folder, layout["train"], layout["label_key"], k)
    test_x, test_y = _read_part(folder, layout["test"], layout["label_key"], k)
    class_names = None
    meta_path = folder / layout["meta"]
    if meta_path.is_file():
        names = read_cifar_pickle(meta_path).get(layout["names_key"])
        if names is not None:
            class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    full = Split(torch.from_numpy(train_x), torch.from_numpy(train_y))
    test = Split(torch.from_numpy(test_x), torch.from_numpy(test_y))
    n_val = split_sizes(len(full), val_size, f"{name} val_size")
    if n_val:
        kept, held = stratified_holdout(train_y, n_val, seed)
        train, val = full.subset(kept), full.subset(held)
    else:
        train, val = full, test
    return DatasetSplits(
        name=name, train=train, val=val, test=test, num_classes=k, input_size=(3, 32, 32),
        mean=layout["mean"], std=layout["std"], augment=True, class_names=class_names,
    )


def write_cifar100(root, images: np.ndarray, labels, test_images: np.ndarray, test_labels,
                   label_names=None) -> Path:
    """Write images in the CIFAR-100 python format under ``root/cifar-100-python`` (your own data
    for `load_dataset("cifar100", root=...)`, or synthetic files for smoke tests of the pipeline).

    ``images``/``test_images``: uint8 (N, 3, 32, 32); ``labels``: N ints in 0..99.
    """
    from ..atomic import atomic_open

    folder = Path(root) / CIFAR_LAYOUT["cifar100"]["folder"]
    names = label_names or [f"class{i}" for i in range(100)]
    for part, x, y in (("train", images, labels), ("test", test_images, test_labels)):
        x = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).reshape(len(x), 3072))
        record = {b"data": x, b"fine_labels": [int(v) for v in y], b"coarse_labels": [0] * len(x)}
        with atomic_open(folder / part, "wb") as f:
            pickle.dump(record, f, protocol=2)
    with atomic_open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [n.encode() for n in names]}, f, protocol=2)
    return folder


def write_synthetic_cifar100(root, n_train: int = 5000, n_test: int = 1000, seed: int = 0) -> Path:
    """CIFAR-100-format files of class-structured random images (a smooth pattern per class plus
    noise): learnable, so a shrunk run of the CIFAR-100 configuration shows real accuracies."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0.0, 1.0, (100, 3, 8, 8))
    patterns = np.kron(patterns, np.ones((1, 1, 4, 4)))  # 8x8 blocks -> 32x32

    def draw(n):
        y = rng.integers(0, 100, n)
        x = 128 + 40 * patterns[y] + rng.normal(0, 40, (n, 3, 32, 32))
        return np.clip(x, 0, 255).astype(np.uint8), y

    (xt, yt), (xs, ys) = draw(n_train), draw(n_test)
    return write_cifar100(root, xt, yt, xs, ys)


register("dataset", "cifar10", partial(load_cifar_splits, "cifar10"), takes_root=True, default_space="gtn_cifar",
         order=30)
register("dataset", "cifar100", partial(load_cifar_splits, "cifar100"), takes_root=True, default_space="gtn_cifar",
         order=40)
