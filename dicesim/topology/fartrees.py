"""Shortest-route trees from many GPUs at once, for groups spread across a fabric.

A group whose members sit on different servers needs, from each member, a search that crosses
most of the fabric; on a thousand-GPU rail fabric that is a thousand Python searches of the
whole graph. :class:`FarTrees` runs them in one compiled multi-source Dijkstra
(:func:`scipy.sparse.csgraph.dijkstra`) and rebuilds each tree's predecessors with
:mod:`dicesim.topology.routing`'s tie-break, so the routes are the same:

- the key (latency in integer femtoseconds, hops) is one exact integer weight per edge,
  ``latency_fs * HOPS + 1``: sums stay below 2**53, so float64 adds them exactly and compares
  them in the key's lexicographic order (no route has ``HOPS`` hops);
- the predecessor of a node is the smallest node id (names in sorted order) among the nodes
  whose distance plus the edge's weight is the node's distance: the node the search keeps, since
  it sees every such node before it settles the node and keeps the smaller one on a tie.

Only for peer-to-peer graphs (any GPU may forward), where every source searches the same graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

#: hop weight inside the combined key; routes have far fewer hops
HOPS = 1024
#: sources searched per compiled call (bounds the distance matrix: sources x nodes)
_CHUNK = 256


class FarTrees:
    """Distances and predecessors from each of ``sources`` (node names) over ``G`` (peer-to-peer)."""

    def __init__(self, G: nx.DiGraph, sources: Sequence[str], fs_per_s: float):
        # imported here: only groups spread over servers need it, and it is ~60 ms of every start-up
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import dijkstra

        self.names = sorted(G.nodes)
        self._idx = idx = {n: i for i, n in enumerate(self.names)}
        u = np.array([idx[a] for a, _ in G.edges], dtype=np.int64)
        v = np.array([idx[b] for _, b in G.edges], dtype=np.int64)
        lat = np.array([max(1, round(d["latency_s"] * fs_per_s)) for _, _, d in G.edges(data=True)], dtype=np.float64)
        w = lat * HOPS + 1.0
        if w.size and float(w.max()) * len(self.names) >= 2.0 ** 53:
            raise ValueError("latencies too large for exact integer route keys")
        n = len(self.names)
        graph = csr_matrix((w, (u, v)), shape=(n, n))
        order = np.lexsort((u, v))  # by head, then by smaller tail: the tie-break's order
        self._u, self._v, self._w = u[order], v[order], w[order]
        self._src = {name: i for i, name in enumerate(sources)}
        self._pred = np.full((len(sources), n), -1, dtype=np.int64)
        self._dist = np.full((len(sources), n), np.inf)
        src_idx = np.array([idx[s] for s in sources], dtype=np.int64)
        for a in range(0, len(sources), _CHUNK):
            rows = src_idx[a:a + _CHUNK]
            dist = dijkstra(graph, directed=True, indices=rows)
            self._dist[a:a + _CHUNK] = dist
            for k, d in enumerate(dist):
                tight = d[self._u] + self._w == d[self._v]  # inf + w != inf is False for unreached tails
                heads, first = np.unique(self._v[tight], return_index=True)
                self._pred[a + k, heads] = self._u[tight][first]

    def __contains__(self, name: str) -> bool:
        return name in self._src

    def tree(self, src: str) -> tuple[_Keys, _Preds]:
        """``(node -> key, node -> predecessor)`` as the search from ``src`` returns them (read-only
        mappings; the key is ``(latency_fs, hops)``)."""
        i = self._src[src]
        return _Keys(self._idx, self._dist[i]), _Preds(self._idx, self.names, self._pred[i])


class _Keys:
    """node -> (latency_fs, hops) of one search, for reached nodes."""

    __slots__ = ("_idx", "_dist")

    def __init__(self, idx: dict[str, int], dist: np.ndarray):
        self._idx, self._dist = idx, dist

    def __contains__(self, name: object) -> bool:
        j = self._idx.get(name)  # type: ignore[arg-type]
        return j is not None and bool(np.isfinite(self._dist[j]))

    def __getitem__(self, name: str) -> tuple[int, int]:
        if name not in self:
            raise KeyError(name)
        return divmod(int(self._dist[self._idx[name]]), HOPS)

    def __iter__(self):
        names = sorted(self._idx, key=self._idx.__getitem__)
        return (names[j] for j in np.flatnonzero(np.isfinite(self._dist)).tolist())


class _Preds:
    """node -> predecessor of one search."""

    __slots__ = ("_idx", "_names", "_pred")

    def __init__(self, idx: dict[str, int], names: list[str], pred: np.ndarray):
        self._idx, self._names, self._pred = idx, names, pred

    def __getitem__(self, name: str) -> str:
        p = int(self._pred[self._idx[name]])
        if p < 0:
            raise KeyError(name)
        return self._names[p]
