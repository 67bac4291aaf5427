"""Cost of architectures, exact, and of a distribution over them, differentiable in its logits.

For each layer and each shape that can arrive, the probability of that shape is propagated from
the gate probabilities, so the expectation accounts for skipped layers changing what later layers
read:

    E[cost] = cost(stem) + sum_i sum_s P(s arrives at i) sum_j p_ij cost_ij(s) + sum_s P(s at head) cost_head(s)

This is exact when every layer has its own label; with tied labels the layers are treated as
independent (an approximation). Metrics: ``macs``, ``params`` (from the ops' cost formulas) or
``latency`` (a measured lookup table, see ``nasdistill bench latency``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Mapping, Optional

import torch

METRICS = ("macs", "params", "latency")


def state_key(state) -> str:
    ch, (h, w) = state
    return f"{ch}x{h}x{w}"


class CostModel:
    """Cost of architectures (exact) and of the gate distribution (expected, differentiable)."""

    def __init__(self, space, metric: str = "macs", table: Optional[Mapping] = None):
        if metric not in METRICS:
            raise ValueError(f"cost metric {metric!r} unknown; use one of {METRICS}")
        if metric == "latency" and table is None:
            raise ValueError("metric 'latency' needs a latency table: run `nasdistill bench latency "
                             "SPACE --out table.json` and pass its path")
        self.space, self.metric = space, metric
        self.table = dict(table["entries"] if table and "entries" in table else (table or {}))
        self._cache: dict = {}

    @classmethod
    def from_file(cls, space, path: str) -> "CostModel":
        with open(path) as f:
            table = json.load(f)
        if table.get("space") not in (None, space.name):
            raise ValueError(f"latency table {path} was measured for space {table.get('space')!r}, "
                             f"not {space.name!r}")
        return cls(space, "latency", table)

    def _lookup(self, key: str) -> float:
        if key not in self.table:
            raise ValueError(f"latency table has no entry {key!r}; re-measure it with "
                             f"`nasdistill bench latency {self.space.name}`")
        return float(self.table[key])

    def stem(self) -> float:
        if self.metric == "latency":
            return self._lookup("stem")
        return float(self.space.stem_cost()[METRICS.index(self.metric)])

    def layer(self, i: int, name: str, state) -> float:
        key = (i, name, state)
        if key not in self._cache:
            if self.metric == "latency":
                op = self.space.layer_ops(i)[name]
                value = 0.0 if op.skips_layer else self._lookup(
                    f"{self.space.layer_label(i)}:{i}:{name}:{state_key(state)}")
            else:
                op = self.space.layer_ops(i)[name]
                layer = self.space.layers[i]
                value = float(op.cost(state[0], layer.out_channels, layer.stride, state[1])
                              [METRICS.index(self.metric)])
            self._cache[key] = value
        return self._cache[key]

    def head(self, state) -> float:
        if self.metric == "latency":
            return self._lookup(f"head:{state_key(state)}")
        return float(self.space.head_cost(*state)[METRICS.index(self.metric)])

    def of_arch(self, arch: Mapping) -> float:
        """Exact cost of one architecture."""
        total = self.stem()
        state = self.space.stem_shape()
        for r in self.space.resolve(arch):
            total += self.layer(r.index, r.choice, state)
            state = (r.out_channels, r.out_hw)
        return total + self.head(state)

    def expected(self, gates, start: int = 0, state=None) -> torch.Tensor:
        """E[cost] under ``softmax(phi)`` of ``gates``; gradients flow to phi."""
        return self.moments(gates, start, state)[0].float()

    def moments(self, gates, start: int = 0, state=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[cost], E[cost^2])`` under ``softmax(phi)`` of ``gates``; gradients flow to phi.

        Propagated per arriving shape ``s``: its probability ``P_s``, ``M1_s = E[c 1_s]`` and
        ``M2_s = E[c^2 1_s]`` with ``c`` the cost so far; through candidate ``j`` of cost ``c_j(s)``
        they become ``p_j (P_s, M1_s + P_s c_j, M2_s + 2 c_j M1_s + P_s c_j^2)``, and the head's cost
        is added the same way (tied labels treated as independent, as in :meth:`expected`). In
        float64: ``E[c^2] - E[c]^2`` cancels digits of costs in the millions.
        """
        space = self.space
        state = state if state is not None else space.stem_shape()
        device = next(gates.parameters()).device
        stem = self.stem() if start == 0 else 0.0
        f64 = torch.float64
        zero = lambda: torch.tensor(0.0, device=device, dtype=f64)  # noqa: E731
        dist = {(state[0], tuple(state[1])): (torch.tensor(1.0, device=device, dtype=f64),
                                             torch.tensor(stem, device=device, dtype=f64),
                                             torch.tensor(stem * stem, device=device, dtype=f64))}
        for i in range(start, len(space.layers)):
            label = space.layer_label(i)
            p = torch.softmax(gates.logits(label).to(f64), 0)
            names = gates.choices[label]
            ops = space.layer_ops(i)
            nxt: dict = defaultdict(lambda: [zero(), zero(), zero()])
            for s, (ps, m1, m2) in dist.items():
                for j, n in enumerate(names):
                    c = self.layer(i, n, s)
                    acc = nxt[space._step(i, ops[n], s)]
                    acc[0] = acc[0] + p[j] * ps
                    acc[1] = acc[1] + p[j] * (m1 + ps * c)
                    acc[2] = acc[2] + p[j] * (m2 + 2 * c * m1 + ps * c * c)
            dist = {s: tuple(v) for s, v in nxt.items()}
        first, second = zero(), zero()
        for s, (ps, m1, m2) in dist.items():
            h = self.head(s)
            first = first + m1 + ps * h
            second = second + m2 + 2 * h * m1 + ps * h * h
        return first, second
