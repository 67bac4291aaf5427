"""DeviceLoader: order, determinism, batched crop/flip vs the per-sample reference, sharding, bench."""
from __future__ import annotations

import json

import pytest
import torch

from nasdistill.data import DeviceLoader, Split, load_dataset, loaders_for
from nasdistill.data.augment import crop_flip
from nasdistill.data.device_loader import epoch_seed
from nasdistill.data.reference_loader import AugmentedSplitDataset, pad_crop_flip

MEAN, STD = (0.2, 0.5, 0.4), (0.3, 0.25, 0.5)


def _split(n=50, c=3, s=8, dtype=torch.float32, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)
    else:
        images = torch.rand(n, c, s, s, generator=g)
    return Split(images, torch.randint(0, 5, (n,), generator=g))


def _epoch(loader):
    return [tuple(t.clone() for t in batch) for batch in loader]


def _norm(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_plain_epoch_covers_every_sample_once_normalized():
    split = _split()
    loader = DeviceLoader(split, 16, mean=MEAN, std=STD, seed=0)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 4 and [len(b[0]) for b in batches] == [16, 16, 16, 2]
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(50)) and not torch.equal(idx, torch.arange(50))
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, _norm(split.images[idx]))
    assert torch.equal(y, split.labels[idx])
    assert len(DeviceLoader(split, 16, mean=MEAN, std=STD, drop_last=True)) == 3
    ordered = _epoch(DeviceLoader(split, 16, shuffle=False, mean=MEAN, std=STD))
    assert torch.equal(torch.cat([b[2] for b in ordered]), torch.arange(50))


def test_uint8_images_are_scaled_by_255():
    split = _split(dtype=torch.uint8)
    x, _, idx = next(iter(DeviceLoader(split, 8, shuffle=False, mean=MEAN, std=STD)))
    torch.testing.assert_close(x, _norm(split.images[:8].float() / 255))


def test_same_seed_same_batches_other_seed_differs():
    split = _split()
    kw = dict(augment=True, pad=2, mean=MEAN, std=STD)
    a = _epoch(DeviceLoader(split, 16, seed=7, **kw))
    b = _epoch(DeviceLoader(split, 16, seed=7, **kw))
    c = _epoch(DeviceLoader(split, 16, seed=8, **kw))
    assert all(torch.equal(u, v) for ba, bb in zip(a, b) for u, v in zip(ba, bb))
    assert not torch.equal(a[0][2], c[0][2])


def test_set_epoch_makes_an_epoch_a_pure_function_of_seed_and_epoch():
    split = _split()
    kw = dict(augment=True, pad=2, mean=MEAN, std=STD, seed=3)
    run = DeviceLoader(split, 16, **kw)
    epochs = [_epoch(run) for _ in range(3)]   # epochs 0, 1, 2 without set_epoch
    resumed = DeviceLoader(split, 16, **kw)
    resumed.set_epoch(2)
    again = _epoch(resumed)
    assert all(torch.equal(u, v) for ba, bb in zip(epochs[2], again) for u, v in zip(ba, bb))
    assert not torch.equal(epochs[0][0][2], epochs[1][0][2])
    assert epoch_seed(3, 2) == epoch_seed(3, 2) != epoch_seed(3, 1) != epoch_seed(4, 1)


def test_crop_flip_hand_example():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)         # [[1,2,3],[4,5,6],[7,8,9]]
    one = lambda v: torch.tensor([v])                      # noqa: E731
    out = crop_flip(x, one(0), one(0), one(False), pad=1)
    assert out[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    out = crop_flip(x, one(2), one(1), one(True), pad=1)  # window rows 2..4, cols 1..3, mirrored
    assert out[0, 0].tolist() == [[6, 5, 4], [9, 8, 7], [0, 0, 0]]
    assert torch.equal(crop_flip(x, one(0), one(0), one(True), pad=0), x.flip(3))


@pytest.mark.parametrize("dtype,pad,size", [(torch.float32, 4, 16), (torch.uint8, 2, 8)])
def test_batched_crop_flip_equals_per_sample_reference(dtype, pad, size):
    split = _split(n=24, s=size, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    top = torch.randint(0, 2 * pad + 1, (24,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (24,), generator=g)
    flips = torch.rand(24, generator=g) < 0.5
    got = crop_flip(split.images, top, left, flips, pad)
    expect = torch.stack([pad_crop_flip(img, int(t), int(l), bool(f), pad)
                          for img, t, l, f in zip(split.images, top, left, flips)])
    assert got.dtype == dtype and torch.equal(got, expect)
    assert flips.any() and (~flips).any() and (top != pad).any()


def test_loader_augmentation_follows_its_epoch_plan():
    split = _split(n=20, dtype=torch.uint8)
    loader = DeviceLoader(split, 8, augment=True, pad=4, mean=MEAN, std=STD, seed=5)
    loader.set_epoch(4)
    batches = _epoch(loader)
    order, (top, left, flips) = loader.epoch_plan(4)
    crops = torch.stack([pad_crop_flip(split.images[i], int(t), int(l), bool(f), 4)
                         for i, t, l, f in zip(order, top, left, flips)])
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), _norm(crops.float() / 255))
    assert torch.equal(torch.cat([b[2] for b in batches]), order)
    # zero padding happens before normalization: a padded pixel is (0 - mean) / std; row 0 of a
    # crop is padding whenever its window starts above the image (top < pad)
    pos = int((top < 4).nonzero()[0, 0])
    expect_pad = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD)])
    torch.testing.assert_close(torch.cat([b[0] for b in batches])[pos, :, 0, 0], expect_pad)


def test_reference_dataset_item_is_normalized_crop():
    split = _split(n=4)
    ds = AugmentedSplitDataset(split, MEAN, STD, augment=False)
    x, y, i = ds[2]
    torch.testing.assert_close(x, _norm(split.images[2:3])[0])
    assert int(y) == int(split.labels[2]) and int(i) == 2


@pytest.mark.parametrize("n,batch", [(50, 16), (64, 16), (13, 8)])
def test_two_rank_shards_concatenate_to_the_one_rank_batch(n, batch):
    split = _split(n=n)
    kw = dict(augment=True, pad=2, mean=MEAN, std=STD, seed=11)
    single = _epoch(DeviceLoader(split, batch, **kw))
    shards = [_epoch(DeviceLoader(split, batch, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for t, whole in enumerate(single):
        assert len(shards[0][t][0]) == -(-len(whole[0]) // 2)
        for k in range(3):
            assert torch.equal(torch.cat([shards[0][t][k], shards[1][t][k]]), whole[k])


def test_argument_errors_are_explained():
    split = _split()
    with pytest.raises(ValueError, match="divisible by world_size"):
        DeviceLoader(split, 15, world_size=2, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="one value per channel"):
        DeviceLoader(split, 8, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="rank < world_size"):
        DeviceLoader(split, 8, rank=2, world_size=2, mean=MEAN, std=STD)


def test_loaders_for_uses_dataset_defaults():
    d = load_dataset("synthetic", n_train=40, n_test=30, val_size=20, noise=0.3)
    train, val, test = loaders_for(d, 8, seed=1, world_size=2, rank=1)
    assert not train.augment and train.shuffle and train.world_size == 2
    assert not val.shuffle and val.world_size == 1 and len(test) == 4
    x, y, idx = next(iter(val))
    assert torch.equal(idx, torch.arange(8))
    torch.testing.assert_close(x, (d.val.images[:8] - d.mean[0]) / d.std[0])
    assert loaders_for(d, 8, augment=True)[0].augment


def test_bench_loader_json_line(capsys):
    from nasdistill.cli import main

    assert main(["bench", "loader", "--epochs", "1", "--batch-size", "256", "--threads", "1",
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"dataloader_s", "device_loader_s", "speedup"}
    assert result["dataloader_s"] > 0 and result["device_loader_s"] > 0
    assert result["speedup"] == pytest.approx(result["dataloader_s"] / result["device_loader_s"])
    assert any("DeviceLoader" in line for line in lines[:-1])
