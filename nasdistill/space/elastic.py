"""Elastic-width modules: weights allocated for the widest input that can arrive, sliced per call.

Each elastic module has the same parameter names as its plain counterpart in
:mod:`nasdistill.space.blocks`, so extracting a path is "copy every tensor of the plain module from
the same name in the supernet, sliced to the plain module's shape" (Once-for-All
``get_active_subnet(preserve_weight=True)``; each op does it, :meth:`~nasdistill.space.ops.Op.extract`).

Any op, custom ones included, gets one set of weights by default (:func:`share_widest`): the op
built for the widest input holds them (:class:`ElasticOp`), and an input of width ``w`` runs the op
built for ``w`` with leading slices of those tensors -- where that is the widest op fed the input
zero-padded to its width, which holds when the op's first layer is a convolution or linear layer
reading every input channel and nothing before it turns the padding into a signal. That is checked
numerically when the supernet is built; an op that fails it keeps one copy per width
(:class:`PerWidth`) with the reason.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..space.blocks import BasicBlock, ConvBNReLU


class ElasticBasicBlock(BasicBlock):
    """First block of a stack: input channels sliced to whatever width arrives.

    The projection shortcut exists when any arriving width differs from ``out_channels`` or the
    stride is not 1; it is used exactly when the plain block for that width would have one.
    """

    def __init__(self, in_widths: list[int], out_channels: int, kernel_size: int, stride: int):
        super().__init__(max(in_widths), out_channels, kernel_size, stride)
        self.out_channels, self.stride_ = out_channels, stride
        needs_projection = stride != 1 or any(w != out_channels for w in in_widths)
        if needs_projection and isinstance(self.shortcut, nn.Identity):
            self.shortcut = nn.Sequential(
                nn.Conv2d(max(in_widths), out_channels, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        out = F.conv2d(x, self.conv1.weight[:, :cin], None, self.conv1.stride, self.conv1.padding)
        out = torch.relu(self.bn1(out))
        out = self.bn2(self.conv2(out))
        if self.stride_ == 1 and cin == self.out_channels:
            short = x
        else:
            conv, bn = self.shortcut[0], self.shortcut[1]
            short = bn(F.conv2d(x, conv.weight[:, :cin], None, conv.stride, 0))
        out = out + short
        if self.capture_preact:
            self.preact_out = out
        return torch.relu(out)


class ElasticResStack(nn.Sequential):
    """``num_blocks`` basic blocks; only the first one sees a variable input width."""

    def __init__(self, in_widths: list[int], out_channels: int, kernel_size: int, stride: int,
                 num_blocks: int):
        blocks = [ElasticBasicBlock(in_widths, out_channels, kernel_size, stride)]
        blocks += [BasicBlock(out_channels, out_channels, kernel_size, 1) for _ in range(num_blocks - 1)]
        super().__init__(*blocks)


class ElasticConvBNReLU(ConvBNReLU):
    """``ConvBNReLU`` whose convolution reads only the first ``x.shape[1]`` input channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, act = self[0], self[1], self[2]
        y = F.conv2d(x, conv.weight[:, : x.shape[1]], None, conv.stride, conv.padding)
        return act(bn(y))


class ElasticLinear(nn.Linear):
    """``Linear`` reading only the first ``x.shape[1]`` input features (a head without 1x1 conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


Builder = Callable[[int, int, int], nn.Module]  # (in_channels, out_channels, stride) -> module


class NotSliceable(ValueError):
    """The op built for a narrower input is not a slice of the op built for the widest one."""


class ElasticOp(nn.Module):
    """An op elastic in its input width: ``widest`` (the op built for the widest input) holds the
    weights; an input of width ``w`` runs the op built for ``w`` whose every parameter and buffer
    is the leading slice of ``widest``'s (gradients and BatchNorm running statistics reach those
    tensors). Its output is exactly that of ``build(w, out, stride)`` holding those slices, which
    :meth:`~nasdistill.space.ops.Op.extract` copies out.

    Raises :class:`NotSliceable` when the op built for a narrower width has other submodules or
    tensor names than the widest one, or a tensor larger than its counterpart.
    """

    def __init__(self, build: Builder, in_widths: list[int], out_channels: int, stride: int):
        super().__init__()
        self.in_widths = sorted(set(in_widths))
        self.widest = build(self.in_widths[-1], out_channels, stride)
        narrow = {}
        with torch.random.fork_rng(devices=[]):  # the shapes only: leave the global RNG alone
            for width in self.in_widths[:-1]:
                module = build(width, out_channels, stride)
                problem = _slice_problem(module, self.widest)
                if problem:
                    raise NotSliceable(f"the op built for {width} input channels {problem}")
                # the tensors always come from `widest`; a meta module cannot run stale ones
                narrow[width] = (module.to("meta"), _mirrored_attributes(module, self.widest))
        # not submodules: they hold no tensors of their own
        self.__dict__["_narrow"] = narrow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[1]
        if width == self.in_widths[-1]:
            return self.widest(x)
        if width not in self._narrow:
            raise ValueError(f"{type(self).__name__}: built for input widths {self.in_widths}, "
                             f"got {width} channels")
        module, mirrored = self._narrow[width]
        # train/eval flags and settings such as BatchNorm momentum follow the widest module's
        widest = dict(self.widest.named_modules())
        for name, keys in mirrored:
            source, target = widest[name].__dict__, module.get_submodule(name).__dict__
            for key in keys:
                target[key] = source[key]
        return functional_call(module, self.tensors_for(module), (x,))

    def tensors_for(self, module: nn.Module) -> dict:
        """``widest``'s tensors, each sliced to the shape of the same name in ``module``:
        parameters contiguous (the arithmetic of a copied standalone module), buffers as views
        (in-place updates such as BatchNorm running statistics land in ``widest``)."""
        params = dict(self.widest.named_parameters())
        buffers = dict(self.widest.named_buffers())
        tensors = {name: _leading(params[name], p.shape).contiguous()
                   for name, p in module.named_parameters()}
        tensors.update({name: _leading(buffers[name], b.shape) for name, b in module.named_buffers()})
        return tensors

    def weights_for(self, width: int) -> nn.Module:
        """The module whose tensors, sliced by name, an input of ``width`` channels uses."""
        return self.widest

    def extra_repr(self) -> str:
        return f"in_widths={self.in_widths}"


def _leading(t: torch.Tensor, shape) -> torch.Tensor:
    return t if t.shape == shape else t[tuple(slice(0, n) for n in shape)]


def _slice_problem(narrow: nn.Module, widest: nn.Module) -> Optional[str]:
    n_mods, w_mods = dict(narrow.named_modules()), dict(widest.named_modules())
    other = sorted(f"{k or '<root>'}: {type(m).__name__}" for k, m in n_mods.items()
                   if k not in w_mods or type(m) is not type(w_mods[k]))
    if other or n_mods.keys() != w_mods.keys():
        return (f"has other submodules than the one built for the widest input "
                f"({', '.join(other) or 'fewer'})")
    for kind, mine, theirs in (("parameter", narrow.named_parameters(), widest.named_parameters()),
                               ("buffer", narrow.named_buffers(), widest.named_buffers())):
        mine, theirs = dict(mine), dict(theirs)
        if mine.keys() != theirs.keys():
            return (f"has other {kind}s than the one built for the widest input "
                    f"({sorted(mine.keys() ^ theirs.keys())})")
        for name, t in mine.items():
            big = theirs[name]
            if (t.dim() != big.dim() or t.dtype != big.dtype
                    or any(a > b for a, b in zip(t.shape, big.shape))):
                return (f"has {kind} {name} of shape {tuple(t.shape)}, not a leading slice of its "
                        f"{tuple(big.shape)} for the widest input")
    return None


def _mirrored_attributes(narrow: nn.Module, widest: nn.Module) -> list[tuple[str, list[str]]]:
    """Per submodule, the plain attributes that do not depend on the width (equal in both when
    built): ``training``, BatchNorm ``momentum``, ``eps``, ... (not ``in_channels``, ``groups``)."""
    widest_modules = dict(widest.named_modules())
    out = []
    for name, module in narrow.named_modules():
        mine, theirs = module.__dict__, widest_modules[name].__dict__
        keys = [k for k, v in theirs.items() if not k.startswith("_") and k in mine
                and not isinstance(v, (torch.Tensor, nn.Module)) and _same(v, mine[k])]
        out.append((name, keys))
    return out


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # values without a plain truth value are not mirrored
        return False


PROBE_SIZE = (2, 8, 8)  # batch, height, width of the inputs a sharing check runs


def sharing_problem(build: Builder, in_widths: list[int], out_channels: int,
                    stride: int) -> Optional[str]:
    """Why ``build`` cannot share one set of weights across ``in_widths`` (None: it can).

    It can when, for every narrower width ``w``, the op built for ``w`` holding the leading slices
    of the widest op's tensors equals the widest op fed the input zero-padded to the widest width
    (the padding contributes nothing: e.g. the op starts with a convolution or linear layer).
    Checked on random ``float64`` weights, BatchNorm statistics and inputs (:data:`PROBE_SIZE`),
    in eval and train mode, without touching the global RNG.
    """
    widths = sorted(set(in_widths))
    if len(widths) < 2:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            probe = ElasticOp(build, widths, out_channels, stride).double()
        except NotSliceable as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - any failure of the user's builder is a reason
            return f"building it for the sharing check failed ({type(e).__name__}: {e})"
        try:
            with torch.no_grad():
                return _padding_mismatch(probe)
        except Exception as e:  # noqa: BLE001
            return f"the sharing check failed ({type(e).__name__}: {e})"


def _padding_mismatch(probe: ElasticOp) -> Optional[str]:
    for p in probe.parameters():
        p.uniform_(-1, 1)
    for b in probe.buffers():
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)  # positive: BatchNorm running variances
    widest = probe.in_widths[-1]
    for width in probe.in_widths[:-1]:
        n, h, w = PROBE_SIZE
        x = torch.randn(n, width, h, w, dtype=torch.float64)
        padded = F.pad(x, (0, 0, 0, 0, 0, widest - width))
        for training in (False, True):
            probe.train(training)
            torch.manual_seed(1)  # the same dropout masks in both
            expected = probe.widest(padded)
            torch.manual_seed(1)
            got = probe(x)
            scale = max(1.0, expected.abs().max().item())
            if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-9,
                                                                 atol=1e-9 * scale):
                return (f"in {'train' if training else 'eval'} mode, the op built for {width} input "
                        f"channels with the sliced weights differs from the op built for {widest} "
                        f"fed the input zero-padded to {widest} channels (e.g. it starts with a "
                        f"BatchNorm, or its inner widths depend on the input width)")
    return None


def share_widest(op, in_widths: list[int], out_channels: int, stride: int) -> nn.Module:
    """The default weight-sharing module of ``op`` (an :class:`~nasdistill.space.ops.Op`):
    :class:`ElasticOp` when :func:`sharing_problem` finds none, else :class:`PerWidth` with that
    reason (also given as a warning, once per op and shape). The verdict is cached on ``op``."""
    widths = sorted(set(in_widths))
    verdicts = op.__dict__.setdefault("_sharing_verdicts", {})
    key = (tuple(widths), out_channels, stride)
    if key not in verdicts:
        verdicts[key] = sharing_problem(op.build, widths, out_channels, stride)
        if verdicts[key] is not None:
            warnings.warn(f"supernet: op {op.name!r} gets separate weights for each input width "
                          f"{widths} (out {out_channels}, stride {stride}): {verdicts[key]}",
                          stacklevel=3)
    reason = verdicts[key]
    if reason is None:
        return ElasticOp(op.build, widths, out_channels, stride)
    return PerWidth(op.build, widths, out_channels, stride, reason=reason)


class PerWidth(nn.Module):
    """An op instantiated once per arriving width: the fallback for an op whose weights cannot be
    shared by slicing (``reason`` says why)."""

    def __init__(self, builder: Builder, in_widths: list[int], out_channels: int, stride: int,
                 reason: str = ""):
        super().__init__()
        self.by_width = nn.ModuleDict({f"w{w}": builder(w, out_channels, stride) for w in in_widths})
        self.reason = reason

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.by_width[f"w{x.shape[1]}"](x)

    def for_width(self, width: int) -> nn.Module:
        return self.by_width[f"w{width}"]

    weights_for = for_width

    def extra_repr(self) -> str:
        return f"reason={self.reason!r}" if self.reason else ""


def weights_for(shared: nn.Module, width: int) -> nn.Module:
    """The module whose tensors (by name, sliced) a ``width``-channel input of ``shared`` uses:
    ``shared.weights_for(width)`` where defined, else ``shared`` itself."""
    method = getattr(shared, "weights_for", None)
    return method(width) if callable(method) else shared


def copy_sliced(dst: nn.Module, src: nn.Module) -> None:
    """Copy every tensor of ``dst`` from the same name in ``src``, sliced to ``dst``'s shape.

    The copies are deep (``dst`` shares no storage with ``src``).
    """
    src_state = src.state_dict()
    dst_state = dst.state_dict()
    for name, target in dst_state.items():
        if name not in src_state:
            raise KeyError(f"extraction: supernet module has no tensor {name!r}")
        source = src_state[name]
        if source.shape != target.shape:
            if source.dim() != target.dim() or any(s < t for s, t in zip(source.shape, target.shape)):
                raise ValueError(f"extraction: cannot slice {name} {tuple(source.shape)} to "
                                 f"{tuple(target.shape)}")
            source = source[tuple(slice(0, n) for n in target.shape)]
        with torch.no_grad():
            target.copy_(source)
