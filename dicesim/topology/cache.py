"""Topology graphs and their routes kept for reuse by one owner: a study's evaluator.

A study simulates hundreds of configurations on a handful of topologies; each configuration
built its graph again (:func:`~dicesim.topology.get_topology` returns a fresh one) and searched
the same routes twice (the simulator's fold, the trust facts). The owner makes a
:class:`TopologyCache`; its graphs are shared by every configuration it evaluates, so none of
them may be changed (the simulator and the trust layer copy a graph before changing capacities).
Nothing is cached at module level; a cache sent to another process arrives empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from dicesim.topology.presets import get_topology
from dicesim.topology.routing import RouteTable, group_routes


class TopologyCache:
    """Memo of :func:`get_topology` and :func:`group_routes` for one owner."""

    def __init__(self) -> None:
        self._graphs: dict[str, nx.DiGraph] = {}
        #: (id(G), groups) -> (G, tables): the graph is kept with its tables, so its id stays its own
        self._routes: dict[tuple, tuple[nx.DiGraph, list[RouteTable]]] = {}

    def graph(self, name: str) -> nx.DiGraph:
        """The topology ``name`` (built once; read-only for its users)."""
        G = self._graphs.get(str(name))
        if G is None:
            G = self._graphs[str(name)] = get_topology(name)
        return G

    def routes(self, G: nx.DiGraph, groups: Sequence[Iterable[int]]) -> list[RouteTable]:
        """:func:`group_routes` of ``groups`` on ``G``, searched once per (graph, groups)."""
        key = (id(G), tuple(tuple(g) for g in groups))
        hit = self._routes.get(key)
        if hit is not None and hit[0] is G:
            return hit[1]
        tables = group_routes(G, key[1])
        self._routes[key] = (G, tables)
        return tables

    def __getstate__(self) -> dict:
        """Pickled (to a Dask worker) without its graphs: they are rebuilt where they are used."""
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
