"""Counting the networks of a space and bounding their cost, exactly, without enumerating them.

Both read the space's layered graph (:mod:`.graph`): :func:`count_networks` counts distinct
networks (distinct canonical forms) by determinizing the graph read as an automaton, tied labels
included; :func:`cost_range` finds the minimum and maximum MACs / params by dynamic programming
over its layers.
"""
from __future__ import annotations

from .graph import space_graph


def count_networks(space) -> int:
    """Number of distinct networks (distinct :meth:`canonical` forms) of the space."""
    return space_graph(space).count_networks()


def cost_range(space) -> dict:
    """``{"macs_min", "macs_max", "params_min", "params_max"}`` over the space (exact)."""
    return space_graph(space).cost_range()
