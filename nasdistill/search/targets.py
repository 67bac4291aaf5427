"""One supernet, several cost targets: the weights are shared, each target keeps its own phi.

:class:`SearchModel` holds the supernet's weights and one :class:`~nasdistill.supernet.ArchGates`
per target (phi, its path sampler); :meth:`SearchModel.use` points the supernet -- and each of its
mixed layers, which read their gates through ``layer.gates`` -- at one target's gates, so sampling,
``set_arch``, ``export()``, the cost model's expectation and the phi gradient of the next forward
pass all concern that target. ``extract(arch)`` copies weights only and does not depend on the gates.

Once-for-All trains one supernet for every constraint; ProxylessNAS trains one per target. A
search with K targets trains one supernet: each weight step samples its path from the targets' phi
in turn, each phi step updates one target's phi (with its own Adam and cost penalty) in turn.
"""
from __future__ import annotations

from torch import nn

from ..supernet import ArchGates, Supernet


class SearchModel(nn.Module):
    """``supernet`` (weights) and ``gates[k]`` (phi of target k); :meth:`use` selects a target."""

    def __init__(self, supernet: Supernet, gates: list[ArchGates]):
        super().__init__()
        if not gates:
            raise ValueError("SearchModel needs the gates of at least one target")
        self.supernet = supernet
        self.gates = nn.ModuleList(gates)
        self.active = 0
        self.use(0)

    def use(self, k: int) -> Supernet:
        """Point the supernet at target ``k``'s gates; return the supernet."""
        self.supernet.use_gates(self.gates[k])
        self.active = k
        return self.supernet

    def forward(self, x):
        return self.supernet(x)

    def weight_parameters(self) -> list[nn.Parameter]:
        """The supernet's weights (no phi: the gates are not submodules of the supernet)."""
        return list(self.supernet.parameters())


__all__ = ["SearchModel"]
