"""Counting the networks of a space and bounding their cost, exactly, without enumerating them.

:func:`count_networks` counts distinct networks (distinct canonical forms) by determinizing the
layer automaton; :func:`cost_range` finds the minimum and maximum MACs / params by dynamic
programming over (layer, arriving shape, pending tied-label choices).
"""
from __future__ import annotations

def count_networks(space) -> int:
    """Number of distinct networks (distinct :meth:`canonical` forms) of the space."""
    tied = len(space._labels) != len(space.layers)
    if not tied:
        return _count_distinct(space)
    total = 1
    for label in space._labels:
        total *= len(space._label_choices[label])
    if total > 2_000_000:
        raise ValueError(f"space {space.name!r} has tied labels and {total} label assignments: "
                         f"too many to deduplicate exactly")
    return len({space.canonical(arch) for arch in space.architectures()})


def _count_distinct(space) -> int:
    """Count distinct token strings of the layer automaton by subset construction.

    States (layer, shape); a parameter-free choice is an empty move, any other choice emits its
    token; at the end the head emits ("end", shape). Determinizing merges every spelling of
    one network, and the DFA is acyclic, so counting its accepting paths counts networks.
    """
    n = len(space.layers)

    def closure(states):
        todo, seen = list(states), set(states)
        while todo:
            i, st = todo.pop()
            if i == n:
                continue
            for name, op in space._ops[i].items():
                if space._token(i, name, st) is None:
                    nxt = (i + 1, space._step(i, op, st))
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
        return frozenset(seen)

    memo: dict = {}

    def count(dstate) -> int:
        if dstate in memo:
            return memo[dstate]
        moves: dict = {}
        for i, st in dstate:
            if i == n:
                moves.setdefault(("end", st), None)
                continue
            for name, op in space._ops[i].items():
                token = space._token(i, name, st)
                if token is not None:
                    moves.setdefault(token, set()).add((i + 1, space._step(i, op, st)))
        total = sum(1 if targets is None else count(closure(targets)) for targets in moves.values())
        memo[dstate] = total
        return total

    return count(closure({(0, space.stem_shape())}))


def cost_range(space) -> dict:
    """Minimum and maximum MACs and params over the space (exact, dynamic programming)."""
    result = {}
    for metric, idx in (("macs", 0), ("params", 1)):
        for fn_name, fn in (("min", min), ("max", max)):
            memo: dict = {}
            best = _extreme(space, 0, space.stem_shape(), (), idx, fn, memo)
            result[f"{metric}_{fn_name}"] = int(best + space.stem_cost()[idx])
    return result


def _extreme(space, i, state, pending, idx, fn, memo):
    if i == len(space.layers):
        return space.head_cost(*state)[idx]
    key = (i, state, pending)
    if key in memo:
        return memo[key]
    label = space._layer_labels[i]
    fixed = dict(pending)
    names = [fixed[label]] if label in fixed else list(space._ops[i])
    later = set(space._layer_labels[i + 1:])
    values = []
    for name in names:
        op = space._ops[i][name]
        layer = space.layers[i]
        c = op.cost(state[0], layer.out_channels, layer.stride, state[1])[idx]
        nxt_pending = {k: v for k, v in fixed.items() if k in later}
        if label in later:
            nxt_pending[label] = name
        values.append(c + _extreme(space, i + 1, space._step(i, op, state),
                                        tuple(sorted(nxt_pending.items())), idx, fn, memo))
    memo[key] = fn(values)
    return memo[key]

# ------------------------------------------------------------------ building
