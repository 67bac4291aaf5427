"""A drawing of a space's layered graph (:class:`~nasdistill.space.graph.SpaceGraph`): columns are
layers, nodes the shapes that can arrive there, one arrow per pair of nodes labelled with its
candidates and their cost (``nasdistill space show SPACE --graph-out FILE.png``)."""
from __future__ import annotations

import networkx as nx

from ..space.graph import metric_unit
from .figure import new_figure, save_png

__all__ = ["draw_space_graph"]


def draw_space_graph(graph, path, metric: str = "macs"):
    """Write a PNG drawing of the graph: columns are layers, nodes are arriving shapes, an
    arrow per pair of nodes labelled with its candidates and their cost."""
    
    g = graph.graph
    columns = [list(graph.layer_nodes[0])]
    rank = {node: 0.0 for node in columns[0]}
    for nodes in graph.layer_nodes[1:] + [[graph.sink]]:
        # barycentre ordering: a node sits near the nodes it is reached from (fewer crossings)
        nodes = sorted(nodes, key=lambda v: sum(rank[u] for u in g.predecessors(v))
                       / max(1, len(set(g.predecessors(v)))))
        rank.update({node: y - (len(nodes) - 1) / 2 for y, node in enumerate(nodes)})
        columns.append(nodes)
    pos = {node: (x, -rank[node]) for x, nodes in enumerate(columns) for node in nodes}
    tallest = max(len(nodes) for nodes in columns)
    fig = new_figure(width=max(8.0, 2.6 * len(columns)), height=max(4.0, 1.4 * tallest))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    simple = nx.DiGraph()
    parallel: dict = {}
    for u, v, k, d in g.edges(keys=True, data=True):
        simple.add_edge(u, v)
        parallel.setdefault((u, v), []).append((k, d[metric]))
    labels = {(u, v): _edge_label(edges, head=v == graph.sink) for (u, v), edges in parallel.items()}
    names = {node: node.shape_text().replace(" [", "\n[") for node in g.nodes}
    nx.draw_networkx_edges(simple, pos, ax=ax, edge_color="0.6", arrows=True, arrowsize=8,
                           node_size=1400)
    nx.draw_networkx_nodes(simple, pos, ax=ax, node_color="#cfe2f3", node_size=1400)
    nx.draw_networkx_labels(simple, pos, labels=names, ax=ax, font_size=7)
    nx.draw_networkx_edge_labels(simple, pos, ax=ax, font_size=5, label_pos=0.5, rotate=False,
                                 edge_labels=labels,
                                 bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                       "alpha": 0.8})
    space = graph.space
    n = len(space.layers)
    for x in range(len(columns)):
        title = f"into {space.layer_label(x)}" if x < n else ("into head" if x == n else "output")
        ax.text(x, -(tallest - 1) / 2 - 0.8, title, ha="center", va="top", fontsize=8)
    ax.set_title(f"{space.name}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges "
                 f"({metric_unit(metric)} of each candidate on the arrows)", fontsize=9)
    return save_png(fig, path)


def _edge_label(edges: list, head: bool) -> str:
    """The candidates on one arrow with their cost; a long list of costly candidates as a range."""
    if head:
        return _short(edges[0][1])
    free = [(k, c) for k, c in edges if c == 0]
    costly = [(k, c) for k, c in edges if c != 0]
    if len(costly) > 3:
        low, high = min(c for _, c in costly), max(c for _, c in costly)
        lines = [f"{costly[0][0]}..{costly[-1][0]}", f"{_short(low)}..{_short(high)}"]
    else:
        lines = [f"{k} {_short(c)}" for k, c in costly]
    return "\n".join(lines + [f"{k} 0" for k, _ in free])


def _short(value) -> str:
    value = float(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else f"{int(value)}"
