"""Expected cost of the supernet's path distribution, differentiable in phi, and cost penalties.

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
import math
from collections import defaultdict
from typing import Mapping, Optional

import torch

METRICS = ("macs", "params", "latency")
PENALTIES = ("mul#log", "add#linear", "add#abs")


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
        space = self.space
        state = state if state is not None else space.stem_shape()
        device = next(gates.parameters()).device
        total = torch.tensor(self.stem() if start == 0 else 0.0, device=device)
        dist = {(state[0], tuple(state[1])): torch.tensor(1.0, device=device)}
        for i in range(start, len(space.layers)):
            label = space.layer_label(i)
            p = torch.softmax(gates.logits(label).float(), 0)
            names = gates.choices[label]
            ops = space.layer_ops(i)
            nxt: dict = defaultdict(lambda: torch.tensor(0.0, device=device))
            for s, ps in dist.items():
                costs = torch.tensor([self.layer(i, n, s) for n in names], device=device)
                total = total + ps * (p * costs).sum()
                for j, n in enumerate(names):
                    after = space._step(i, ops[n], s)
                    nxt[after] = nxt[after] + ps * p[j]
            dist = dict(nxt)
        for s, ps in dist.items():
            total = total + ps * self.head(s)
        return total


def cost_penalty(ce: torch.Tensor, expected: torch.Tensor, target: float, kind: str = "mul#log",
                 alpha: float = 0.2, beta: float = 0.3, lam: float = 0.1) -> torch.Tensor:
    """Cost-aware loss of ProxylessNAS.

    - ``mul#log``:    ``CE * alpha * (log E / log target) ** beta``
    - ``add#linear``: ``CE + lam * (E - target) / target``
    - ``add#abs``:    ``CE + lam * |E - target| / target`` (nasdistill's addition: pulls the expected
      cost toward the target from both sides, so searches at different targets find different
      students; ``add#linear`` keeps pushing the cost down below the target)
    """
    if target <= 1 and kind == "mul#log":
        raise ValueError(f"mul#log needs a cost target > 1 (log target > 0), got {target}")
    if kind == "mul#log":
        return ce * alpha * (torch.log(expected) / math.log(target)) ** beta
    if kind == "add#linear":
        return ce + lam * (expected - target) / target
    if kind == "add#abs":
        return ce + lam * (expected - target).abs() / target
    raise ValueError(f"cost penalty {kind!r} unknown; use one of {PENALTIES}")
