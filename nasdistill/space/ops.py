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

Every candidate is registered in the ``op`` family (:data:`OPS`, :func:`nasdistill.registry.register`):

- a built-in op family is an :class:`Op` subclass registered under its name form, whose
  ``from_name(name)`` recognises its names (``k3_d4``), so adding one is one module (the op class,
  its plain module, its ``model.py`` source (:meth:`Op.source`) and, if the generic sharing does
  not suit it, its weight-sharing module) plus its test; the space, the supernet and the export
  only ask ops::

      register("op", "k<K>_d<D>", ResBlocks)

- a custom candidate is a builder ``(in, out, stride) -> nn.Module`` registered under its name,
  with an optional ``cost`` function (metadata) ``cost(in, out, stride, (H, W)) -> (macs, params)``;
  by default the cost is measured once per shape with ``torch.utils.flop_counter``::

      register("op", "sep3", sep_conv3)
      register("op", "sep3b", sep_conv3, cost=my_cost, description="separable 3x3") They share weights through the default
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
    #: ``True`` for a parameter-free op whose output only subsamples and pads what arrives: it
    #: vanishes from an architecture's canonical form (:meth:`SearchSpace.canonical`), so two
    #: architectures that differ only in such ops build the same network.
    shape_only = False
    #: How the space's architecture tables name a layer with this op (None: :meth:`describe`).
    layer_name: ClassVar[Optional[str]] = None

    def problem_with(self, in_ch: int, out_ch: int, stride: int) -> Optional[str]:
        """Why this op cannot map ``in_ch`` channels onto a layer of ``out_ch`` (None: it can);
        a space is refused when a width that can arrive is such a problem."""
        return None

    def source(self, writer, in_ch: int, out_ch: int, stride: int) -> str:
        """The ``model.py`` expression that builds this op's plain module; ``writer``
        (:class:`nasdistill.network.model_source.SourceWriter`) copies the definitions it uses:
        ``writer.require(module, name)`` returns the local name of a copied definition."""
        raise NotImplementedError(f"op {self.name!r} ({type(self).__name__}) has no standalone source form: "
                                  "define its source(writer, in_ch, out_ch, stride)")

    def output_shape(self, in_ch: int, out_ch: int, stride: int,
                     hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        raise NotImplementedError

    def atoms(self, in_ch: int, out_ch: int, stride: int, hw: tuple[int, int]) -> tuple:
        """The network this op builds on its input, as ``((token, macs, params), ...)``: parts that
        other candidates may build too. Two architectures build the same network exactly when
        their layers' atoms, read in order, are the same sequence
        (:meth:`~.space.SearchSpace.canonical`): a stack of two basic blocks in one layer and one
        block in each of two consecutive layers of the same width are one network. The default:
        the op as one atom named after it (none for a shape-only op); a token's cost is the
        token's alone."""
        if self.shape_only:
            return ()
        macs, params = self.cost(in_ch, out_ch, stride, hw)
        return (((self.name, in_ch, out_ch, stride, tuple(hw)), int(macs), int(params)),)

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


def _builtin(name: str) -> Optional[Op]:
    for family in _families():
        op = family.from_name(name)
        if op is not None:
            return op
    return None


def _families() -> list:
    """The registered op families (:class:`Op` subclasses), in listing order."""
    return [entry for _, entry in OPS.items() if isinstance(entry, type) and issubclass(entry, Op)]


def _reserved(name: str) -> bool:
    try:
        return _builtin(name) is not None
    except ValueError:  # a built-in form with bad values (k4_d2) is still that family's name
        return True


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

    def atoms(self, in_ch, out_ch, stride, hw):
        """One atom per basic block, each named as the one-block candidate of its kernel
        (``k3_d4`` = ``k3_d2`` then ``k3_d2`` at the layer's width and stride 1)."""
        block = ResBlocks(name=f"k{self.kernel}_d2", kernel=self.kernel, depth=2)
        out, cin, s, size = [], in_ch, stride, tuple(hw)
        for _ in range(self.num_blocks):
            macs, params = block.cost(cin, out_ch, s, size)
            out.append(((block.name, cin, out_ch, s, size), int(macs), int(params)))
            _, size = block.output_shape(cin, out_ch, s, size)
            cin, s = out_ch, 1
        return tuple(out)

    def describe(self):
        return f"ResBlock k{self.kernel} x{self.num_blocks} ({self.depth} convs)"

    def source(self, writer, in_ch, out_ch, stride):
        stack = writer.require(ResStack.__module__, ResStack.__name__)
        return f"{stack}({in_ch}, {out_ch}, {self.kernel}, {stride}, {self.num_blocks})"


@dataclass(frozen=True)
class IdentityOp(Op):
    name: str = "identity"
    shape_only = True
    layer_name: ClassVar[Optional[str]] = "IdentityLayer"
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

    def problem_with(self, in_ch, out_ch, stride):
        if in_ch > out_ch:
            return (f"'identity' cannot map the {in_ch} channels that can arrive onto {out_ch}; remove it or "
                    "widen the layer")
        return None

    def source(self, writer, in_ch, out_ch, stride):
        return f"{writer.require(ShapeIdentity.__module__, ShapeIdentity.__name__)}({in_ch}, {out_ch}, {stride})"


@dataclass(frozen=True)
class ZeroOp(Op):
    name: str = "zero"
    skips_layer = True
    shape_only = True
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

    def source(self, writer, in_ch, out_ch, stride):
        return f"{writer.require(Skip.__module__, Skip.__name__)}()"


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

    def source(self, writer, in_ch, out_ch, stride):
        name = writer.callable_name(self.builder, f"the builder of custom op {self.name!r}")
        return f"{name}({in_ch}, {out_ch}, {stride})"


def _op_entry(name: str, obj, meta: dict):
    """An op family (an :class:`Op` subclass with ``from_name``), stored as it is, or a custom op
    (a builder, with the metadata ``cost`` and ``description``), stored as a :class:`CustomOp`."""
    if isinstance(obj, type) and issubclass(obj, Op):
        if not callable(getattr(obj, "from_name", None)):
            raise TypeError(f"op family {name!r}: {obj!r} must define a from_name(name) classmethod")
        if meta:
            raise TypeError(f"op family {name!r}: an op family takes no metadata, got {sorted(meta)}")
        return obj
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise ValueError(f"op name {name!r} must start with a letter and use only letters, digits, _ and -")
    if _reserved(name):
        raise ValueError(f"op name {name!r} is reserved for a built-in candidate")
    if not callable(obj):
        raise ValueError(f"op {name!r}: the builder must be callable (in, out, stride) -> nn.Module")
    unknown = sorted(set(meta) - {"cost", "description"})
    if unknown:
        raise TypeError(f"op {name!r}: unknown metadata {unknown}; a custom op declares cost and description")
    return CustomOp(name=name, builder=obj, cost_fn=meta.get("cost"), description=meta.get("description") or "")


#: Every candidate: op families (their names recognised by ``from_name``) and custom ops by name.
#: Re-running a definition replaces its entry.
OPS: Registry = Registry("op", make_entry=_op_entry, replace=True, what="candidate op")
OPS.register("k<K>_d<D>", ResBlocks)
OPS.register("identity", IdentityOp)
OPS.register("zero", ZeroOp)


def get_op(spec: "str | Op") -> Op:
    """Resolve a candidate given as an :class:`Op` or by name (``k3_d4``, ``identity``, ...)."""
    if isinstance(spec, Op):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"a candidate must be an op name or an Op, got {spec!r}")
    op = _builtin(spec)
    if op is not None:
        return op
    custom = [n for n, entry in OPS.items() if isinstance(entry, CustomOp)]
    if spec in custom:
        return OPS.get(spec)
    families = _families()
    examples = [n for family in families for n in getattr(family, "name_examples", ())]
    forms = ", ".join(getattr(family, "name_form", family.__name__) for family in families)
    raise ValueError(f"unknown candidate op {spec!r}:{did_you_mean(spec, [*examples, *custom])} "
                     f"use {forms}, or register it with nasdistill.register(\"op\", name, builder); registered: "
                     f"{sorted(custom)}")


def resnet_choices(kernels=(3, 5), depths=(2, 4, 6)) -> list[str]:
    """Names of ResNet block-stack candidates, e.g. ``['k3_d2', 'k3_d4', ...]``."""
    return [f"k{k}_d{d}" for k in kernels for d in depths]
