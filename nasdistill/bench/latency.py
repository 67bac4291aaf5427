"""A latency lookup table of a search space, measured on the current device.

For the stem, every (layer, candidate, input shape that can arrive) and the head at every width
that can reach it, the plain module (as ``space.build`` would make it) is timed in eval mode on a
batch of ``--batch-size`` (median of ``--reps`` runs after warm-up). The JSON table feeds
``search.cost_metric=latency`` (``search.latency_table=PATH``) through
:class:`nasdistill.supernet.CostModel`: the expected latency is then differentiable in phi.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from ..registry import register
from torch import nn

HELP = "measure a per-(layer, candidate, input shape) latency table for latency-aware search"


def add_arguments(parser) -> None:
    parser.add_argument("space", help="search space: module of search_spaces or path to a .py file")
    parser.add_argument("--out", default=None, help="JSON file to write (default: latency_<space>.json)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)


@torch.no_grad()
def time_module(module: nn.Module, x: torch.Tensor, reps: int, warmup: int) -> float:
    """Median forward time in milliseconds."""
    module.eval()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        module(x)
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        module(x)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_table(space, device, batch_size: int = 1, reps: int = 10, warmup: int = 3) -> dict:
    from ..space.blocks import ConvBNReLU, SpaceHead
    from ..space.cost import state_key

    entries = {}
    c, h, w = space.input_size
    stem = ConvBNReLU(c, space.stem_channels, space.stem_kernel, space.stem_stride).to(device)
    entries["stem"] = time_module(stem, torch.randn(batch_size, c, h, w, device=device), reps, warmup)
    states = space.arriving_states(0, space.stem_shape())
    for i, layer in enumerate(space.layers):
        for state in sorted(states[i]):
            ch, hw = state
            x = torch.randn(batch_size, ch, *hw, device=device)
            for name, op in space.layer_ops(i).items():
                if op.skips_layer:
                    continue
                module = op.build(ch, layer.out_channels, layer.stride).to(device)
                key = f"{space.layer_label(i)}:{i}:{name}:{state_key(state)}"
                entries[key] = time_module(module, x, reps, warmup)
    for state in sorted(states[-1]):
        ch, hw = state
        head = nn.Sequential(SpaceHead(ch, space.head_width),
                             nn.Linear(space.head_width or ch, space.num_classes)).to(device)
        entries[f"head:{state_key(state)}"] = time_module(
            head, torch.randn(batch_size, ch, *hw, device=device), reps, warmup)
    return {"space": space.name, "metric": "latency_ms", "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "batch_size": batch_size, "input_size": list(space.input_size), "entries": entries}


def run(args) -> int:
    from ..atomic import atomic_open
    from ..engine import distributed
    from ..space import load_space
    from ..space.cost import CostModel

    if args.threads:
        torch.set_num_threads(args.threads)
    space = load_space(args.space)
    device = distributed.resolve_device(args.device, 0)
    table = measure_table(space, device, args.batch_size, args.reps, args.warmup)
    out = args.out or f"latency_{space.name}.json"
    with atomic_open(out, "w") as f:
        json.dump(table, f, indent=1)
    model = CostModel(space, "latency", table)
    lo = min(space.architectures(), key=lambda a: space.cost(a)["macs"]) if space.size() < 20000 else None
    print(f"measured {len(table['entries'])} entries of space {space.name} on {device} "
          f"(batch {args.batch_size}, median of {args.reps}) -> {out}")
    for arch_name, arch in (("sample seed 0", space.sample(0)), ("smallest MACs", lo)):
        if arch is not None:
            print(f"  {arch_name}: {model.of_arch(arch):.3f} ms predicted, {space.cost(arch)['macs']:,} MACs")
    return 0


register("bench", "latency", run, help=HELP, arguments=add_arguments, doc=__doc__)
