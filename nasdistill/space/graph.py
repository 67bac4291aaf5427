"""A search space as a layered graph, and the most probable architecture within a cost band.

Every architecture of a space is one path of a directed acyclic graph (a networkx ``MultiDiGraph``):

- a node per layer index and shape arriving there, ``Node(layer, (channels, (H, W)), pending)``,
  where ``pending`` holds the choices of tied labels already made that later layers must repeat
  (empty when every layer has its own label);
- the source is the node after the stem, ``Node(0, stem shape)``; the nodes of layer
  ``len(layers)`` are the shapes the head reads, and each has one edge to the sink (the head);
- an edge per candidate, keyed by its choice, carrying the label, the layer, whether it sets the
  label's choice (the first layer of a tied label) and its exact ``macs`` and ``params``; the head
  edges carry the head's cost, the stem's cost is on the graph (``graph.graph["stem"]``).

Label assignments and source-to-sink paths are in one-to-one correspondence, so the cost range,
the number of networks and the constrained choice are all dynamic programs over the layers.

:func:`most_probable_arch` answers the question the search asks at export: of the architectures
whose cost lies in ``[target (1 - tol), target (1 + tol)]``, which is the most probable under the
factorised distribution ``P(arch) = prod_label p_label(arch[label])`` (tied labels counted once)?
It keeps, per node, every reachable partial cost with the best log-probability reaching it, so the
answer is exact (no sampling, no rounding of costs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["ConstrainedArch", "Node", "SpaceGraph", "most_probable_arch", "space_graph"]


@dataclass(frozen=True)
class Node:
    """A shape arriving at layer ``layer`` (``len(layers)``: the head; ``len(layers) + 1``: the sink)."""

    layer: int
    state: tuple           # (channels, (H, W)); () for the sink
    pending: tuple = ()    # ((label, choice), ...) of tied labels chosen earlier and used later

    def shape_text(self) -> str:
        if not self.state:
            return "head"
        ch, (h, w) = self.state
        text = f"{ch}x{h}x{w}"
        if self.pending:
            text += " [" + " ".join(f"{k}={v}" for k, v in self.pending) + "]"
        return text


class SpaceGraph:
    """The layered graph of a space (see the module docstring). Use :func:`space_graph` to get
    the cached one of a space."""

    def __init__(self, space):
        import networkx as nx  # here: loading a network (nasdistill.load) needs no graph, nor networkx

        self.space = space
        n = len(space.layers)
        labels = space._layer_labels
        g = nx.MultiDiGraph(space=space.name)
        stem_macs, stem_params = space.stem_cost()
        g.graph["stem"] = {"macs": int(stem_macs), "params": int(stem_params)}
        self.source = Node(0, _state(space.stem_shape()))
        self.sink = Node(n + 1, ())
        g.add_node(self.source, layer=0)
        g.add_node(self.sink, layer=n + 1)
        frontier = [self.source]
        self.layer_nodes: list[list[Node]] = []
        for i in range(n):
            self.layer_nodes.append(sorted(frontier, key=_node_order))
            layer, label = space.layers[i], labels[i]
            later = set(labels[i + 1:])
            nxt: dict = {}
            for node in self.layer_nodes[-1]:
                fixed = dict(node.pending)
                names = [fixed[label]] if label in fixed else list(space._ops[i])
                for name in names:
                    op = space._ops[i][name]
                    after = _state(space._step(i, op, node.state))
                    pending = {k: v for k, v in fixed.items() if k in later}
                    if label in later:
                        pending[label] = name
                    target = Node(i + 1, after, tuple(sorted(pending.items())))
                    if target not in nxt:
                        nxt[target] = None
                        g.add_node(target, layer=i + 1)
                    macs, params = op.cost(node.state[0], layer.out_channels, layer.stride, node.state[1])
                    g.add_edge(node, target, key=name, layer=i, label=label, choice=name,
                               sets_label=label not in fixed, macs=int(macs), params=int(params),
                               atoms=space._atoms(i, name, node.state))
            frontier = list(nxt)
        self.layer_nodes.append(sorted(frontier, key=_node_order))
        for node in self.layer_nodes[-1]:
            macs, params = space.head_cost(*node.state)
            g.add_edge(node, self.sink, key="head", layer=n, label=None, choice="head", sets_label=False,
                       macs=int(macs), params=int(params), atoms=((("end",) + node.state, int(macs), int(params)),))
        self.graph = g

    # ------------------------------------------------------------------ reading the graph
    def out_edges(self, node: Node):
        """``(target, choice, data)`` of the edges leaving ``node``, in candidate order."""
        return [(v, k, d) for _, v, k, d in self.graph.out_edges(node, keys=True, data=True)]

    def cost_range(self) -> dict:
        """``{"macs_min", "macs_max", "params_min", "params_max"}``: exact, over every path."""
        result = {}
        for metric in ("macs", "params"):
            lo = {self.source: 0}
            hi = {self.source: 0}
            for nodes in self.layer_nodes:
                for node in nodes:
                    for v, _, d in self.out_edges(node):
                        c = d[metric]
                        lo[v] = min(lo.get(v, math.inf), lo[node] + c)
                        hi[v] = max(hi.get(v, -math.inf), hi[node] + c)
            stem = self.graph.graph["stem"][metric]
            result[f"{metric}_min"] = int(stem + lo[self.sink])
            result[f"{metric}_max"] = int(stem + hi[self.sink])
        return result

    def count_paths(self) -> int:
        """Number of source-to-sink paths = number of label assignments."""
        count = {self.source: 1}
        for nodes in self.layer_nodes:
            for node in nodes:
                for v, _, _ in self.out_edges(node):
                    count[v] = count.get(v, 0) + count[node]
        return count[self.sink]

    # ------------------------------------------------------------------ the graph as an automaton
    # The graph read as a nondeterministic automaton over atoms (:meth:`~.ops.Op.atoms`): a
    # parameter-free edge is an empty move, any other edge emits its atoms in order (an edge of k
    # atoms passes k-1 states inside it: ``(u, v, key, j)``, j atoms emitted), a head edge emits
    # ``("end", shape)``. A path's atoms are its architecture's canonical form, so determinizing
    # the automaton (subset construction) merges every spelling of one network.
    def closure(self, states) -> frozenset:
        """``states`` and every state an empty move reaches from them."""
        todo, seen = list(states), set(states)
        while todo:
            state = todo.pop()
            if isinstance(state, Node):
                for v, _, d in self.out_edges(state):
                    if not d["atoms"] and v not in seen:
                        seen.add(v)
                        todo.append(v)
        return frozenset(seen)

    def atom_moves(self, state) -> list:
        """``[(token, macs, params, next state)]``: the atoms a state of the automaton emits."""
        if isinstance(state, Node):
            return [(atoms[0][0], atoms[0][1], atoms[0][2], v if len(atoms) == 1 else (state, v, key, 1))
                    for _, v, key, atoms in self.graph.out_edges(state, keys=True, data="atoms") if atoms]
        u, v, key, j = state
        atoms = self.graph.edges[u, v, key]["atoms"]
        token, macs, params = atoms[j]
        return [(token, macs, params, v if j + 1 == len(atoms) else (u, v, key, j + 1))]

    def count_networks(self) -> int:
        """Number of distinct networks (distinct canonical forms) of the space: the accepting
        paths of the determinized automaton (above), which is acyclic."""
        memo: dict = {}
        start = self.closure({self.source})
        stack = [start]
        while stack:  # iteratively: no recursion limit on deep spaces
            dstate = stack[-1]
            if dstate in memo:
                stack.pop()
                continue
            moves: dict = {}
            for state in dstate:
                for token, _, _, nxt in self.atom_moves(state):
                    moves.setdefault(token, set()).add(nxt)
            nexts = [self.closure(t) for t in moves.values() if t != {self.sink}]
            pending = [n for n in nexts if n not in memo]
            if pending:
                stack.extend(pending)
                continue
            memo[dstate] = sum(1 if t == {self.sink} else memo[self.closure(t)] for t in moves.values())
            stack.pop()
        return memo[start]

    # ------------------------------------------------------------------ showing the graph
    def render(self, metric: str = "macs") -> str:
        """A text rendering: per layer the arriving shapes and each candidate with its cost."""
        space, g = self.space, self.graph
        c, h, w = space.input_size
        stem = g.graph["stem"]
        lines = [(f"space {space.name}: layered graph, {g.number_of_nodes()} nodes, "
                  f"{g.number_of_edges()} edges, {self.count_paths():,} paths ({metric_unit(metric)} per edge)"),
                 f"stem: {c}x{h}x{w} -> {self.source.shape_text()}  {stem[metric]:,}"]
        for i, nodes in enumerate(self.layer_nodes):
            if i < len(space.layers):
                layer = space.layers[i]
                lines.append(f"layer {i + 1} ({space.layer_label(i)}, {layer.out_channels} channels, "
                             f"stride {layer.stride}): {len(nodes)} arriving shape(s)")
            else:
                lines.append(f"head: {len(nodes)} arriving shape(s), each with the head's cost")
            if i == len(space.layers):
                width = max(len(node.shape_text()) for node in nodes)
                for node in nodes:
                    (_, _, d), = self.out_edges(node)
                    lines.append(f"  {node.shape_text().ljust(width)}  {d[metric]:>14,}")
                continue
            for node in nodes:
                lines.append(f"  {node.shape_text()}")
                edges = self.out_edges(node)
                width = max(len(k) for _, k, _ in edges)
                reach = max(10, *(len(v.shape_text()) for v, _, _ in edges))
                for v, k, d in edges:
                    lines.append(f"    {k.ljust(width)} -> {v.shape_text().ljust(reach)} {d[metric]:>14,}")
        return "\n".join(lines)


def space_graph(space) -> SpaceGraph:
    """The layered graph of ``space`` (built once per space object)."""
    graph = space.__dict__.get("_layered_graph")
    if graph is None:
        graph = SpaceGraph(space)
        space.__dict__["_layered_graph"] = graph
    return graph


# ---------------------------------------------------------------------- the constrained choice
@dataclass(frozen=True)
class ConstrainedArch:
    """The most probable architecture within the cost band (or, when the band is empty, the
    closest to the target), with the unconstrained argmax for comparison."""

    arch: dict
    log_prob: float
    prob: float
    cost: float
    argmax_arch: dict
    argmax_log_prob: float
    argmax_cost: float
    in_band: bool
    band: tuple            # (lo, hi) = (target (1 - tolerance), target (1 + tolerance))
    target: float
    metric: str
    message: Optional[str] = None

    def as_dict(self) -> dict:
        """The fields as JSON-ready values (``band`` as a list)."""
        return {"arch": dict(self.arch), "log_prob": self.log_prob, "prob": self.prob, "cost": self.cost,
                "argmax_arch": dict(self.argmax_arch), "argmax_log_prob": self.argmax_log_prob,
                "argmax_cost": self.argmax_cost, "in_band": self.in_band, "band": list(self.band),
                "target": self.target, "metric": self.metric, "message": self.message}


def most_probable_arch(space, probabilities: Mapping, target: float, tolerance: float = 0.10,
                       cost_model=None, log: Optional[bool] = None) -> ConstrainedArch:
    """The most probable architecture of ``space`` whose cost lies in the band
    ``[target (1 - tolerance), target (1 + tolerance)]`` (exact, by dynamic programming).

    ``probabilities``: ``{label: {choice: p}}`` for every label and choice of the space (e.g.
    ``ArchGates.probabilities()``), probabilities or log-probabilities (``log=None`` reads them
    as log-probabilities when any value is negative). ``P(arch) = prod_label p_label(choice)``.
    ``cost_model``: ``None`` or ``"macs"`` (default), ``"params"``, or a
    :class:`~nasdistill.space.cost.CostModel` (e.g. a latency table).

    When no architecture lies in the band, the result is the architecture whose cost is closest
    to the target (ties: the most probable), with ``in_band=False`` and a ``message`` naming the
    band and the closest cost. Exact ties in probability keep the first architecture reached.
    """
    from .cost import CostModel

    model = _cost_model(space, cost_model, CostModel)
    metric = model.metric
    target, tolerance = _check_target(target, tolerance, metric)
    logp = _log_table(space, probabilities, log)
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    graph = space_graph(space)
    exact = metric in ("macs", "params")

    def edge_cost(node, choice, data):
        if exact:
            return data[metric]
        if data["label"] is None:  # the head edge
            return model.head(node.state)
        return model.layer(data["layer"], choice, node.state)

    stem = graph.graph.graph["stem"][metric] if exact else model.stem()
    # best[node][partial cost] = (log-prob, previous node, previous partial cost, choice)
    best: dict = {graph.source: {stem: (0.0, None, None, None)}}
    for nodes in graph.layer_nodes:
        for node in nodes:
            table = best[node]
            for v, choice, data in graph.out_edges(node):
                c_edge = edge_cost(node, choice, data)
                lp_edge = logp[data["label"]][choice] if data["sets_label"] else None
                dest = best.setdefault(v, {})
                for cost, (lp, *_rest) in table.items():
                    total = cost + c_edge
                    score = lp if lp_edge is None else lp + lp_edge
                    old = dest.get(total)
                    if old is None or score > old[0]:
                        dest[total] = (score, node, cost, choice)
    finals = best[graph.sink]
    inside = [c for c in finals if lo <= c <= hi]
    if inside:
        cost = max(inside, key=lambda c: finals[c][0])
    else:
        cost = min(finals, key=lambda c: (abs(c - target), -finals[c][0]))
    arch = _trace(space, best, graph.sink, cost)
    log_prob = finals[cost][0]

    argmax = {label: max(space.choices(label), key=lambda ch, l=label: logp[l][ch]) for label in space.labels}
    argmax_lp = 0.0
    for label in space.labels:
        argmax_lp += logp[label][argmax[label]]
    argmax_cost = model.of_arch(argmax)
    if exact:
        argmax_cost = int(argmax_cost)
    message = None
    if not inside:
        message = (f"no architecture of {space.name} costs {_fmt(lo)} .. {_fmt(hi)} {metric_unit(metric)} "
                   f"(target {_fmt(target)} +- {tolerance * 100:g}%); the closest costs {_fmt(cost)} "
                   f"{metric_unit(metric)} ({(cost - target) / target:+.1%} from the target)")
    return ConstrainedArch(arch=arch, log_prob=log_prob, prob=math.exp(log_prob), cost=cost,
                           argmax_arch=argmax, argmax_log_prob=argmax_lp, argmax_cost=argmax_cost,
                           in_band=bool(inside), band=(lo, hi), target=target, metric=metric,
                           message=message)


def _trace(space, best, sink, cost) -> dict:
    chosen = {}
    node = sink
    while True:
        _, prev, prev_cost, choice = best[node][cost]
        if prev is None:
            break
        if prev.layer < len(space.layers):
            chosen[space.layer_label(prev.layer)] = choice
        node, cost = prev, prev_cost
    return {label: chosen[label] for label in space.labels}


def _cost_model(space, cost_model, cls):
    if cost_model is None:
        return cls(space, "macs")
    if isinstance(cost_model, str):
        if cost_model == "latency":
            raise ValueError("a latency cost needs its table: pass CostModel.from_file(space, PATH)")
        return cls(space, cost_model)
    if not isinstance(cost_model, cls):
        raise ValueError(f"cost_model must be 'macs', 'params' or a CostModel, got {cost_model!r}")
    if cost_model.space is not space and cost_model.space != space:
        raise ValueError(f"the cost model was made for space {cost_model.space.name!r}, "
                         f"not for this {space.name!r}; build it with CostModel({space.name}, ...)")
    return cost_model


def _check_target(target, tolerance, metric):
    try:
        target, tolerance = float(target), float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"cost target and tolerance must be numbers, got {target!r} and {tolerance!r}") from None
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"the {metric} target must be a positive number, got {target!r}")
    if not math.isfinite(tolerance) or not 0 <= tolerance < 1:
        raise ValueError(f"the cost tolerance is a fraction of the target in [0, 1), got {tolerance!r}")
    return target, tolerance


def _log_table(space, probabilities, log) -> dict:
    """``{label: {choice: log p}}`` checked against the space."""
    if not isinstance(probabilities, Mapping):
        raise ValueError(f"probabilities must be a mapping {{label: {{choice: p}}}}, "
                         f"got {type(probabilities).__name__}")
    extra = [k for k in probabilities if k not in space.labels]
    if extra:
        raise ValueError(f"probabilities name label {extra[0]!r}, which {space.name} does not have; "
                         f"its labels: {space.labels}")
    values = {}
    for label in space.labels:
        table = probabilities.get(label)
        choices = space.choices(label)
        if not isinstance(table, Mapping) or set(table) != set(choices):
            raise ValueError(f"probabilities of label {label!r} must give each of {choices} a value, "
                             f"got {dict(table) if isinstance(table, Mapping) else table!r}")
        row = {}
        for choice in choices:
            try:
                row[choice] = float(table[choice])
            except (TypeError, ValueError):
                raise ValueError(f"probability of {label}={choice} must be a number, "
                                 f"got {table[choice]!r}") from None
            if math.isnan(row[choice]):
                raise ValueError(f"probability of {label}={choice} is NaN")
        values[label] = row
    if log is None:
        log = any(v < 0 for row in values.values() for v in row.values())
    if log:
        bad = [(l, c) for l, row in values.items() for c, v in row.items() if v > 0]
        if bad:
            raise ValueError(f"log-probability of {bad[0][0]}={bad[0][1]} is positive")
        return values
    bad = [(l, c) for l, row in values.items() for c, v in row.items() if v < 0 or v > 1]
    if bad:
        l, c = bad[0]
        raise ValueError(f"probability of {l}={c} is {values[l][c]}, outside [0, 1]")
    return {l: {c: (math.log(v) if v > 0 else -math.inf) for c, v in row.items()}
            for l, row in values.items()}


def _state(state) -> tuple:
    return int(state[0]), (int(state[1][0]), int(state[1][1]))


def _node_order(node: Node):
    return (-node.state[0], tuple(-v for v in node.state[1]), node.pending)


def _fmt(value) -> str:
    value = float(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def metric_unit(metric: str) -> str:
    return {"macs": "MACs", "params": "params", "latency": "ms"}.get(metric, metric)
