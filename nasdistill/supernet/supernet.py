"""The weight-sharing supernet of a search space (path-binarized, elastic input width).

``Supernet(space)`` holds one mixed layer per reconfigurable layer and the gate logits phi
(:class:`~.gates.ArchGates`). Every architecture of the space is a path; ``extract(arch)`` returns
the plain network ``space.build(arch)`` with the path's weights copied in.

A supernet can also start at layer ``start`` (GTN grafts supernet suffixes onto teacher blocks):
its input then arrives with the nominal width of layer ``start - 1``, and several supernets can
share one ``ArchGates`` so that phi is shared by label across branches.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from ..models.staged import StagedModel
from ..space.blocks import ConvBNReLU, ShapeIdentity, Skip
from ..space.ops import CustomOp, IdentityOp, ResBlocks, ZeroOp
from .elastic import (ElasticConvBNReLU, ElasticLinear, ElasticResStack, PerWidth,
                      copy_sliced)
from .gates import ArchGates, GateGrad


class MixedLayer(nn.Module):
    """All candidates of one reconfigurable layer; runs the one the gates select."""

    def __init__(self, space, index: int, in_widths: list[int], gates: ArchGates):
        super().__init__()
        layer = space.layers[index]
        self.index, self.label = index, space.layer_label(index)
        self.__dict__["gates"] = gates  # shared, not a submodule of every layer
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

    def run_candidate(self, j: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Output of candidate ``j`` on ``x``; ``None`` for the zero op (branch output 0)."""
        if j == self.zero_index:
            return None
        return self.ops[self.names[j]](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gates
        if gates.mode == "all" and gates.fixed is None and self.training:
            p = torch.softmax(gates.logits(self.label).float(), 0)
            outs = [p[j] * o for j in range(len(self.names))
                    if (o := self.run_candidate(j, x)) is not None]
            return torch.stack(outs).sum(0) if outs else x
        active, gate, indices = gates.active(self.label)
        if active == self.zero_index:
            return x
        y = self.ops[self.names[active]](x)
        if gate is not None and torch.is_grad_enabled():
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


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, num_batches: Optional[int] = None) -> nn.Module:
    """Re-estimate BatchNorm running statistics of ``model`` on ``batches`` (cumulative average).

    Weight-sharing supernet statistics are a mixture over paths; an extracted path needs its own.
    ``batches`` yields tensors or ``(x, ...)`` tuples. Returns the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    try:
        for i, batch in enumerate(batches):
            if num_batches is not None and i >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
    return model.eval()
