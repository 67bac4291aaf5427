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
(:meth:`Supernet.forward_from`) and that forward's path loss in backward: ``logits of this
supernet for this batch -> the scalar loss whose phi gradient is estimated``. Pass it with the
forward, ``supernet(x, path_loss=fn)``; it belongs to that forward's autograd graph (a
:class:`PathLoss` held by the gates' autograd nodes, with the cached loss of the active path), so
two forwards never share a loss or its cache. Setting the attribute ``supernet.path_loss = fn``
(before backward) still works for a forward given none: it is read in backward, and the cache
still belongs to the forward.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import nn

from ..models.staged import StagedModel
from ..space.blocks import ConvBNReLU
from ..space.elastic import ElasticConvBNReLU, ElasticLinear, copy_sliced
from .gates import ArchGates, GateGrad, frozen_bn_stats


class PathLoss:
    """The path loss of one forward of a :class:`Supernet` and its cache (module docstring).

    ``fn`` (``logits -> scalar``) was given with the forward; None reads the owning supernet's
    :attr:`Supernet.path_loss` attribute when backward first needs it. ``cache`` holds the loss of
    the path the forward ran (the same whichever layer continues from it): computed once per
    forward, by the deepest layer that needs it.
    """

    __slots__ = ("owner", "fn", "cache")

    def __init__(self, owner, fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.owner, self.fn, self.cache = owner, fn, None

    def resolve(self) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        if self.fn is not None:
            return self.fn
        return None if self.owner is None else self.owner.path_loss


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
        candidates = space.layer_ops(index)
        # each op builds its own weight-sharing module (and extracts from it, Supernet.extract)
        self.ops = nn.ModuleDict({name: op.build_shared(in_widths, layer.out_channels, layer.stride)
                                  for name, op in candidates.items()})
        self.names = list(candidates)
        self.zero_index = next((i for i, n in enumerate(self.names) if candidates[n].skips_layer), None)

    def run_candidate(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Output of candidate ``j`` on ``x``; the zero candidate skips the layer: ``x`` itself."""
        if j == self.zero_index:
            return x
        return self.ops[self.names[j]](x)

    def downstream_loss(self, h: torch.Tensor, path: Mapping[str, int], candidate: int,
                        loss: Optional[PathLoss] = None) -> torch.Tensor:
        """The path loss (``loss``, the :class:`PathLoss` of the forward being differentiated;
        None: the owning supernet's ``path_loss`` attribute) with ``h`` as this layer's output and
        the layers after it on ``path`` (label -> index), as a detached float64 tensor on the
        loss's device (no host sync); ``candidate`` (an index) names the shape-changing candidate
        that needs it in the error raised when there is no loss. The BatchNorm running statistics
        of the supernet are left alone. Call under ``no_grad``."""
        owner = self.__dict__.get("owner")
        fn = (loss if loss is not None else PathLoss(owner)).resolve()
        if owner is None or fn is None:
            where = ("this layer belongs to no Supernet" if owner is None else
                     "pass it with the forward, `supernet(x, path_loss=fn)`, or set "
                     "`supernet.path_loss = lambda logits: loss(logits)` on the Supernet that "
                     "holds this layer (the loss of its logits for the current batch) before "
                     "backward")
            raise RuntimeError(
                f"phi gradient of layer {self.label!r} (index {self.index}): candidate "
                f"{self.names[candidate]!r} changes the output shape, so the estimator needs the "
                f"exact loss with it in place; {where}")
        with frozen_bn_stats(owner):
            logits = owner.forward_from(self.index + 1, h, path=path)
        return torch.as_tensor(fn(logits)).detach().double()

    def active_loss(self, y: torch.Tensor, path: Mapping[str, int], candidate: int,
                    loss: Optional[PathLoss] = None) -> torch.Tensor:
        """The loss of the path the forward ran: the same for every layer of the owning supernet
        (whichever layer's output it continues from), so it is computed once per forward (in
        ``loss.cache``) -- by the deepest layer that needs it, the cheapest downstream -- and
        reused by the others. Without ``loss`` nothing is cached."""
        key = tuple(sorted(path.items()))
        if loss is not None and loss.cache is not None and loss.cache[0] == key:
            return loss.cache[1]
        value = self.downstream_loss(y, path, candidate, loss)  # raises when there is no owner
        if loss is not None:
            loss.cache = (key, value)
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
            # the path loss of the supernet forward running now (a layer called on its own gets
            # one of its own: nothing is shared with another forward)
            owner = self.__dict__.get("owner")
            loss = owner.__dict__.get("_forward_loss") if owner is not None else None
            loss = loss if loss is not None else PathLoss(owner)
            # also when zero is active (y is x): phi gets a gradient and dL/dy flows on to x
            y = GateGrad.apply(y, gate, x, self, active, indices, loss)
        return y


class Supernet(StagedModel):
    """Weight-sharing supernet over ``space``.

    Args:
        space: the :class:`~nasdistill.space.SearchSpace`.
        mode: path binarization mode, ``full`` | ``two`` | ``all`` (see :mod:`.gates`).
        seed: seed of the path sampler.
        gates: share an existing :class:`ArchGates` (GTN branches) instead of creating one.
        start: first layer held (``0``: the whole network with its stem).

    ``supernet(x, path_loss=fn)``: ``fn`` is ``logits -> scalar loss`` for this batch, the loss
    (this supernet's share of it) whose phi gradient an architecture step estimates; needed in
    backward wherever a candidate changes a layer's output shape. It and the cached loss of the
    active path belong to this forward only. Suffix supernets sharing one ``ArchGates`` each get
    their own (e.g. GTN: each branch's term, divided by the number of branches).

    Attributes:
        path_loss: the same, for forwards given none: read in backward (so it may be set after
            the forward); ``None`` until set. A closure over "the current batch" set once is safe:
            no loss value is kept from one forward to the next.
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
        #: estimated, for forwards given no ``path_loss`` (class docstring)
        self.path_loss = None
        self.__dict__["_forward_loss"] = None  # the PathLoss of the forward running now
        for layer in self.stages:
            layer.__dict__["owner"] = self

    @property
    def path_loss(self) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        return self.__dict__.get("_path_loss")

    @path_loss.setter
    def path_loss(self, fn: Optional[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        # no cache to clear: the active path's loss is cached per forward (PathLoss)
        self.__dict__["_path_loss"] = fn

    def forward(self, x: torch.Tensor,
                path_loss: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """Logits of the current path; ``path_loss`` (``logits -> scalar``): the loss whose phi
        gradient backward estimates, for this forward only (class docstring)."""
        outer = self.__dict__.get("_forward_loss")
        self.__dict__["_forward_loss"] = PathLoss(self, path_loss)
        try:
            return super().forward(x)
        finally:
            self.__dict__["_forward_loss"] = outer

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

    def use_gates(self, gates: ArchGates) -> None:
        """Make ``gates`` the gates of this supernet and of every mixed layer it holds.

        They become a plain attribute, not a submodule: whoever switches one supernet between
        several gates (a search with several cost targets) keeps them in its own state dict, once.
        """
        self._modules.pop("gates", None)
        self.__dict__["gates"] = gates
        for layer in self.stages:
            layer.__dict__["gates"] = gates

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
        # each op extracts its standalone module from its weight-sharing one; they are built again
        # (and filled with copies), so leave the global RNG as space.build left it
        with torch.random.fork_rng(devices=[]):
            for r, mixed in zip(self.space.resolve(arch), self.stages):
                model.stages[r.index] = r.op.extract(mixed.ops[r.choice], r.in_channels,
                                                     self.space.layers[r.index].out_channels, r.stride)
        copy_sliced(model.embed, self.embed)
        copy_sliced(model.classifier, self.classifier)
        return model.train(self.training)

