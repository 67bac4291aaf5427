"""The networks of a space whose cost lies in a band, counted and sampled uniformly, exactly.

A random baseline for a searched student must be drawn from the networks that cost what the
student costs. :func:`band_networks` answers, for the band ``[lo, hi]`` of MACs (or params):

- how many label assignments (paths of the layered graph, :mod:`.graph`) cost that;
- how many distinct *networks* cost that (two assignments that build the same network, e.g.
  ``identity`` and ``zero`` where they coincide, count once: :meth:`SearchSpace.canonical`);

and :meth:`Band.sample` draws networks of the band uniformly (each distinct network with the same
probability), without enumerating the space.

How: the layered graph read as an automaton (a parameter-free edge is an empty move, any other edge
emits its canonical atoms, each of whose cost the atom alone decides: :meth:`.graph.SpaceGraph.atom_moves`) is determinized (subset
construction, as :meth:`~.graph.SpaceGraph.count_networks` does), so each accepting path of the
deterministic automaton is one network. A dynamic program over it keeps, per deterministic state,
the number of suffixes of every total cost; the band's networks are the accepting paths whose
cost, stem included, lies in the band. Sampling draws the total cost with probability proportional
to its number of networks, then walks forward choosing each token with probability proportional to
the number of completions that reach exactly that total: every network of the band is equally
likely. The network's token sequence is turned back into a label assignment (one spelling of it)
by following the layered graph.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterable

from .graph import metric_unit, space_graph

__all__ = ["Band", "band_networks"]


@dataclass
class Band:
    """The networks of ``space`` whose ``metric`` cost lies in ``[lo, hi]`` (see the module docstring)."""

    space: object
    metric: str
    lo: float
    hi: float
    networks: int              # distinct networks in the band
    assignments: int           # label assignments (graph paths) in the band
    _totals: dict = field(repr=False, default_factory=dict)   # total cost -> networks of that cost
    _dfa: object = field(repr=False, default=None)

    def sample(self, n: int, seed: int = 0, exclude: Iterable[dict] = ()) -> list[dict]:
        """``n`` distinct networks of the band, uniformly at random among the band's networks that
        are not in ``exclude`` (architectures, e.g. the searched students), each as a label
        assignment. Asking for more than the band holds is a ValueError naming how many it does."""
        space = self.space
        taken = {space.arch_id(a) for a in exclude}
        excluded = len({space.arch_id(a) for a in exclude if self.lo <= space.cost(a)[self.metric] <= self.hi})
        free = self.networks - excluded
        if n > free:
            raise ValueError(f"the band {_fmt(self.lo)} .. {_fmt(self.hi)} {metric_unit(self.metric)} of space "
                             f"{space.name!r} holds {self.networks:,} network{'s' if self.networks != 1 else ''}"
                             + (f" ({excluded} of them already taken)" if excluded else "")
                             + f": cannot draw {n} distinct ones")
        rng = random.Random(seed)
        out: list[dict] = []
        while len(out) < n:
            arch = self._dfa.spell(self._draw(rng))
            arch_id = space.arch_id(arch)
            if arch_id in taken:  # rejection keeps the draw uniform over the networks left
                continue
            taken.add(arch_id)
            out.append(arch)
        return out

    def _draw(self, rng: random.Random) -> list:
        """The tokens of one network of the band, uniformly."""
        pick = rng.randrange(self.networks)
        for total in sorted(self._totals):
            pick -= self._totals[total]
            if pick < 0:
                break
        return self._dfa.walk(total - self._dfa.stem, rng)


def band_networks(space, lo: float, hi: float, metric: str = "macs") -> Band:
    """The :class:`Band` of ``space`` for costs in ``[lo, hi]`` (``metric``: ``macs`` or ``params``)."""
    if metric not in ("macs", "params"):
        raise ValueError(f"band sampling needs an exact cost (macs or params), got {metric!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"a cost band needs finite bounds lo <= hi, got {lo} .. {hi}")
    dfa = _automaton(space, metric)
    totals = {dfa.stem + s: c for s, c in dfa.suffix_costs(dfa.start).items() if lo <= dfa.stem + s <= hi}
    return Band(space, metric, lo, hi, networks=sum(totals.values()),
                assignments=_count_assignments(space, metric, lo, hi), _totals=totals, _dfa=dfa)


# ---------------------------------------------------------------------------- the automaton
class _Automaton:
    """The determinized layered graph with each token's cost (built once per space and metric)."""

    def __init__(self, space, metric: str):
        self.space, self.metric = space, metric
        self.graph = space_graph(space)
        self.stem = self.graph.graph.graph["stem"][metric]
        self.start = self._closure({self.graph.source})
        self._moves: dict = {}       # dstate -> [(token, cost, next dstate)]
        self._suffix: dict = {}      # dstate -> {suffix cost: networks}

    def _closure(self, states) -> frozenset:
        return self.graph.closure(states)

    def moves(self, state: frozenset) -> list:
        """``[(token, cost, next state)]`` leaving ``state``, in a fixed order."""
        if state not in self._moves:
            by_token: dict = {}
            costs: dict = {}
            for element in state:
                for token, macs, params, nxt in self.graph.atom_moves(element):
                    by_token.setdefault(token, set()).add(nxt)
                    cost = macs if self.metric == "macs" else params
                    if costs.setdefault(token, cost) != cost:
                        raise RuntimeError(f"token {token} has two costs ({costs[token]}, {cost}): the "
                                           "canonical form does not decide the cost")
            self._moves[state] = [(t, costs[t], self._closure(by_token[t]))
                                  for t in sorted(by_token, key=repr)]
        return self._moves[state]

    def accepting(self, state: frozenset) -> bool:
        return self.graph.sink in state

    def suffix_costs(self, state: frozenset) -> dict:
        """``{cost: number of token sequences from state to the end with that cost}`` (memoized,
        iteratively: no recursion limit on deep spaces)."""
        if state in self._suffix:
            return self._suffix[state]
        stack = [state]
        while stack:
            s = stack[-1]
            if s in self._suffix:
                stack.pop()
                continue
            pending = [nxt for _, _, nxt in self.moves(s) if nxt not in self._suffix and not self._is_end(nxt)]
            if pending:
                stack.extend(pending)
                continue
            table: dict = {}
            for _, cost, nxt in self.moves(s):
                for c, k in (({0: 1}) if self._is_end(nxt) else self._suffix[nxt]).items():
                    table[c + cost] = table.get(c + cost, 0) + k
            self._suffix[s] = table
            stack.pop()
        return self._suffix[state]

    def _is_end(self, state: frozenset) -> bool:
        return state == frozenset({self.graph.sink})

    def walk(self, remaining: int, rng: random.Random) -> list:
        """Tokens of one network whose suffix from the start costs exactly ``remaining``, uniformly
        among those networks."""
        state, tokens = self.start, []
        while not self._is_end(state):
            options = []
            for token, cost, nxt in self.moves(state):
                left = remaining - cost
                k = 1 if self._is_end(nxt) and left == 0 else (
                    0 if self._is_end(nxt) else self.suffix_costs(nxt).get(left, 0))
                if k:
                    options.append((k, token, cost, nxt))
            pick = rng.randrange(sum(k for k, *_ in options))
            for k, token, cost, nxt in options:
                pick -= k
                if pick < 0:
                    break
            tokens.append(token)
            remaining -= cost
            state = nxt
        return tokens

    def spell(self, tokens: list) -> dict:
        """A label assignment whose network emits ``tokens`` (the first spelling found, in candidate
        order: deterministic)."""
        g = self.graph
        # depth-first over (node, tokens consumed), choices kept for the label of each layer
        stack = [(g.source, 0, {})]
        seen = set()
        while stack:
            node, i, chosen = stack.pop()
            if node == g.sink:
                if i == len(tokens):
                    return {label: chosen[label] for label in self.space.labels}
                continue
            key = (node, i)
            if key in seen:
                continue
            seen.add(key)
            nexts = []
            for v, choice, d in g.out_edges(node):
                atoms = [t for t, _, _ in d["atoms"]]
                if tokens[i:i + len(atoms)] != atoms:
                    continue
                step = i + len(atoms)
                picked = dict(chosen)
                if d["label"] is not None and d["sets_label"]:
                    picked[d["label"]] = choice
                nexts.append((v, step, picked))
            stack.extend(reversed(nexts))
        raise RuntimeError(f"no label assignment emits the tokens {tokens} (a bug in the band automaton)")


_AUTOMATA: dict = {}


def _automaton(space, metric: str) -> _Automaton:
    key = (id(space), metric)
    found = _AUTOMATA.get(key)
    if found is None or found.space is not space:
        found = _AUTOMATA[key] = _Automaton(space, metric)
    return found


def _count_assignments(space, metric: str, lo: float, hi: float) -> int:
    """Label assignments (source-to-sink paths of the layered graph) with cost in ``[lo, hi]``."""
    graph = space_graph(space)
    table = {graph.source: {graph.graph.graph["stem"][metric]: 1}}
    for nodes in graph.layer_nodes:
        for node in nodes:
            here = table.get(node, {})
            for v, _, d in graph.out_edges(node):
                dest = table.setdefault(v, {})
                for c, k in here.items():
                    dest[c + d[metric]] = dest.get(c + d[metric], 0) + k
    return sum(k for c, k in table.get(graph.sink, {}).items() if lo <= c <= hi)


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


