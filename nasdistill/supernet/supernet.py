"""The weight-sharing supernet of a search space (path-binarized, elastic input width).

``Supernet(space)`` holds one mixed layer per reconfigurable layer and the gate logits phi
(:class:`~.gates.ArchGates`). Every architecture of the space is a path; ``extract(arch)`` returns
the plain network ``space.build(arch)`` with the path's weights copied in.

A supernet can also start at layer ``start`` (GTN grafts supernet suffixes onto teacher blocks):
its input then arrives with the nominal width of layer ``start - 1``, and several supernets can
share one ``ArchGates`` so that phi is shared by label across branches.

Architecture steps (see :mod:`.gates` for the estimator): at a layer where some candidate changes
the output shape (the zero candidate at a strided or widening layer), phi's gradient needs the exact
loss with that candidate in place, so the layer runs the rest of its supernet
(:meth:`Supernet.forward_from`) and the supernet's :attr:`Supernet.path_loss` in backward. Set
``supernet.path_loss`` -- logits of this supernet for the current batch -> the scalar loss whose phi
gradient is estimated -- before the backward of an architecture step.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Mapping, Optional

import torch
from torch import nn

from ..models.staged import StagedModel
from ..space.blocks import ConvBNReLU, ShapeIdentity, Skip
from ..space.ops import CustomOp, IdentityOp, ResBlocks, ZeroOp
from .elastic import (ElasticConvBNReLU, ElasticLinear, ElasticResStack, PerWidth,
                      copy_sliced)
from .gates import ArchGates, GateGrad, frozen_bn_stats


class MixedLayer(nn.Module):
    """All candidates of one reconfigurable layer; runs the one the gates select."""

    def __init__(self, space, index: int, in_widths: list[int], gates: ArchGates):
        super().__init__()
        layer = space.layers[index]
        self.index, self.label = index, space.layer_label(index)
        self.__dict__["gates"] = gates  # shared, not a submodule of every layer
        # the Supernet holding this layer, set by it: a plain attribute, not a submodule (no cycle
        # in the module tree or state_dict; deepcopy maps it to the copy)
        self.__dict__["owner"] = None
        self.last_dgate: Optional[torch.Tensor] = None  # dL/dg of the last backward (diagnostics)
        ops = {}
        for name, op in space.layer_ops(index).items():
            if isinstance(op, ResBlocks):
                ops[name] = ElasticResStack(in_widths, layer.out_channels, op.kernel, layer.stride,
                                            op.num_blocks)
            elif isinstance(op, IdentityOp):
                ops[name] = ShapeIdentity(max(in_widths), layer.out_channels, layer.stride)
            elif isinstance(op, ZeroOp):
                ops[name] = Skip()
            elif isinstance(op, CustomOp):
                ops[name] = PerWidth(op.builder, in_widths, layer.out_channels, layer.stride)
            else:
                raise ValueError(f"supernet: unsupported candidate type {type(op).__name__}")
        self.ops = nn.ModuleDict(ops)
        self.names = list(ops)
        self.zero_index = next((i for i, n in enumerate(self.names) if isinstance(ops[n], Skip)), None)

    def run_candidate(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Output of candidate ``j`` on ``x``; the zero candidate skips the layer: ``x`` itself."""
        if j == self.zero_index:
            return x
        return self.ops[self.names[j]](x)

    def downstream_loss(self, h: torch.Tensor, path: Mapping[str, int], candidate: int) -> torch.Tensor:
        """The owning supernet's ``path_loss`` with ``h`` as this layer's output and the layers
        after it on ``path`` (label -> index), as a detached float64 tensor on the loss's device
        (no host sync); ``candidate`` (an index) names the shape-changing candidate that needs it
        in the error raised when ``path_loss`` is not set. The BatchNorm running statistics of the
        supernet are left alone. Call under ``no_grad``."""
        owner = self.__dict__.get("owner")
        if owner is None or owner.path_loss is None:
            where = ("this layer belongs to no Supernet" if owner is None else
                     "set `supernet.path_loss = lambda logits: loss(logits)` on the Supernet that "
                     "holds this layer (the loss of its logits for the current batch) before "
                     "backward")
            raise RuntimeError(
                f"phi gradient of layer {self.label!r} (index {self.index}): candidate "
                f"{self.names[candidate]!r} changes the output shape, so the estimator needs the "
                f"exact loss with it in place; {where}")
        with frozen_bn_stats(owner):
            logits = owner.forward_from(self.index + 1, h, path=path)
        return torch.as_tensor(owner.path_loss(logits)).detach().double()

    def active_loss(self, y: torch.Tensor, path: Mapping[str, int], candidate: int) -> torch.Tensor:
        """The loss of the path the forward ran: the same for every layer of the owning supernet
        (whichever layer's output it continues from), so it is computed once per ``path_loss``
        and path -- by the deepest layer that needs it, the cheapest downstream -- and reused
        (setting ``path_loss`` clears the cache)."""
        owner = self.__dict__.get("owner")
        key = tuple(sorted(path.items()))
        cached = getattr(owner, "_active_loss", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = self.downstream_loss(y, path, candidate)  # raises when there is no owner
        owner._active_loss = (key, value)
        return value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gates
        if gates.mode == "all" and gates.fixed is None and self.training:
            # DARTS-style weighted sum for the memory benchmark; the zero candidate is left out
            p = torch.softmax(gates.logits(self.label).float(), 0)
            outs = [p[j] * self.run_candidate(j, x) for j in range(len(self.names))
                    if j != self.zero_index]
            return torch.stack(outs).sum(0) if outs else x
        active, gate, indices = gates.active(self.label)
        y = self.run_candidate(active, x)
        if gate is not None and torch.is_grad_enabled():
            # also when zero is active (y is x): phi gets a gradient and dL/dy flows on to x
            y = GateGrad.apply(y, gate, x, self, active, indices)
        return y


class Supernet(StagedModel):
    """Weight-sharing supernet over ``space``.

    Args:
        space: the :class:`~nasdistill.space.SearchSpace`.
        mode: path binarization mode, ``full`` | ``two`` | ``all`` (see :mod:`.gates`).
        seed: seed of the path sampler.
        gates: share an existing :class:`ArchGates` (GTN branches) instead of creating one.
        start: first layer held (``0``: the whole network with its stem).

    Attributes:
        path_loss: ``logits -> scalar loss`` for the current batch, the loss (this supernet's share
            of it) whose phi gradient an architecture step estimates; ``None`` until the task sets
            it. Needed in backward wherever a candidate changes a layer's output shape. Suffix
            supernets sharing one ``ArchGates`` each set their own (e.g. GTN: each branch's term,
            divided by the number of branches).
    """

    def __init__(self, space, mode: str = "full", seed: int = 0, gates: Optional[ArchGates] = None,
                 start: int = 0):
        if not 0 <= start < len(space.layers):
            raise ValueError(f"supernet start layer {start} outside 0..{len(space.layers) - 1}")
        gates = gates if gates is not None else ArchGates(space, mode, seed)
        if start == 0:
            stem: nn.Module = ConvBNReLU(space.input_size[0], space.stem_channels, space.stem_kernel,
                                         space.stem_stride)
            state = space.stem_shape()
        else:
            stem, state = nn.Identity(), space.nominal_state(start)
        states = space.arriving_states(start, state)
        layers = [MixedLayer(space, i, sorted({c for c, _ in states[i - start]}), gates)
                  for i in range(start, len(space.layers))]
        head_in = max(c for c, _ in states[-1])
        if space.head_width:
            embed = nn.Sequential(ElasticConvBNReLU(head_in, space.head_width, 1, 1),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            classifier: nn.Module = nn.Linear(space.head_width, space.num_classes)
        else:
            embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            classifier = ElasticLinear(head_in, space.num_classes)
        super().__init__(stem, layers, embed, classifier)
        self.space, self.start, self.input_state = space, start, state
        self.gates = gates
        #: logits of this supernet for the current batch -> the scalar loss whose phi gradient is
        #: estimated (this supernet's share of it); needed in architecture steps (module doc)
        self.path_loss = None
        for layer in self.stages:
            layer.__dict__["owner"] = self

    @property
    def path_loss(self) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        return self.__dict__.get("_path_loss")

    @path_loss.setter
    def path_loss(self, fn: Optional[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        # a new loss (a new batch): the cached loss of the active path no longer holds
        self.__dict__["_path_loss"] = fn
        self.__dict__["_active_loss"] = None

    def forward_from(self, index: int, h: torch.Tensor,
                     path: Optional[Mapping[str, int]] = None) -> torch.Tensor:
        """Logits from ``h`` entering layer ``index`` (the space's numbering, ``start <= index <=
        len(space.layers)``; the last value runs only embed and classifier).

        The mixed layers run the current path, or ``path`` (label -> candidate index) when given.
        """
        if not self.start <= index <= len(self.space.layers):
            raise ValueError(f"forward_from: layer {index} outside {self.start}.."
                             f"{len(self.space.layers)} of this supernet")
        for layer in self.stages[index - self.start:]:
            h = layer(h) if path is None else layer.run_candidate(path[layer.label], h)
        return self.classifier(self.embed(h))

    # ------------------------------------------------------------------ parameter groups
    def arch_parameters(self) -> list[nn.Parameter]:
        """phi (gate logits), to be stepped by the architecture optimizer."""
        return list(self.gates.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but phi."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # ------------------------------------------------------------------ paths
    def sample(self, arch_grad: bool = False, uniform: bool = False) -> dict:
        return self.gates.sample(arch_grad=arch_grad, uniform=uniform)

    def set_arch(self, arch: Optional[Mapping]) -> None:
        """Run exactly ``arch`` until ``set_arch(None)`` restores sampling."""
        self.gates.set_arch(arch)

    def export(self, mode: str = "argmax", seed: Optional[int] = None) -> dict:
        """The argmax architecture of phi (deterministic), or ``mode="sample"`` with ``seed``."""
        return self.gates.export(mode, seed)

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, arch: Mapping):
        """A standalone :class:`~nasdistill.space.SpaceNet` with this path's weights deep-copied."""
        if self.start != 0:
            raise ValueError("extract() needs a supernet that starts at layer 0")
        model = self.space.build(arch)
        copy_sliced(model.stem, self.stem)
        for r, plain, mixed in zip(self.space.resolve(arch), model.stages, self.stages):
            source = mixed.ops[r.choice]
            if isinstance(source, PerWidth):
                source = source.for_width(r.in_channels)
            copy_sliced(plain, source)
        copy_sliced(model.embed, self.embed)
        copy_sliced(model.classifier, self.classifier)
        return model.train(self.training)


@contextmanager
def recalibrating_bn(bns: Iterable[nn.Module], restore: bool = False):
    """BatchNorms ``bns`` with reset running statistics that average cumulatively
    (``momentum=None``) over the batches run inside the block.

    On exit their momentum is restored and, with ``restore``, the running statistics they had
    before (copied back in place: the block may evaluate with the recalibrated statistics and
    leave the modules as they were). Train/eval modes are the caller's.
    """
    saved = [(m, m.momentum, [(b, b.clone()) for b in m.buffers(recurse=False)] if restore else ())
             for m in bns]
    for m, _, _ in saved:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    try:
        yield
    finally:
        with torch.no_grad():
            for m, momentum, buffers in saved:
                m.momentum = momentum
                for b, value in buffers:
                    b.copy_(value)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, num_batches: Optional[int] = None) -> nn.Module:
    """Re-estimate BatchNorm running statistics of ``model`` on ``batches`` (cumulative average).

    Weight-sharing supernet statistics are a mixture over paths; an extracted path needs its own.
    ``batches`` yields tensors or ``(x, ...)`` tuples. Returns the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with recalibrating_bn(bns):
        model.train()
        for i, batch in enumerate(batches):
            if num_batches is not None and i >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
    return model.eval()
