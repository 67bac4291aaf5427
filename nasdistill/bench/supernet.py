"""Memory and speed of the path-binarized supernet against the standalone network of the same path.

For sampled paths, in one run:

(a) bytes saved for backward in one training step (``torch.autograd.graph.saved_tensors_hooks``,
    distinct storages counted once) of the supernet divided by those of the extracted standalone
    model -- for path binarization (an architecture step with the ProxylessNAS gates, the costliest
    step) and for the all-paths weighted-sum mode (the DARTS memory cost, for comparison);
(b) the time of a weight-training step (forward, backward, SGD step) of the supernet divided by the
    standalone model's, the two interleaved repetition by repetition; medians over repetitions and
    paths.

With ``--json`` the last line is a JSON object with ``saved_bytes_ratio``,
``all_paths_saved_bytes_ratio``, ``step_time_ratio`` and, when the ``nni`` extra (with
pytorch_lightning) imports, ``nni_step_time_ratio``: the weight-step time of NNI 3.0's Proxyless
supernet on the same space without ``zero`` (NNI cannot slice widths), same paths, divided by the
standalone model's.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from ..registry import register
from torch import nn

HELP = "supernet vs standalone: saved-for-backward bytes and step time"


def add_arguments(parser) -> None:
    parser.add_argument("space", help="search space: module of search_spaces or path to a .py file")
    parser.add_argument("--paths", type=int, default=4, help="number of sampled paths (default 4)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per path (default 5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print a JSON line last")


class SavedBytes:
    """Context manager summing the bytes of distinct storages saved for backward."""

    def __init__(self):
        self.storages: dict = {}

    def pack(self, t: torch.Tensor):
        try:
            st = t.untyped_storage()
            self.storages[(st.data_ptr(), t.device)] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            self.storages[id(t)] = t.numel() * t.element_size()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def saved_bytes(fn) -> int:
    with SavedBytes() as counter:
        loss = fn()
    loss.backward()
    return counter.total


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_step(model: nn.Module, opt, x, y, before=None) -> float:
    _sync(x.device)
    t0 = time.perf_counter()
    if before is not None:
        before()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(x.device)
    return time.perf_counter() - t0


def measure(space, paths: int, reps: int, batch_size: int, device, seed: int) -> dict:
    from ..supernet import Supernet

    torch.manual_seed(seed)
    supernet = Supernet(space, mode="full", seed=seed).to(device).train()
    weighted = Supernet(space, mode="all", seed=seed).to(device).train()
    x = torch.randn(batch_size, *space.input_size, device=device)
    y = torch.randint(0, space.num_classes, (batch_size,), device=device)
    ce = nn.functional.cross_entropy
    supernet.path_loss = lambda logits: ce(logits, y)  # the estimator's exact terms for skips
    rows = []
    for k in range(paths):
        supernet.set_arch(None)
        arch = supernet.gates.export("sample", seed=seed * 1000 + k)
        standalone = supernet.extract(arch).to(device).train()
        # (a) memory: one architecture step of the supernet, forcing the sampled path to `arch`
        supernet.gates.use_path(arch, arch_grad=True)
        sn_bytes = saved_bytes(lambda: ce(supernet(x), y))
        sa_bytes = saved_bytes(lambda: ce(standalone(x), y))
        all_bytes = saved_bytes(lambda: ce(weighted(x), y))
        # (b) time: weight steps, interleaved
        supernet.set_arch(arch)
        opt_sn = torch.optim.SGD(supernet.weight_parameters(), lr=1e-3, momentum=0.9)
        opt_sa = torch.optim.SGD(standalone.parameters(), lr=1e-3, momentum=0.9)
        timed_step(supernet, opt_sn, x, y)  # warm-up both
        timed_step(standalone, opt_sa, x, y)
        t_sn, t_sa = [], []
        for _ in range(reps):
            t_sn.append(timed_step(supernet, opt_sn, x, y))
            t_sa.append(timed_step(standalone, opt_sa, x, y))
        supernet.set_arch(None)
        rows.append({"arch_id": space.arch_id(arch), "macs": space.cost(arch)["macs"],
                     "saved_bytes_supernet": sn_bytes, "saved_bytes_standalone": sa_bytes,
                     "saved_bytes_all_paths": all_bytes,
                     "step_s_supernet": statistics.median(t_sn),
                     "step_s_standalone": statistics.median(t_sa)})
    return {
        "rows": rows,
        "saved_bytes_ratio": max(r["saved_bytes_supernet"] / r["saved_bytes_standalone"] for r in rows),
        "all_paths_saved_bytes_ratio": statistics.median(
            r["saved_bytes_all_paths"] / r["saved_bytes_standalone"] for r in rows),
        "step_time_ratio": statistics.median(
            r["step_s_supernet"] / r["step_s_standalone"] for r in rows),
    }


def nni_available() -> bool:
    try:
        from nni.nas.oneshot.pytorch.supermodule.proxyless import ProxylessMixedLayer  # noqa: F401
        return True
    except Exception:  # nni or its one-shot dependency (pytorch_lightning) missing or broken
        return False


def build_nni_supernet(space):
    """NNI 3.0's Proxyless supernet over ``space`` without ``zero`` (NNI has no elastic width).

    Without the zero op every layer reads its nominal width, so each candidate is the plain
    module built for that width and any path of this supernet is a path of ours.
    """
    from nni.mutable import frozen_context
    from nni.nas.oneshot.pytorch.supermodule.proxyless import ProxylessMixedLayer

    from ..space.blocks import ConvBNReLU, SpaceHead

    dry_run = {l: next(c for c in space.choices(l) if c != "zero") for l in space.labels}
    with frozen_context(dry_run):  # NNI's LayerChoice needs a sample for its dry run
        return _nni_layers(space, ProxylessMixedLayer, ConvBNReLU, SpaceHead)


def _nni_layers(space, ProxylessMixedLayer, ConvBNReLU, SpaceHead):

    layers = [ConvBNReLU(space.input_size[0], space.stem_channels, space.stem_kernel, space.stem_stride)]
    width = space.stem_channels
    for i, layer in enumerate(space.layers):
        paths = {name: op.build(width, layer.out_channels, layer.stride)
                 for name, op in space.layer_ops(i).items() if not op.skips_layer}
        alpha = nn.Parameter(torch.zeros(len(paths)))
        layers.append(ProxylessMixedLayer(paths, alpha, nn.Softmax(-1), space.layer_label(i)))
        width = layer.out_channels
    layers += [SpaceHead(width, space.head_width), nn.Linear(space.head_width or width, space.num_classes)]
    return nn.Sequential(*layers)


def measure_nni(space, paths: int, reps: int, batch_size: int, device, seed: int) -> dict:
    """Weight-step time of NNI's Proxyless supernet and of the standalone model, same paths."""
    nni_net = build_nni_supernet(space).to(device).train()
    mixed = [m for m in nni_net if hasattr(m, "resample")]
    x = torch.randn(batch_size, *space.input_size, device=device)
    y = torch.randint(0, space.num_classes, (batch_size,), device=device)
    rng = __import__("random").Random(seed)
    ratios = []
    for _ in range(paths):
        arch = {l: rng.choice([c for c in space.choices(l) if c != "zero"]) for l in space.labels}
        for m in mixed:
            m.resample({m.label: arch[m.label]})
        standalone = space.build(arch).to(device).train()
        opt_nni = torch.optim.SGD([p for p in nni_net.parameters()], lr=1e-3, momentum=0.9)
        opt_sa = torch.optim.SGD(standalone.parameters(), lr=1e-3, momentum=0.9)
        timed_step(nni_net, opt_nni, x, y)
        timed_step(standalone, opt_sa, x, y)
        t_nni, t_sa = [], []
        for _ in range(reps):
            t_nni.append(timed_step(nni_net, opt_nni, x, y))
            t_sa.append(timed_step(standalone, opt_sa, x, y))
        ratios.append(statistics.median(t_nni) / statistics.median(t_sa))
    return {"nni_step_time_ratio": statistics.median(ratios)}


def run(args) -> int:
    from ..space import load_space

    space = load_space(args.space)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    result = measure(space, args.paths, args.reps, args.batch_size, device, args.seed)
    print(f"space {space.name}, device {device}, batch {args.batch_size}, {args.paths} paths x "
          f"{args.reps} reps")
    print(f"{'arch':12} {'MACs':>14} {'saved sn/sa':>12} {'all-paths/sa':>13} {'step sn/sa':>11}")
    for r in result["rows"]:
        print(f"{r['arch_id']:12} {r['macs']:>14,} "
              f"{r['saved_bytes_supernet'] / r['saved_bytes_standalone']:>12.3f} "
              f"{r['saved_bytes_all_paths'] / r['saved_bytes_standalone']:>13.2f} "
              f"{r['step_s_supernet'] / r['step_s_standalone']:>11.3f}")
    summary = {k: round(v, 4) for k, v in result.items() if k != "rows"}
    print(f"saved_bytes_ratio (path binarization, worst path) = {summary['saved_bytes_ratio']}")
    print(f"all_paths_saved_bytes_ratio (weighted sum, median) = {summary['all_paths_saved_bytes_ratio']}")
    print(f"step_time_ratio (median) = {summary['step_time_ratio']}")
    if nni_available():
        nni = measure_nni(space, args.paths, args.reps, args.batch_size, device, args.seed)
        summary["nni_step_time_ratio"] = round(nni["nni_step_time_ratio"], 4)
        print(f"nni_step_time_ratio (NNI 3.0 Proxyless supernet, same space without zero, median) = "
              f"{summary['nni_step_time_ratio']}")
    else:
        print("nni not installed (pip install 'nasdistill[nni]', which also needs pytorch_lightning): "
              "nni_step_time_ratio skipped")
    if args.json:
        print(json.dumps(summary))
    return 0


register("bench", "supernet", run, help=HELP, arguments=add_arguments, doc=__doc__)
