"""Time epochs of the device-resident loader against a standard DataLoader on the same data.

Both iterate the train split with the same batch size and the same augmentation (zero-pad 4 + random
crop + horizontal flip, then normalize): the DataLoader through a Dataset whose ``__getitem__``
augments one image at a time (the torchvision way, without needing torchvision), the DeviceLoader
with batched tensor ops. The two are interleaved in one run (alternating which goes first, after a
short warm-up of each), each epoch is timed, and the medians are compared:

    speedup = median DataLoader epoch time / median DeviceLoader epoch time

Example, CIFAR-like 32x32 RGB without downloading anything:
``nasdistill bench loader --dataset synthetic --size 32 --channels 3 --n-train 10000``
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from ..registry import register

HELP = "DeviceLoader vs torch DataLoader epoch time (same data, batch, augmentation)"


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="digits",
                        help="dataset name (digits, synthetic, cifar10, cifar100, imagefolder)")
    parser.add_argument("--root", default=None, help="dataset folder (cifar, imagefolder)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3,
                        help="timed epochs of each loader (median reported)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", default="cpu", help="device the DeviceLoader keeps data on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op CPU threads (default: torch's); 1 avoids OpenMP "
                             "spin-waits on a busy shared CPU")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="time without crop+flip (on by default: that is the comparison)")
    parser.add_argument("--size", type=int, default=None, help="synthetic: image side (default 8)")
    parser.add_argument("--channels", type=int, default=None, help="synthetic: channels (default 1)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="synthetic: training images (default 2000)")
    parser.add_argument("--json", action="store_true", help="end with a JSON line of the results")


def _dataset_options(args) -> dict:
    extra = {"size": args.size, "channels": args.channels, "n_train": args.n_train}
    given = {k: v for k, v in extra.items() if v is not None}
    if given and args.dataset != "synthetic":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} only apply to --dataset synthetic, not {args.dataset!r}")
    return given


def _time_epoch(loader, device: torch.device, limit: int | None = None) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for t, (x, y, idx) in enumerate(loader):
        if limit is not None and t >= limit:
            break
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
    sync()
    return time.perf_counter() - start


def run(args) -> int:
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0:
        raise ValueError("--epochs and --batch-size must be >= 1 and --workers >= 0")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        return _compare(args)
    finally:
        torch.set_num_threads(threads_before)


def _compare(args) -> int:
    from nasdistill.data import DeviceLoader, load_dataset
    from nasdistill.data.reference_loader import reference_loader

    splits = load_dataset(args.dataset, root=args.root, seed=args.seed, **_dataset_options(args))
    split = splits.train
    device = torch.device(args.device)
    common = dict(mean=splits.mean, std=splits.std, augment=args.augment)
    standard = reference_loader(split, args.batch_size, workers=args.workers, seed=args.seed, **common)
    resident = DeviceLoader(split, args.batch_size, shuffle=True, device=device, seed=args.seed,
                            **common)
    _time_epoch(standard, device, limit=2)  # warm-up: worker start, allocator, caches
    _time_epoch(resident, device, limit=2)
    times = {"dataloader": [], "device": []}
    for rep in range(args.epochs):
        pair = [("dataloader", standard), ("device", resident)]
        for name, loader in (pair if rep % 2 == 0 else pair[::-1]):
            times[name].append(_time_epoch(loader, device))
    dl, dv = statistics.median(times["dataloader"]), statistics.median(times["device"])
    speedup = dl / dv if dv > 0 else float("inf")
    c, h, w = split.images.shape[1:]
    print(f"loader bench: {splits.name} train ({len(split)} images, {c}x{h}x{w}, "
          f"{split.images.dtype}), batch {args.batch_size}, augment {'on' if args.augment else 'off'}, "
          f"device {device}, {torch.get_num_threads()} CPU threads, median of {args.epochs} epochs each")
    print(f"  {'DataLoader (per-sample, workers ' + str(args.workers) + ')':<40} {dl:10.4f} s/epoch")
    print(f"  {'DeviceLoader (batched)':<40} {dv:10.4f} s/epoch")
    print(f"  {'speedup (DataLoader / DeviceLoader)':<40} {speedup:10.2f}x")
    if args.json:
        print(json.dumps({"dataloader_s": dl, "device_loader_s": dv, "speedup": speedup}))
    return 0


register("bench", "loader", run, help=HELP, arguments=add_arguments, doc=__doc__)
