"""Class-per-folder image datasets (ImageNet-200 style) through torchvision's ImageFolder.

Layout: ``root/train/<class>/*.JPEG``, ``root/val/<class>/*`` and optionally ``root/test/<class>/*``
(without it, test is the val split). Every image is resized to ``image_size`` x ``image_size``
(default 64) and the whole set is decoded once into a uint8 tensor (N,3,S,S), so training then runs
on the device-resident loader with no decoding. Mean/std are the ImageNet ones. ``val_size`` > 0
additionally holds images out of train for validation (stratified, fixed by ``seed``); the folder
``val`` then serves as test when there is no ``test`` folder.

torchvision is optional (extra ``nasdistill[vision]``) and imported only here, on use.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nasdistill.data.splits import DatasetSplits, Split, split_sizes, stratified_holdout
from nasdistill.registry import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def import_torchvision():
    """torchvision, or ImportError telling how to install it."""
    try:
        import torchvision
        from torchvision import datasets, transforms  # noqa: F401
    except Exception as err:  # a broken install raises more than ImportError
        raise ImportError(
            f"dataset 'imagefolder' needs torchvision, which could not be imported ({err}); "
            'install it with: pip install "nasdistill[vision]"'
        ) from err
    return torchvision


def _read_folder(folder: Path, image_size: int, expected_classes: list[str] | None):
    tv = import_torchvision()
    T = tv.transforms
    transform = T.Compose([T.Resize((image_size, image_size)), T.PILToTensor()])
    ds = tv.datasets.ImageFolder(str(folder), transform=transform)
    if expected_classes is not None and ds.classes != expected_classes:
        missing = sorted(set(expected_classes) - set(ds.classes))
        extra = sorted(set(ds.classes) - set(expected_classes))
        raise ValueError(f"{folder}: class folders differ from train's (missing {missing[:5]}, "
                         f"extra {extra[:5]}); every split needs the same <class> sub-folders")
    images = torch.empty((len(ds), 3, image_size, image_size), dtype=torch.uint8)
    for i in range(len(ds)):
        img, _ = ds[i]
        images[i] = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return images, labels, ds.classes


def load_imagefolder_splits(root: str | os.PathLike | None, seed: int = 0,
                            val_size: float | int = 0, image_size: int = 64) -> DatasetSplits:
    """``root/{train,val[,test]}/<class>/*`` as uint8 `DatasetSplits` (augment=True)."""
    import_torchvision()
    if root is None:
        raise ValueError("dataset 'imagefolder' needs data.root=DIR (config or command line): a folder with "
                         "train/<class>/* and val/<class>/* sub-folders")
    base = Path(root).expanduser()
    for part in ("train", "val"):
        if not (base / part).is_dir():
            raise FileNotFoundError(f"imagefolder: folder {base / part} not found; put the images as "
                                    f"{base}/train/<class>/*.JPEG and {base}/val/<class>/*")
    train_x, train_y, classes = _read_folder(base / "train", image_size, None)
    val_x, val_y, _ = _read_folder(base / "val", image_size, classes)
    folder_val = Split(val_x, val_y)
    test = folder_val
    if (base / "test").is_dir():
        test = Split(*_read_folder(base / "test", image_size, classes)[:2])
    full = Split(train_x, train_y)
    n_val = split_sizes(len(full), val_size, "imagefolder val_size")
    if n_val:
        kept, held = stratified_holdout(np.asarray(train_y), n_val, seed)
        train, val = full.subset(kept), full.subset(held)
    else:
        train, val = full, folder_val
    return DatasetSplits(
        name="imagefolder", train=train, val=val, test=test, num_classes=len(classes),
        input_size=(3, image_size, image_size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        augment=True, class_names=tuple(classes),
    )


register("dataset", "imagefolder", load_imagefolder_splits, takes_root=True, default_space="gtn_cifar", order=50)
