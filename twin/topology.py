"""Network topology: upstream and downstream tracing, and the valves that isolate a pipe.

Graphs are built with networkx from a :class:`~twin.model.PipeNetwork`. Drainage links are directed from
``from_id`` to ``to_id`` (SWMM's flow direction); water and gas networks are looped, so tracing there follows
connectivity, and isolation follows the valves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import pairwise

import networkx as nx

from twin.errors import UnknownAssetError
from twin.model import NodeKind, PipeNetwork


def directed_graph(network: PipeNetwork) -> nx.MultiDiGraph:
    """Return the network as a directed multigraph: nodes by id, one edge per link keyed by link id."""
    g = nx.MultiDiGraph()
    g.add_nodes_from(network.nodes)
    for lid, link in network.links.items():
        g.add_edge(link.from_id, link.to_id, key=lid)
    return g


def _check_node(network: PipeNetwork, node_id: str) -> None:
    if node_id not in network.nodes:
        raise UnknownAssetError(f"{network.kind.value}:{node_id}")


def upstream(network: PipeNetwork, node_id: str) -> set[str]:
    """Return every node whose flow passes through *node_id* (not including it), following link directions.

    Raises:
        UnknownAssetError: no such node.
    """
    _check_node(network, node_id)
    return set(nx.ancestors(directed_graph(network), node_id))


def downstream(network: PipeNetwork, node_id: str) -> set[str]:
    """Return every node that flow from *node_id* reaches (not including it), following link directions.

    Raises:
        UnknownAssetError: no such node.
    """
    _check_node(network, node_id)
    return set(nx.descendants(directed_graph(network), node_id))


def path_to_outfall(network: PipeNetwork, node_id: str) -> list[str]:
    """Return the links from *node_id* down to the first outfall it reaches (drainage), in flow order."""
    _check_node(network, node_id)
    g = directed_graph(network)
    paths = nx.single_source_shortest_path(g, node_id)
    outfalls = [t for t in paths if network.nodes[t].kind is NodeKind.OUTFALL]
    if not outfalls:
        return []
    nodes = paths[min(outfalls, key=lambda t: (len(paths[t]), t))]
    return [next(iter(g.get_edge_data(a, b))) for a, b in pairwise(nodes)]


@dataclass(frozen=True, slots=True)
class Isolation:
    """What closing valves does to isolate a pipe.

    Attributes:
        valves: the valves to close.
        links: the links left without supply between those valves (the pipe itself included).
        nodes: the nodes in that segment (customers there lose supply).
    """

    valves: frozenset[str]
    links: frozenset[str]
    nodes: frozenset[str]


def isolate(network: PipeNetwork, link_id: str) -> Isolation:
    """Find the valves that must close to isolate *link_id*, and the segment they cut off.

    A valve sits on a link next to one of its end nodes. Starting from the link, the search crosses nodes to
    neighbouring links; reaching a link end that carries a valve stops there (that valve must close). A
    segment with no valves around it extends until the network has none left: then ``valves`` may be empty and
    the whole connected part is affected.

    Raises:
        UnknownAssetError: no such link.
    """
    if link_id not in network.links:
        raise UnknownAssetError(f"{network.kind.value}:{link_id}")
    valve_at: dict[tuple[str, str], str] = {(v.link_id, v.near_node_id): vid for vid, v in network.valves.items()}
    links_at: dict[str, list[str]] = {}
    for lid, link in network.links.items():
        links_at.setdefault(link.from_id, []).append(lid)
        links_at.setdefault(link.to_id, []).append(lid)
    closed: set[str] = set()
    seen_links = {link_id}
    seen_nodes: set[str] = set()
    queue: deque[str] = deque([link_id])
    while queue:
        lid = queue.popleft()
        link = network.links[lid]
        for end in (link.from_id, link.to_id):
            valve = valve_at.get((lid, end))
            if valve is not None:
                closed.add(valve)
                continue
            if end in seen_nodes:
                continue
            seen_nodes.add(end)
            for nxt in links_at.get(end, ()):
                if nxt in seen_links:
                    continue
                entry_valve = valve_at.get((nxt, end))
                if entry_valve is not None:
                    closed.add(entry_valve)
                    continue
                seen_links.add(nxt)
                queue.append(nxt)
    return Isolation(frozenset(closed), frozenset(seen_links), frozenset(seen_nodes))
