"""Datasets: digits, synthetic (exact Bayes posterior), CIFAR python-format files, imagefolder."""
from __future__ import annotations

import pickle
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from nasdistill.data import DATASETS, DatasetSplits, Split, load_dataset
from nasdistill.data.cifar import URL, write_cifar100


def _rows(split: Split) -> Counter:
    return Counter((s.numpy().tobytes(), int(y)) for s, y in zip(split.images, split.labels))


# ---------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits", seed=0)


def test_digits_split_sizes_partition_and_stratification(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1258, 180, 359)
    full = Split(torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16,
                 torch.tensor(bunch.target))
    # the three splits are exactly the 1797 images, each used once
    assert _rows(digits.train) + _rows(digits.val) + _rows(digits.test) == _rows(full)
    counts = np.bincount(bunch.target, minlength=10)
    test_counts = np.bincount(digits.test.labels.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)
    assert digits.input_size == (1, 8, 8) and digits.num_classes == 10 and not digits.augment
    assert digits.train.images.dtype == torch.float32
    assert float(digits.train.images.min()) == 0.0 and float(digits.train.images.max()) == 1.0
    for split in (digits.train, digits.val, digits.test):
        assert torch.equal(split.indices, torch.arange(len(split)))
    x = digits.train.images.double()
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert digits.std[0] == pytest.approx(float(x.std()), abs=1e-9)


def test_digits_split_fixed_by_seed(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(again.test.images, digits.test.images)
    assert torch.equal(again.train.labels, digits.train.labels)
    assert not torch.equal(other.test.images, digits.test.images)


def test_digits_val_size_zero_means_val_is_test():
    d = load_dataset("digits", val_size=0)
    assert d.val is d.test and len(d.train) == 1797 - 359


@pytest.mark.parametrize("train_size,expected", [(180, 180), (0.1, 180), (1258, 1258)])
def test_digits_train_size_trains_on_a_stratified_part_of_the_same_train_split(digits, train_size, expected):
    """``train_size`` keeps val and test as they are and trains on that many of the train split's
    images, each class in its share of the whole set (within one image), normalized by their own
    mean and std."""
    small = load_dataset("digits", seed=0, train_size=train_size)
    assert len(small.train) == expected
    assert torch.equal(small.val.images, digits.val.images) and torch.equal(small.test.images, digits.test.images)
    assert not _rows(small.train) - _rows(digits.train)  # a part of the train split, nothing else
    counts = np.bincount(load_dataset("digits", val_size=0, test_size=0.0).train.labels.numpy(), minlength=10)
    got = np.bincount(small.train.labels.numpy(), minlength=10)
    assert np.all(np.abs(got - expected * counts / counts.sum()) <= 1), got
    x = small.train.images.double()
    assert small.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert torch.equal(load_dataset("digits", seed=0, train_size=train_size).train.images, small.train.images)


@pytest.mark.parametrize("train_size", [0, 0.0, 1259, 0.9, -3])
def test_digits_train_size_beyond_what_test_and_val_leave_is_refused(train_size):
    with pytest.raises(ValueError, match="train_size"):
        load_dataset("digits", train_size=train_size)


# ---------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def synthetic() -> DatasetSplits:
    return load_dataset("synthetic", seed=0)


def test_synthetic_posterior_equals_direct_formula(synthetic):
    model = synthetic.source_model
    for split in (synthetic.train, synthetic.val, synthetic.test):
        x = split.images.numpy().astype(np.float64).reshape(len(split), -1)
        mu = model.means.reshape(model.num_classes, -1)
        sq = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
        logits = np.log(model.priors)[None, :] - sq / (2 * model.sigma ** 2)
        logits -= logits.max(1, keepdims=True)
        expect = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(split.posterior.numpy(), expect, atol=1e-6)
        np.testing.assert_allclose(synthetic.bayes_posterior(split.images).numpy(), expect, atol=1e-6)


def test_synthetic_bayes_accuracy_in_band_and_labels_follow_posterior(synthetic):
    acc = [(s.posterior.argmax(1) == s.labels).double().mean().item()
           for s in (synthetic.train, synthetic.test)]
    # calibrated to 0.85 on a Monte Carlo sample; 1000-2000 draws have a std of about 1 point
    assert all(0.80 <= a <= 0.90 for a in acc), acc
    # labels are drawn from the model, so the mean posterior of the true label matches its
    # expectation E[p(y|x)] within sampling noise, and NLL of the posterior is finite and small
    post = synthetic.train.posterior
    assert torch.allclose(post.sum(1), torch.ones(len(post)), atol=1e-5)
    freq = torch.bincount(synthetic.train.labels, minlength=10).double() / len(post)
    assert torch.allclose(post.double().mean(0), freq, atol=0.03)
    assert synthetic.input_size == (1, 8, 8) and not synthetic.augment


def test_synthetic_options_noise_shape_and_seed():
    low = load_dataset("synthetic", seed=3, noise=0.05, n_train=200, n_test=300, val_size=0)
    high = load_dataset("synthetic", seed=3, noise=2.0, n_train=200, n_test=300, val_size=0)
    acc = lambda d: (d.test.posterior.argmax(1) == d.test.labels).double().mean().item()  # noqa: E731
    assert acc(low) > 0.99 and acc(high) < 0.5 and low.val is low.test
    rgb = load_dataset("synthetic", seed=3, size=16, channels=3, num_classes=4, n_train=64,
                       n_test=32, val_size=16)
    assert rgb.train.images.shape == (64, 3, 16, 16) and rgb.train.posterior.shape == (64, 4)
    assert (len(rgb.val), len(rgb.test), len(rgb.mean)) == (16, 32, 3)
    same = load_dataset("synthetic", seed=3, noise=0.05, n_train=200, n_test=300, val_size=0)
    assert torch.equal(same.train.images, low.train.images)
    with pytest.raises(ValueError, match="bayes_accuracy"):
        load_dataset("synthetic", bayes_accuracy=0.05)
    with pytest.raises(ValueError, match="no known generative model"):
        load_dataset("digits").bayes_posterior(torch.zeros(1, 1, 8, 8))


# ---------------------------------------------------------------- registry
def test_unknown_dataset_and_option_errors():
    assert DATASETS.names() == ["digits", "synthetic", "cifar10", "cifar100", "imagefolder"]
    with pytest.raises(ValueError, match="available: digits, synthetic, cifar10, cifar100"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="did you mean 'n_train'"):
        load_dataset("synthetic", n_trian=10)


# ---------------------------------------------------------------- cifar
def _dump(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _write_cifar100(root, n_train=20, n_test=10, seed=0):
    """Random CIFAR-100 files under ``root/cifar-100-python``; returns ``{part: (x, y)}``."""
    rng = np.random.default_rng(seed)
    data = {}
    for part, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 100, n)]
        data[part] = (x, y)
    write_cifar100(root, *data["train"], *data["test"], label_names=[f"c{i}" for i in range(100)])
    return data


def test_cifar100_tiny_files_load(tmp_path):
    data = _write_cifar100(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-100-python"):  # parent or the folder itself
        d = load_dataset("cifar100", root=root)
        assert (len(d.train), len(d.test)) == (20, 10) and d.val is d.test
        assert d.train.images.dtype == torch.uint8 and d.train.images.shape == (20, 3, 32, 32)
        x, y = data["train"]
        # channel-major rows: the first 1024 bytes are the red plane
        assert torch.equal(d.train.images[3, 0].flatten(), torch.from_numpy(x[3, :1024]))
        assert torch.equal(d.train.images[3, 2, 5, 7], torch.tensor(x[3, 2048 + 5 * 32 + 7]))
        assert d.train.labels.tolist() == y and d.test.labels.tolist() == data["test"][1]
        assert d.mean == (0.5071, 0.4867, 0.4408) and d.std == (0.2675, 0.2565, 0.2761)
        assert d.num_classes == 100 and d.augment and d.class_names[7] == "c7"
    held = load_dataset("cifar100", root=tmp_path, val_size=5, seed=2)
    assert (len(held.train), len(held.val)) == (15, 5)
    assert torch.equal(held.val.indices, torch.arange(5))
    full = load_dataset("cifar100", root=tmp_path)
    assert _rows(held.train) + _rows(held.val) == _rows(full.train)


def test_cifar10_tiny_files_load(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    parts = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, 4)]
        _dump(folder / name, {b"data": x, b"labels": y}, protocol=5)
        parts.append((x, y))
    _dump(folder / "batches.meta", {b"label_names": [b"plane"] + [b"x"] * 9})
    d = load_dataset("cifar10", root=tmp_path)
    assert (len(d.train), len(d.test)) == (20, 4)
    assert d.train.labels.tolist() == sum((y for _, y in parts[:5]), [])
    assert torch.equal(d.train.images[4:8].reshape(4, -1), torch.from_numpy(parts[1][0]))
    assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2470, 0.2435, 0.2616)
    assert d.class_names[0] == "plane" and d.num_classes == 10
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_folder_says_where_and_what(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "cifar-100-python.tar.gz" in msg and URL in msg and str(tmp_path / "nowhere") in msg
    assert "'train'" in msg


def test_cifar_malformed_files_are_named(tmp_path):
    _write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    _dump(folder / "test", {b"data": np.zeros((3, 100), np.uint8), b"fine_labels": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"test: b'data' must be an N x 3072 uint8"):
        load_dataset("cifar100", root=tmp_path)
    _dump(folder / "test", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(ValueError, match="has no key b'fine_labels'"):
        load_dataset("cifar100", root=tmp_path)
    (folder / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable CIFAR python-format file"):
        load_dataset("cifar100", root=tmp_path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_cifar_unpickler_refuses_code(tmp_path):
    _write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    marker = tmp_path / "pwned"
    _dump(folder / "train", {b"data": _Evil(marker), b"fine_labels": []})
    with pytest.raises(ValueError, match="refusing to load global"):
        load_dataset("cifar100", root=tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------- imagefolder
def test_imagefolder_without_torchvision_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError, match=r'pip install "nasdistill\[vision\]"'):
        load_dataset("imagefolder", root=tmp_path)


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
        from PIL import Image  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _torchvision_imports(),
                    reason="torchvision (optional extra nasdistill[vision]) or PIL does not import here")
def test_imagefolder_loads_and_resizes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 3), ("val", 2)):
        for cls in ("ant", "bee"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / part / cls / f"{i}.png")
    d = load_dataset("imagefolder", root=tmp_path, image_size=16)
    assert d.train.images.shape == (6, 3, 16, 16) and d.train.images.dtype == torch.uint8
    assert d.class_names == ("ant", "bee") and d.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(d.val) == 4 and d.test is d.val and d.augment


def test_digits_read_without_scikit_learn_are_scikit_learn_s_digits():
    from sklearn.datasets import load_digits

    from nasdistill.data.digits import _digits_arrays

    pixels, labels = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(pixels, bunch.data) and np.array_equal(labels, bunch.target)


def test_a_split_the_dataset_cannot_make_is_an_error_about_the_key_the_user_set():
    """The loader's sentence becomes a config error about the key the user set among those it names
    (``val_size`` and the dataset's options, whole names only: synthetic's ``size`` is not named by
    ``val_size=``); a sentence that names none stays as it is."""
    from nasdistill.config import ConfigError
    from nasdistill.data.config import DataConfig

    with pytest.raises(ConfigError) as info:
        DataConfig(name="digits", options={"train_size": 0.9}).load()
    assert info.value.key == "data.options.train_size" and "asks for 1617 training samples" in str(info.value)
    with pytest.raises(ConfigError) as info:  # test_size named first, but only val_size was set
        DataConfig(name="digits", val_size=0.85).load()
    assert info.value.key == "data.val_size"
    synthetic = DataConfig(name="synthetic", options={"size": 8})
    assert synthetic._named_key("val_size=5000 leaves nothing") == "data.val_size"
    assert synthetic._named_key("the file is damaged") is None
