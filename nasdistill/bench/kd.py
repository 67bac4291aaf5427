"""An epoch of nasdistill's KD step against an epoch of the conventional KD loop, side by side.

Same teacher and student (zoo models, fresh weights; the teacher frozen in eval mode), same
images (synthetic, CIFAR-sized by default, stored as uint8 like CIFAR), same batch size, same loss
(0.1 CE + 0.9 KD at T = 4, SGD momentum 0.9):

- **nasdistill**: the engine's :class:`~nasdistill.engine.trainer.Trainer` with its defaults
  (device-resident loader with batched crop+flip, bf16 autocast and channels_last on CUDA, no host
  sync inside the step, whole-step CUDA graphs where safe) running a :class:`DistillTask`;
- **conventional**: a ``torch.utils.data.DataLoader`` with ``--workers`` processes and per-image
  transforms -- torchvision's ``RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor ->
  Normalize`` when torchvision imports, otherwise the same steps as a plain per-sample tensor
  pipeline (the output says which) -- and an eager fp32 step (teacher forward under ``no_grad``,
  student forward and backward, SGD step).

One warm-up epoch of each, then ``--rounds`` timed epochs of each, interleaved; medians are
reported as ms/step and s/epoch (an epoch = ``--steps`` steps, default the whole train split),
with ``conventional / nasdistill``. With ``--json`` the last line holds the figures.

    nasdistill bench kd                               # resnet32x4 -> resnet8x4, batch 64, 32x32x3
    nasdistill bench kd --teacher resnet8 --student resnet8 --size 8 --channels 1 --steps 5 --json
"""
from __future__ import annotations

import copy
import json
import statistics
import time

import torch

from ..registry import register
import torch.nn.functional as F

HELP = "KD epoch time: nasdistill's engine vs a conventional DataLoader loop (same models, data)"


def add_arguments(parser) -> None:
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--size", type=int, default=32, help="image side (default 32, CIFAR)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=None,
                        help="training images (default: 50,000 on CUDA, 2,048 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed epoch (default: the whole train split on CUDA, 10 on the CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each loop (median)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional loop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cuda-graphs", default="auto", choices=["auto", "true", "false"],
                        help="nasdistill's train.cuda_graphs (default auto: on for CUDA)")
    parser.add_argument("--json", action="store_true")


def _data(args, device):
    from ..data import load_dataset

    n = args.n_train or (50_000 if device.type == "cuda" else 2_048)
    splits = load_dataset("synthetic", seed=0, size=args.size, channels=args.channels,
                          num_classes=args.num_classes, n_train=n, n_test=64, val_size=0)
    # stored as uint8, like CIFAR (both loops read the same bytes)
    splits.train.images = (splits.train.images.clamp(0, 1) * 255).round().to(torch.uint8)
    return splits


def _models(args, device):
    from ..models import create_model

    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=args.num_classes, in_channels=args.channels)
    student = create_model(args.student, num_classes=args.num_classes, in_channels=args.channels)
    return teacher.to(device).eval(), student.to(device)


class _TorchvisionDataset(torch.utils.data.Dataset):
    """uint8 (C, H, W) images through torchvision's CIFAR training transforms."""

    def __init__(self, split, mean, std):
        import numpy as np
        from torchvision import transforms

        self.images = split.images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as PIL wants
        self.labels = split.labels
        self.np = np
        side = split.images.shape[-1]
        self.tf = transforms.Compose([transforms.RandomCrop(side, padding=4), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = self.images[i]
        img = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        return self.tf(img), self.labels[i]


def _conventional_loader(splits, args, device):
    try:
        import torchvision  # noqa: F401

        dataset, which = _TorchvisionDataset(splits.train, splits.mean, splits.std), "torchvision transforms"
    except Exception:
        from ..data.reference_loader import AugmentedSplitDataset

        dataset = AugmentedSplitDataset(splits.train, splits.mean, splits.std, augment=True)
        which = "per-sample tensor transforms (torchvision is not installed)"
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         persistent_workers=args.workers > 0)
    return loader, which


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _conventional_epoch(loader, teacher, student, opt, device, steps) -> float:
    student.train()
    _sync(device)
    t0 = time.perf_counter()
    for i, (x, y, *_) in enumerate(loader):
        if i >= steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            zt = teacher(x)
        zs = student(x)
        t = 4.0
        kd = F.kl_div(F.log_softmax(zs / t, 1), F.log_softmax(zt / t, 1), reduction="batchmean",
                      log_target=True) * t * t
        loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _engine(args, splits, teacher, student, device, steps):
    """A Trainer around a KD DistillTask, and a train loader of exactly ``steps`` batches."""
    from ..data import DeviceLoader
    from ..distill import build_distiller
    from ..distill.task import DistillTask
    from ..engine.config import TrainConfig
    from ..engine.trainer import Trainer

    split = splits.train
    if steps * args.batch_size < len(split):
        split = split.subset(torch.arange(steps * args.batch_size))
    loader = DeviceLoader(split, args.batch_size, shuffle=True, augment=True, mean=splits.mean,
                          std=splits.std, device=device, seed=0)
    graphs = {"auto": "auto", "true": True, "false": False}[args.cuda_graphs]
    cfg = TrainConfig(epochs=10 ** 6, batch_size=args.batch_size, lr=0.05, schedule="constant",
                      milestones=[], cuda_graphs=graphs, device=str(device))
    task = DistillTask(student, build_distiller("kd", student, teacher))
    return Trainer(cfg, task, loader, None, device=device, verbose=False)


def run(args) -> int:
    from ..engine import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    device = distributed.resolve_device(args.device, 0)
    splits = _data(args, device)
    full = len(splits.train) // args.batch_size
    steps = min(args.steps or (full if device.type == "cuda" else 10), full)
    if steps < 1:
        raise ValueError(f"--n-train {len(splits.train)} gives no full batch of {args.batch_size}")
    teacher, student = _models(args, device)
    conv_student = copy.deepcopy(student)  # same initial weights, before the engine touches it
    trainer = _engine(args, splits, teacher, student, device, steps)
    loader, which = _conventional_loader(splits, args, device)
    opt = torch.optim.SGD(conv_student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def ours(epoch: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        trainer.run_epoch(epoch)
        _sync(device)
        return time.perf_counter() - t0

    ours(0)  # warm-up epochs (graph capture, workers, allocator, cuDNN)
    _conventional_epoch(loader, teacher, conv_student, opt, device, steps)
    times = {"nasdistill": [], "conventional": []}
    for r in range(args.rounds):
        pair = [("nasdistill", lambda: ours(r + 1)),
                ("conventional", lambda: _conventional_epoch(loader, teacher, conv_student, opt, device, steps))]
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            times[name].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}
    ms = {k: 1000 * v / steps for k, v in med.items()}
    per_epoch = {k: v * full / steps for k, v in med.items()}  # projected to the whole train split
    graphed = trainer.graphed is not None and not trainer.graphed.disabled and trainer.graphed.replays > 0
    print(f"KD {args.teacher} -> {args.student}, batch {args.batch_size}, {args.channels}x{args.size}x{args.size} "
          f"uint8 images, {full} steps per epoch ({steps} timed), device {device}, median of {args.rounds}")
    print(f"  nasdistill: DeviceLoader + engine step (amp {'bf16' if device.type == 'cuda' else 'off'}, "
          f"CUDA graphs {'on' if graphed else 'off'})")
    print(f"  conventional: DataLoader ({args.workers} workers) with {which}, eager fp32 step")
    print(f"  {'loop':<14} {'ms/step':>9} {'s/epoch':>9}")
    for k in ("nasdistill", "conventional"):
        print(f"  {k:<14} {ms[k]:>9.2f} {per_epoch[k]:>9.2f}")
    ratio = med["conventional"] / med["nasdistill"]
    print(f"  conventional / nasdistill: {ratio:.2f}x")
    if args.json:
        print(json.dumps({"nasdistill_ms_per_step": round(ms["nasdistill"], 3),
                          "conventional_ms_per_step": round(ms["conventional"], 3),
                          "nasdistill_s_per_epoch": round(per_epoch["nasdistill"], 3),
                          "conventional_s_per_epoch": round(per_epoch["conventional"], 3),
                          "speedup": round(ratio, 3), "cuda_graphs": graphed, "steps_per_epoch": full,
                          "conventional_pipeline": which, "device": str(device)}))
    return 0


register("bench", "kd", run, help=HELP, arguments=add_arguments, doc=__doc__)
