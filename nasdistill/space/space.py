"""Search spaces: a stem, an ordered list of reconfigurable layers, a head.

Semantics of skipping (the same in a supernet and in a standalone model)
------------------------------------------------------------------------
- ``zero`` removes the layer: its input passes through unchanged, channels *and* resolution. The
  next active layer (or the head's 1x1 convolution) reads whatever width arrives. A zero op never
  multiplies a signal by zero on the main path, so no architecture can erase the input: the
  all-``zero`` network is ``stem -> head``.
- ``identity`` is the parameter-free identity onto the layer's nominal shape: it subsamples by the
  layer's stride and appends zero channels up to the layer's width (ResNet "option A"). It differs
  from ``zero`` whenever the arriving shape differs from the layer's nominal shape; where the two
  coincide (arriving width == layer width and stride 1) they are the same network, and
  :meth:`SearchSpace.canonical` / :meth:`SearchSpace.arch_id` / :meth:`SearchSpace.size` treat
  them as one architecture.
- A supernet slices each candidate's input channels from weights allocated for the widest width
  that can arrive (Once-for-All elastic width), so every architecture is a path of the supernet
  and extracting it gives exactly :meth:`SearchSpace.build`'s network.

An architecture is a plain JSON mapping ``label -> choice``. Layers sharing a label are tied: they
always take the same choice.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from ..models.staged import StagedModel
from .blocks import ConvBNReLU, SpaceHead
from .ops import Op, conv_cost, conv_out, get_op

Arch = dict  # label -> choice name


@dataclass
class Layer:
    """A reconfigurable layer: nominal width, stride and candidate ops."""

    out_channels: int
    stride: int = 1
    candidates: Sequence[Any] = ()
    label: Optional[str] = None


@dataclass(frozen=True)
class ResolvedLayer:
    """One layer of a concrete architecture, with the shapes that actually arrive."""

    index: int
    label: str
    choice: str
    op: Op
    in_channels: int
    out_channels: int      # channels this layer outputs (== in_channels when skipped)
    stride: int            # the layer's nominal stride
    in_hw: tuple
    out_hw: tuple

    @property
    def skipped(self) -> bool:
        return self.op.skips_layer


class SpaceNet(StagedModel):
    """A standalone network built from a search space: plain modules, copied or fresh weights."""

    def __init__(self, stem, stages, embed, classifier, arch: Arch, space_name: str):
        super().__init__(stem, stages, embed, classifier)
        self.arch = dict(arch)
        self.space_name = space_name


@dataclass
class SearchSpace:
    """A search space written in Python.

    Example::

        SPACE = SearchSpace(
            name="my_space", input_size=(3, 32, 32), num_classes=10, stem_channels=16,
            layers=[Layer(32, 1, ["k3_d2", "k5_d2", "zero"]),
                    Layer(64, 2, ["k3_d2", "k3_d4", "identity", "zero"])],
            head_width=256)
    """

    name: str
    layers: Sequence[Layer]
    input_size: tuple = (3, 32, 32)
    num_classes: int = 100
    stem_channels: int = 16
    stem_kernel: int = 3
    stem_stride: int = 1
    head_width: Optional[int] = 1280
    _ops: list = field(init=False, repr=False)
    _labels: list = field(init=False, repr=False)

    def __post_init__(self):
        if not self.layers:
            raise ValueError(f"space {self.name!r}: needs at least one layer")
        if len(self.input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in self.input_size):
            raise ValueError(f"space {self.name!r}: input_size must be (C, H, W) positive ints, "
                             f"got {self.input_size!r}")
        self.input_size = tuple(self.input_size)
        self.layers = list(self.layers)
        self._ops, self._labels, label_choices = [], [], {}
        for i, layer in enumerate(self.layers):
            where = f"space {self.name!r}, layer {i + 1}"
            if not isinstance(layer.out_channels, int) or layer.out_channels <= 0:
                raise ValueError(f"{where}: out_channels must be a positive int, got {layer.out_channels!r}")
            if not isinstance(layer.stride, int) or layer.stride <= 0:
                raise ValueError(f"{where}: stride must be a positive int, got {layer.stride!r}")
            if not layer.candidates:
                raise ValueError(f"{where}: no candidate ops")
            ops = [get_op(c) for c in layer.candidates]
            names = [op.name for op in ops]
            if len(set(names)) != len(names):
                raise ValueError(f"{where}: duplicate candidates in {names}")
            label = layer.label or f"layer{i + 1}"
            if label in label_choices and label_choices[label] != names:
                raise ValueError(f"{where}: label {label!r} ties layers with different candidates "
                                 f"{label_choices[label]} and {names}; tied layers need the same list")
            label_choices[label] = names
            self._ops.append({op.name: op for op in ops})
            if label not in self._labels:
                self._labels.append(label)
        self._layer_labels = [layer.label or f"layer{i + 1}" for i, layer in enumerate(self.layers)]
        self._label_choices = label_choices
        self._arriving = self._arriving_states()
        for i, layer in enumerate(self.layers):
            widest = max(ch for ch, _ in self._arriving[i])
            for op in self._ops[i].values():
                problem = op.problem_with(widest, layer.out_channels, layer.stride)
                if problem:
                    raise ValueError(f"space {self.name!r}, layer {i + 1}: {problem}")

    def adapted(self, num_classes: Optional[int] = None, input_size: Optional[tuple] = None) -> "SearchSpace":
        """This space for ``num_classes`` classes and ``input_size`` (C, H, W) inputs: the same
        stem, layers and head (the stem reads C channels, the classifier has ``num_classes``
        outputs). Returns ``self`` when nothing changes."""
        changes = {}
        if num_classes is not None and int(num_classes) != self.num_classes:
            changes["num_classes"] = int(num_classes)
        if input_size is not None and tuple(int(v) for v in input_size) != tuple(self.input_size):
            changes["input_size"] = tuple(int(v) for v in input_size)
        if not changes:
            return self
        import dataclasses

        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ description
    @property
    def labels(self) -> list[str]:
        """The labels of the space, in layer order (tied labels once)."""
        return list(self._labels)

    def choices(self, label: str) -> list[str]:
        if label not in self._label_choices:
            raise ValueError(f"unknown label {label!r}; labels of {self.name!r}: {self._labels}")
        return list(self._label_choices[label])

    def layer_label(self, index: int) -> str:
        return self._layer_labels[index]

    def layer_ops(self, index: int) -> dict:
        """``{name: Op}`` of layer ``index`` (0-based)."""
        return dict(self._ops[index])

    def stem_shape(self) -> tuple:
        c, h, w = self.input_size
        k, s = self.stem_kernel, self.stem_stride
        return self.stem_channels, (conv_out(h, k, s), conv_out(w, k, s))

    def _step(self, i: int, op: Op, state: tuple) -> tuple:
        ch, hw = state
        layer = self.layers[i]
        return op.output_shape(ch, layer.out_channels, layer.stride, hw)

    def _arriving_states(self) -> list[set]:
        return self.arriving_states(0, self.stem_shape())

    def arriving_states(self, start: int, state: tuple) -> list[set]:
        """Sets of (channels, (H, W)) that can arrive at layers ``start..L`` (L = the head) when
        ``state`` arrives at layer ``start``."""
        states = [{(state[0], tuple(state[1]))}]
        for i in range(start, len(self.layers)):
            nxt = {self._step(i, op, s) for s in states[-1] for op in self._ops[i].values()}
            states.append(nxt)
        return states

    def nominal_state(self, index: int) -> tuple:
        """(channels, (H, W)) arriving at layer ``index`` when no earlier layer is skipped."""
        ch, hw = self.stem_shape()
        for i in range(index):
            ch = self.layers[i].out_channels
            hw = tuple(conv_out(v, 3, self.layers[i].stride) for v in hw)
        return ch, hw

    def possible_in_widths(self, index: int) -> list[int]:
        """Every width that can arrive at layer ``index`` (``len(layers)`` = the head)."""
        return sorted({ch for ch, _ in self._arriving[index]})

    # ------------------------------------------------------------------ architectures
    def validate(self, arch: Any) -> Arch:
        """Check ``arch`` and return it as a plain dict; raise ``ValueError`` naming the problem."""
        if not isinstance(arch, Mapping):
            raise ValueError(f"an architecture of {self.name!r} is a mapping label -> choice, "
                             f"got {type(arch).__name__}")
        for key in arch:
            if key not in self._label_choices:
                raise ValueError(f"unknown label {key!r} in architecture for space {self.name!r}; "
                                 f"valid labels: {self._labels}")
        for label in self._labels:
            allowed = self._label_choices[label]
            if label not in arch:
                raise ValueError(f"architecture for space {self.name!r} is missing label {label!r}; "
                                 f"allowed choices: {allowed}")
            value = arch[label]
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"label {label!r}: bad choice {value!r}; allowed choices: {allowed}")
        return {label: arch[label] for label in self._labels}

    def resolve(self, arch: Mapping) -> list[ResolvedLayer]:
        """The concrete layers of ``arch`` with the widths and resolutions that arrive."""
        arch = self.validate(arch)
        state = self.stem_shape()
        out = []
        for i, layer in enumerate(self.layers):
            label = self._layer_labels[i]
            op = self._ops[i][arch[label]]
            ch, hw = self._step(i, op, state)
            out.append(ResolvedLayer(i, label, op.name, op, state[0], ch, layer.stride, state[1], hw))
            state = (ch, hw)
        return out

    def sample(self, seed: Optional[int] = None) -> Arch:
        """A uniformly random architecture; the same seed gives the same architecture."""
        rng = random.Random(seed)
        return {label: rng.choice(self._label_choices[label]) for label in self._labels}

    def canonical(self, arch: Mapping) -> tuple:
        """The network ``arch`` denotes, independent of how it is spelled.

        A tuple of the layers' atoms (:meth:`~.ops.Op.atoms`: ``(choice, in_channels, out_channels,
        stride, in_hw)`` for a layer with parameters, one per basic block for a stack of blocks),
        then ``("end", channels, hw)`` read by the head. Shape-only layers
        (:attr:`~.ops.Op.shape_only`: ``zero``, ``identity``) vanish: a run of them maps the shape before the run to the shape
        after it, both fixed by the neighbouring tokens, and whatever their order they compute the
        same subsample-and-pad. Two architectures build the same network exactly when their
        canonical forms are equal.
        """
        layers = self.resolve(arch)
        tokens = [t for r in layers for t, _, _ in self._atoms(r.index, r.choice, (r.in_channels, r.in_hw))]
        last = layers[-1]
        return tuple(tokens) + (("end", last.out_channels, last.out_hw),)

    def _atoms(self, i: int, name: str, state: tuple) -> tuple:
        """``((token, macs, params), ...)`` of candidate ``name`` of layer ``i`` on input ``state``
        (:meth:`~.ops.Op.atoms`)."""
        layer = self.layers[i]
        return self._ops[i][name].atoms(state[0], layer.out_channels, layer.stride, tuple(state[1]))

    def arch_id(self, arch: Mapping) -> str:
        """A stable 10-hex-digit id of the network ``arch`` denotes (for file names and reports)."""
        key = json.dumps([self.name, [list(t) for t in self.canonical(arch)]], separators=(",", ":"),
                         default=list)
        return hashlib.sha1(key.encode()).hexdigest()[:10]

    def size(self) -> int:
        """Number of distinct networks (distinct :meth:`canonical` forms) of the space, counted
        on its layered graph (:class:`~.graph.SpaceGraph`)."""
        from .graph import space_graph

        return space_graph(self).count_networks()

    def architectures(self):
        """Iterate over every label assignment (beware: the space may be huge)."""
        import itertools

        for combo in itertools.product(*(self._label_choices[l] for l in self._labels)):
            yield dict(zip(self._labels, combo))

    # ------------------------------------------------------------------ cost
    def stem_cost(self) -> tuple[int, int]:
        c, h, w = self.input_size
        macs, params, _ = conv_cost(c, self.stem_channels, self.stem_kernel, self.stem_stride, (h, w))
        return macs, params

    def head_cost(self, in_channels: int, hw: tuple) -> tuple[int, int]:
        macs = params = 0
        width = in_channels
        if self.head_width:
            m, p, _ = conv_cost(in_channels, self.head_width, 1, 1, hw)
            macs, params, width = m, p, self.head_width
        return macs + width * self.num_classes, params + width * self.num_classes + self.num_classes

    def cost(self, arch: Mapping) -> dict:
        """``{"macs": int, "params": int}`` of the built network for one input of ``input_size``.

        MACs count convolutions and the linear layer (``torch.utils.flop_counter`` FLOPs / 2);
        params count every trainable parameter (BatchNorm affine included).
        """
        macs, params = self.stem_cost()
        layers = self.resolve(arch)
        for r in layers:
            m, p = r.op.cost(r.in_channels, self.layers[r.index].out_channels, r.stride, r.in_hw)
            macs, params = macs + m, params + p
        last = layers[-1]
        m, p = self.head_cost(last.out_channels, last.out_hw)
        return {"macs": int(macs + m), "params": int(params + p)}

    def cost_range(self) -> dict:
        """Minimum and maximum MACs and params over the space (exact, dynamic programming over
        its layered graph): ``{"macs_min", "macs_max", "params_min", "params_max"}``."""
        from .graph import space_graph

        return space_graph(self).cost_range()

    def build(self, arch: Mapping) -> SpaceNet:
        """A standalone network (plain modules, fresh weights) for ``arch``."""
        layers = self.resolve(arch)
        stem = ConvBNReLU(self.input_size[0], self.stem_channels, self.stem_kernel, self.stem_stride)
        stages = [r.op.build(r.in_channels, self.layers[r.index].out_channels, r.stride) for r in layers]
        width = layers[-1].out_channels
        embed = SpaceHead(width, self.head_width)
        classifier = nn.Linear(self.head_width or width, self.num_classes)
        return SpaceNet(stem, stages, embed, classifier, self.validate(arch), self.name)

    def describe_arch(self, arch: Mapping) -> str:
        """A table of the concrete layers of ``arch`` (like the GTN supplement's tables)."""
        rows = [("ConvLayer", self.input_size[0], self.stem_channels, self.stem_kernel, self.stem_stride)]
        layers = self.resolve(arch)
        for r in layers:
            if r.skipped:
                rows.append((f"{r.label}: skipped", r.in_channels, r.out_channels, "-", "-"))
            elif r.op.layer_name:
                rows.append((f"{r.label}: {r.op.layer_name}", r.in_channels, r.out_channels, "-", r.stride))
            else:
                rows.append((f"{r.label}: {r.op.describe()}", r.in_channels, r.out_channels,
                             getattr(r.op, "kernel", "-"), r.stride))
        width = layers[-1].out_channels
        if self.head_width:
            rows.append(("ConvLayer", width, self.head_width, 1, 1))
            width = self.head_width
        rows.append(("LinearLayer", width, self.num_classes, "-", "-"))
        head = ("Layer (type)", "In", "Out", "Kernel", "Stride")
        return _table([head] + [tuple(str(v) for v in r) for r in rows])

    def summary(self) -> str:
        """Layers, candidates, number of architectures, MACs/params range."""
        lines = [f"space {self.name}: input {self.input_size}, {self.num_classes} classes",
                 f"stem: ConvLayer {self.input_size[0]}->{self.stem_channels} "
                 f"k{self.stem_kernel} s{self.stem_stride}"]
        rows = [("layer", "label", "out", "stride", "in widths", "candidates")]
        for i, layer in enumerate(self.layers):
            rows.append((str(i + 1), self._layer_labels[i], str(layer.out_channels), str(layer.stride),
                         ",".join(map(str, self.possible_in_widths(i))), " ".join(self._ops[i])))
        lines.append(_table(rows))
        head = f"head: ConvLayer ->{self.head_width} k1, " if self.head_width else "head: "
        lines.append(head + f"pool, Linear ->{self.num_classes}")
        rng = self.cost_range()
        lines.append(f"architectures: {self.size():,}")
        lines.append(f"MACs: {rng['macs_min']:,} .. {rng['macs_max']:,}")
        lines.append(f"params: {rng['params_min']:,} .. {rng['params_max']:,}")
        return "\n".join(lines)


def _table(rows: list[tuple]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
