"""Candidate operations of a reconfigurable layer.

Every candidate knows, for a given arriving shape: the shape it produces, how to build itself as
plain modules, and its cost (MACs, parameters) without building anything. For a supernet it also
builds its own weight-sharing module and extracts its own standalone module from it
(Once-for-All's ``get_active_subnet``, on each op):

- :meth:`Op.build_shared` ``(in_widths, out, stride)``: one module that runs inputs of every width
  in ``in_widths`` from one set of weights (allocated for the widest input, sliced per call);
- :meth:`Op.extract` ``(shared, in, out, stride)``: ``build(in, out, stride)`` with deep copies of
  the weights ``shared`` uses for ``in``-wide inputs, so its output equals the supernet's.

Built-in candidates
-------------------
``k{K}_d{D}``  a stack of D/2 ResNet basic blocks with kernel K (D = 2, 4 or 6 convolutions).
               The first block carries the layer's stride and the in->out width change.
``identity``   parameter-free identity onto the layer's nominal shape: subsample by the stride,
               append zero channels up to the layer width (see :class:`~.blocks.ShapeIdentity`).
``zero``       the layer is skipped: its input passes through unchanged (channels and resolution).

A built-in op family is an :class:`Op` subclass decorated with :func:`builtin_op`: its
``from_name(name)`` recognises its names (``k3_d4``), so adding one is one module (the op class,
its plain module and, if the generic sharing does not suit it, its weight-sharing module) plus its
test; the space and the supernet only ask ops.

Custom candidates are registered with :func:`register_op` (a builder ``(in, out, stride) ->
nn.Module`` and, optionally, a cost function; by default the cost is measured once per shape
with ``torch.utils.flop_counter``). They share weights through the default
:meth:`Op.build_shared` (see :func:`nasdistill.space.elastic.share_widest`): one module built
for the widest input, narrower inputs run the op built for their width with leading slices of its
tensors, when that is the widest op on the zero-padded input (checked numerically); otherwise
one copy per width, with the reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

import torch
from torch import nn

from ..registry import Registry, did_you_mean
from .blocks import ResStack, ShapeIdentity, Skip


_RES_NAME = re.compile(r"^k(\d+)_d(\d+)$")


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a convolution with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def conv_cost(in_ch: int, out_ch: int, kernel: int, stride: int, hw: tuple[int, int],
              bn: bool = True) -> tuple[int, int, tuple[int, int]]:
    """MACs, parameters and output size of ``Conv2d(bias=False)`` (+ BatchNorm)."""
    oh, ow = conv_out(hw[0], kernel, stride), conv_out(hw[1], kernel, stride)
    params = kernel * kernel * in_ch * out_ch + (2 * out_ch if bn else 0)
    return kernel * kernel * in_ch * out_ch * oh * ow, params, (oh, ow)


@dataclass(frozen=True)
class Op:
    """Base class of a candidate operation."""

    name: str

    #: ``True`` for the op that removes the layer (its input passes through).
    skips_layer = False

    def output_shape(self, in_ch: int, out_ch: int, stride: int,
                     hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        raise NotImplementedError

    def build(self, in_ch: int, out_ch: int, stride: int) -> nn.Module:
        raise NotImplementedError

    def cost(self, in_ch: int, out_ch: int, stride: int, hw: tuple[int, int]) -> tuple[int, int]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    # ------------------------------------------------------------------ weight sharing
    def build_shared(self, in_widths: list[int], out_channels: int, stride: int) -> nn.Module:
        """The module this op contributes to a supernet layer that inputs of every width in
        ``in_widths`` can reach: one set of weights for all of them.

        Default: :func:`~nasdistill.space.elastic.share_widest` (the op built for the widest
        input, its tensors sliced for narrower ones, where that equals feeding the widest op the
        zero-padded input; otherwise one copy per width, with the reason).
        """
        from .elastic import share_widest

        return share_widest(self, in_widths, out_channels, stride)

    def extract(self, shared: nn.Module, in_channels: int, out_channels: int,
                stride: int) -> nn.Module:
        """A standalone ``build(in_channels, out_channels, stride)`` holding deep copies of the
        weights ``shared`` (this op's :meth:`build_shared` module) uses for ``in_channels``-wide
        inputs: its output equals ``shared``'s on such inputs.

        Default: every tensor of the plain module copied from the same name in ``shared`` (or in
        ``shared.weights_for(in_channels)`` where ``shared`` defines it), sliced to its shape.
        """
        from .elastic import copy_sliced, weights_for

        plain = self.build(in_channels, out_channels, stride)
        copy_sliced(plain, weights_for(shared, in_channels))
        return plain


#: Built-in op families (:class:`Op` subclasses with ``from_name``), in registration order.
BUILTIN_OPS: Registry[type] = Registry("built-in op family")


def builtin_op(cls: type) -> type:
    """Class decorator: make the :class:`Op` subclass ``cls`` a family of built-in candidates.

    ``cls.from_name(name)`` returns the op a name denotes or ``None`` (it may raise ``ValueError``
    for a name of its form with bad values); ``cls.name_form`` says how its names are written and
    ``cls.name_examples`` lists a few (for error messages). Its names are reserved: no custom op
    can be registered under them. Re-running a definition replaces it.
    """
    if not (isinstance(cls, type) and issubclass(cls, Op) and callable(getattr(cls, "from_name", None))):
        raise TypeError(f"builtin_op: {cls!r} must be an Op subclass with a from_name(name) classmethod")
    BUILTIN_OPS.register(f"{cls.__module__}.{cls.__qualname__}", cls, replace=True)
    return cls


def _builtin(name: str) -> Optional[Op]:
    for _, family in BUILTIN_OPS.items():
        op = family.from_name(name)
        if op is not None:
            return op
    return None


def _reserved(name: str) -> bool:
    try:
        return _builtin(name) is not None
    except ValueError:  # a built-in form with bad values (k4_d2) is still that family's name
        return True


@builtin_op
@dataclass(frozen=True)
class ResBlocks(Op):
    """``depth // 2`` ResNet basic blocks of kernel ``kernel``."""

    kernel: int = 3
    depth: int = 2
    name_form: ClassVar[str] = "k<kernel>_d<convs> (e.g. k3_d4)"
    name_examples: ClassVar[tuple] = ("k3_d2", "k3_d4", "k3_d6", "k5_d2", "k5_d4", "k5_d6")

    def __post_init__(self):
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"ResNet candidate depth counts convolutions and must be even and >= 2, "
                             f"got {self.depth}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"ResNet candidate kernel must be odd, got {self.kernel}")

    @classmethod
    def from_name(cls, name: str) -> Optional["ResBlocks"]:
        m = _RES_NAME.match(name)
        return cls(name=name, kernel=int(m.group(1)), depth=int(m.group(2))) if m else None

    @property
    def num_blocks(self) -> int:
        return self.depth // 2

    def output_shape(self, in_ch, out_ch, stride, hw):
        return out_ch, (conv_out(hw[0], self.kernel, stride), conv_out(hw[1], self.kernel, stride))

    def build(self, in_ch, out_ch, stride):
        return ResStack(in_ch, out_ch, self.kernel, stride, self.num_blocks)

    def build_shared(self, in_widths, out_channels, stride):
        from .elastic import ElasticResStack

        return ElasticResStack(in_widths, out_channels, self.kernel, stride, self.num_blocks)

    def cost(self, in_ch, out_ch, stride, hw):
        macs = params = 0
        cin, s = in_ch, stride
        for _ in range(self.num_blocks):
            m1, p1, ohw = conv_cost(cin, out_ch, self.kernel, s, hw)
            m2, p2, _ = conv_cost(out_ch, out_ch, self.kernel, 1, ohw)
            macs, params = macs + m1 + m2, params + p1 + p2
            if s != 1 or cin != out_ch:
                m3, p3, _ = conv_cost(cin, out_ch, 1, s, hw)
                macs, params = macs + m3, params + p3
            cin, s, hw = out_ch, 1, ohw
        return macs, params

    def describe(self):
        return f"ResBlock k{self.kernel} x{self.num_blocks} ({self.depth} convs)"


@builtin_op
@dataclass(frozen=True)
class IdentityOp(Op):
    name: str = "identity"
    name_form: ClassVar[str] = "'identity'"
    name_examples: ClassVar[tuple] = ("identity",)

    @classmethod
    def from_name(cls, name: str) -> Optional["IdentityOp"]:
        return cls() if name == "identity" else None

    def output_shape(self, in_ch, out_ch, stride, hw):
        return out_ch, (-(-hw[0] // stride), -(-hw[1] // stride))

    def build(self, in_ch, out_ch, stride):
        return ShapeIdentity(in_ch, out_ch, stride)

    def build_shared(self, in_widths, out_channels, stride):
        return ShapeIdentity(max(in_widths), out_channels, stride)  # pads whatever width arrives

    def cost(self, in_ch, out_ch, stride, hw):
        return 0, 0

    def describe(self):
        return "identity (parameter-free, onto the layer shape)"


@builtin_op
@dataclass(frozen=True)
class ZeroOp(Op):
    name: str = "zero"
    skips_layer = True
    name_form: ClassVar[str] = "'zero'"
    name_examples: ClassVar[tuple] = ("zero",)

    @classmethod
    def from_name(cls, name: str) -> Optional["ZeroOp"]:
        return cls() if name == "zero" else None

    def output_shape(self, in_ch, out_ch, stride, hw):
        return in_ch, hw

    def build(self, in_ch, out_ch, stride):
        return Skip()

    def build_shared(self, in_widths, out_channels, stride):
        return Skip()

    def cost(self, in_ch, out_ch, stride, hw):
        return 0, 0

    def describe(self):
        return "zero (layer skipped)"


CostFn = Callable[[int, int, int, tuple], tuple]


@dataclass(frozen=True)
class CustomOp(Op):
    """A user-registered candidate.

    ``builder(in_channels, out_channels, stride)`` returns an ``nn.Module`` mapping
    ``(N, in, H, W)`` to ``(N, out, H', W')``. ``cost(in, out, stride, (H, W))`` returns
    ``(macs, params)``; when omitted, the module is built once per shape and measured
    (parameters counted, MACs = FLOPs / 2 from ``torch.utils.flop_counter``). In a supernet it
    shares one set of weights across arriving widths where slicing allows (the default
    :meth:`Op.build_shared`), else keeps one copy per width and says why.
    """

    builder: Callable[[int, int, int], nn.Module] = field(default=None, compare=False)
    cost_fn: Optional[CostFn] = field(default=None, compare=False)
    description: str = ""
    _probe_cache: dict = field(default_factory=dict, compare=False, repr=False)

    def _probe(self, in_ch, out_ch, stride, hw):
        key = (in_ch, out_ch, stride, tuple(hw))
        cache = self._probe_cache
        if key not in cache:
            from torch.utils.flop_counter import FlopCounterMode

            module = self.builder(in_ch, out_ch, stride).eval()
            x = torch.zeros(1, in_ch, *hw)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                y = module(x)
            if y.dim() != 4 or y.shape[1] != out_ch:
                raise ValueError(f"custom op {self.name!r} built for in={in_ch}, out={out_ch}, "
                                 f"stride={stride} produced shape {tuple(y.shape)}; it must produce "
                                 f"(N, {out_ch}, H, W)")
            params = sum(p.numel() for p in module.parameters())
            cache[key] = (counter.get_total_flops() // 2, params, (y.shape[2], y.shape[3]))
        return cache[key]

    def output_shape(self, in_ch, out_ch, stride, hw):
        return out_ch, self._probe(in_ch, out_ch, stride, hw)[2]

    def build(self, in_ch, out_ch, stride):
        return self.builder(in_ch, out_ch, stride)

    def cost(self, in_ch, out_ch, stride, hw):
        if self.cost_fn is not None:
            macs, params = self.cost_fn(in_ch, out_ch, stride, tuple(hw))
            return int(macs), int(params)
        macs, params, _ = self._probe(in_ch, out_ch, stride, hw)
        return int(macs), int(params)

    def describe(self):
        return self.description or f"custom op {self.name}"


#: Custom candidate ops by name (built-in names are recognised by their families, BUILTIN_OPS).
OPS: Registry[Op] = Registry("candidate op")


def register_op(name: str, builder: Callable[[int, int, int], nn.Module],
                cost: Optional[CostFn] = None, description: str = "") -> CustomOp:
    """Register a custom candidate op under ``name`` and return it.

    Example::

        def sep_conv(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                                 nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU())
        register_op("sep3", sep_conv)
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise ValueError(f"op name {name!r} must start with a letter and use only letters, digits, _ and -")
    if _reserved(name):
        raise ValueError(f"op name {name!r} is reserved for a built-in candidate")
    if not callable(builder):
        raise ValueError(f"register_op({name!r}): builder must be callable (in, out, stride) -> nn.Module")
    op = CustomOp(name=name, builder=builder, cost_fn=cost, description=description)
    OPS.register(name, op, replace=True)  # re-running a definition replaces it
    return op


def get_op(spec: "str | Op") -> Op:
    """Resolve a candidate given as an :class:`Op` or by name (``k3_d4``, ``identity``, ...)."""
    if isinstance(spec, Op):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"a candidate must be an op name or an Op, got {spec!r}")
    op = _builtin(spec)
    if op is not None:
        return op
    if spec in OPS:
        return OPS.get(spec)
    families = [family for _, family in BUILTIN_OPS.items()]
    examples = [n for family in families for n in getattr(family, "name_examples", ())]
    forms = ", ".join(getattr(family, "name_form", family.__name__) for family in families)
    raise ValueError(f"unknown candidate op {spec!r}:{did_you_mean(spec, [*examples, *OPS])} "
                     f"use {forms}, or register it with nasdistill.space.register_op; registered: "
                     f"{sorted(OPS)}")


def resnet_choices(kernels=(3, 5), depths=(2, 4, 6)) -> list[str]:
    """Names of ResNet block-stack candidates, e.g. ``['k3_d2', 'k3_d4', ...]``."""
    return [f"k{k}_d{d}" for k in kernels for d in depths]
