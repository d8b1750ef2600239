"""Links of a topology as integer ids, and transfers compiled against them.

:class:`LinkTable` validates a topology graph once and turns routes (tuples of directed edges)
into link-id arrays, with a cache per route and per transfer. A :class:`FlowGroup` is one
compiled transfer: flat (flow, link, multiplicity) pairs that the planner consumes directly.
Legend: F flows, P (flow, link) pairs, L links.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np

from dicesim.errors import TopologyError
from dicesim.sim.network.flowplan import local_links

Edge = tuple[Any, Any]
Route = tuple[Edge, ...]


class FlowGroup:
    """A compiled transfer (made by :meth:`FlowNetwork.compile`); reuse it for repeated identical
    transfers: it skips route resolution and key hashing. Read-only."""

    __slots__ = ("owner", "gid", "n_flows", "n_local", "nbytes", "lat_F", "pair_flow_P",
                 "pair_link_P", "pair_weight_P", "links_L", "pair_local_P", "cap_L")

    def __init__(self, owner, gid, n_local, nbytes, lat_F, pair_flow_P, pair_link_P, pair_weight_P,
                 cap_global, local=None):
        self.owner, self.gid, self.n_local = owner, gid, n_local
        self.nbytes, self.lat_F = nbytes, lat_F
        self.n_flows = int(nbytes.shape[0])
        self.pair_flow_P, self.pair_link_P, self.pair_weight_P = pair_flow_P, pair_link_P, pair_weight_P
        # the group's own link numbering, so a plan of this group alone needs no set union
        # (``local``: that numbering, ``local_links``'s result, computed by the caller for many groups at once)
        links, local = local if local is not None else local_links(pair_link_P, cap_global.shape[0])
        self.links_L, self.pair_local_P, self.cap_L = links, local, cap_global[links]


class LinkTable:
    """Directed edges of ``G`` as link ids with capacity, latency and class; compiles transfers."""

    def __init__(self, G: nx.DiGraph, *, group_cache_size: int = 4096):
        self.edges: list[Edge] = list(G.edges)
        self._link_id = {e: i for i, e in enumerate(self.edges)}
        cap, lat, cls = [], [], []
        for u, v, d in G.edges(data=True):
            bw, lt = d.get("bw_Bps"), d.get("latency_s")
            if not isinstance(bw, (int, float)) or not bw > 0:
                raise TopologyError(f"edge {u}->{v}: bw_Bps must be a positive number, got {bw!r}")
            if not isinstance(lt, (int, float)) or not (0 <= lt < math.inf):
                raise TopologyError(f"edge {u}->{v}: latency_s must be finite and >= 0, got {lt!r}")
            cap.append(float(bw))
            lat.append(float(lt))
            cls.append(str(d.get("link", d.get("link_class", ""))))
        self.cap_L = np.array(cap, dtype=float)
        self.classes = cls
        self._lat = lat
        self._group_cache_size = int(group_cache_size)
        self._routes: dict[Route, tuple[list[int], list[float], float]] = {}
        self._groups: dict[Any, FlowGroup] = {}
        self._next_gid = 0

    def link_id(self, edge: Edge) -> int:
        try:
            return self._link_id[edge]
        except KeyError:
            raise TopologyError(f"no link {edge[0]}->{edge[1]} in the topology") from None

    def compile(self, flows: Sequence[tuple[Route, float]], extra_latency_s: float) -> FlowGroup:
        """The :class:`FlowGroup` of ``[(route, nbytes), ...]`` (cached by content)."""
        try:
            key = (tuple(flows), float(extra_latency_s))
            hash(key)
        except TypeError:  # routes given as lists
            key = (tuple((tuple(map(tuple, r)), b) for r, b in flows), float(extra_latency_s))
        g = self._groups.get(key)
        if g is None:
            g = self._build(key[0], key[1])
            if len(self._groups) >= self._group_cache_size:
                self._groups.pop(next(iter(self._groups)))
            self._groups[key] = g
        return g

    def pair_flows(self, routes: Sequence[Route], share: LinkShare | None = None) -> PairFlows:
        """Routes resolved once for transfers that differ only in their byte counts (see :class:`PairFlows`);
        ``share``: the route's links stand for several links each (see :class:`LinkShare`)."""
        resolved = [self._route(tuple(r)) if r else None for r in routes]
        if share is not None:
            resolved = [share.apply(r) if r else None for r in resolved]
        return PairFlows(self, resolved)

    def _new_group(self, n_local: int, nbytes, lat_F, pair_flow_P, pair_link_P, pair_weight_P,
                   local=None) -> FlowGroup:
        gid = self._next_gid
        self._next_gid += 1
        return FlowGroup(self, gid, n_local, nbytes, lat_F, pair_flow_P, pair_link_P, pair_weight_P, self.cap_L,
                         local)

    def _build(self, flows: tuple, extra_latency_s: float) -> FlowGroup:
        if not (0 <= extra_latency_s < math.inf):
            raise ValueError(f"extra_latency_s must be finite and >= 0, got {extra_latency_s}")
        nbytes, lat, lens, ids, weights = [], [], [], [], []
        n_local = 0
        for route, b in flows:
            if not (0 <= b < math.inf):
                raise ValueError(f"flow nbytes must be finite and >= 0, got {b}")
            if not route:
                n_local += 1
                continue
            r_ids, r_w, r_lat = self._route(route)
            nbytes.append(b)
            lat.append(r_lat + extra_latency_s)
            lens.append(len(r_ids))
            ids.extend(r_ids)
            weights.extend(r_w)
        return self._new_group(n_local, np.array(nbytes, dtype=float), np.array(lat, dtype=float),
                               np.repeat(np.arange(len(nbytes), dtype=np.intp), lens),
                               np.array(ids, dtype=np.intp), np.array(weights, dtype=float))

    def _route(self, route: Route) -> tuple[list[int], list[float], float]:
        hit = self._routes.get(route)
        if hit is not None:
            return hit
        counts: dict[int, int] = {}
        lat = 0.0
        prev = None
        for e in route:
            if prev is not None and prev[1] != e[0]:
                raise TopologyError(f"route is not contiguous: {prev[0]}->{prev[1]} then {e[0]}->{e[1]}")
            i = self.link_id(tuple(e))
            counts[i] = counts.get(i, 0) + 1
            lat += self._lat[i]
            prev = e
        ids = sorted(counts)  # a link crossed twice (staged through host memory) is loaded twice
        hit = (ids, [float(counts[i]) for i in ids], lat)
        self._routes[route] = hit
        return hit


class LinkShare:
    """A group that stands for itself and for equivalent groups in lock step with it (a quotient of
    the network, :mod:`dicesim.sim.fold`): its flow on link ``l`` stands for ``weight_L[l]`` copies of
    itself crossing the physical link, and loads link ``remap_L[l]`` (links of other simulated groups
    that carry the same mix of copies are one link). Copies of a flow get equal rates under max-min
    sharing, so one flow loading a link ``m`` times is exactly ``m`` copies."""

    __slots__ = ("remap_L", "weight_L")

    def __init__(self, remap_L: np.ndarray, weight_L: np.ndarray):
        self.remap_L, self.weight_L = remap_L, weight_L

    def apply(self, resolved: tuple[list[int], list[float], float]) -> tuple[list[int], list[float], float]:
        """A resolved route ``(link ids, multiplicities, latency)`` on the quotient network."""
        ids, ws, lat = resolved
        merged: dict[int, float] = {}
        for i, w in zip(ids, ws):
            q = int(self.remap_L[i])
            merged[q] = merged.get(q, 0.0) + w * float(self.weight_L[i])
        qs = sorted(merged)
        return qs, [merged[q] for q in qs], lat

    def links(self, ids: np.ndarray) -> np.ndarray:
        """Quotient ids of the links ``ids`` (sorted, distinct)."""
        return np.unique(self.remap_L[ids])


class PairFlows:
    """A fixed list of routes (say every ordered pair of an expert-parallel group) resolved once.

    :meth:`compile` turns one byte count per route into the :class:`FlowGroup` that
    :meth:`LinkTable.compile` would build for the routes with a positive count, in the same order,
    with array operations instead of a loop per flow (sampled routing compiles thousands of them).
    Each call makes a new group (no content cache: the caller keys its own).
    """

    def __init__(self, table: LinkTable, resolved: list[tuple[list[int], list[float], float] | None]):
        self._table = table
        self._routed = np.array([r is not None for r in resolved])
        lens = np.array([len(r[0]) if r else 0 for r in resolved], dtype=np.intp)
        self._len = lens
        self._start = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.intp)
        self._ids = np.array([i for r in resolved if r for i in r[0]], dtype=np.intp)
        self._w = np.array([w for r in resolved if r for w in r[1]], dtype=float)
        self._lat = np.array([r[2] if r else 0.0 for r in resolved], dtype=float)

    def same_latency(self, other: PairFlows) -> bool:
        """Whether route k of both lists has the same latency sum, bit for bit."""
        return np.array_equal(self._lat, other._lat) and np.array_equal(self._routed, other._routed)

    def compile(self, nbytes_R: np.ndarray, extra_latency_s: float) -> FlowGroup:
        """Flows for every route with ``nbytes_R > 0`` (one count per route, in route order)."""
        nb = np.asarray(nbytes_R)
        take = nb > 0
        n_local = int(np.count_nonzero(take & ~self._routed))
        ks = np.flatnonzero(take & self._routed)
        lens = self._len[ks]
        first = np.repeat(self._start[ks] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        at = first + np.arange(int(lens.sum()), dtype=np.intp)
        return self._table._new_group(n_local, nb[ks].astype(float), self._lat[ks] + float(extra_latency_s),
                                      np.repeat(np.arange(ks.shape[0], dtype=np.intp), lens), self._ids[at],
                                      self._w[at])

    def compile_many(self, nbytes_KR: np.ndarray, extra_latency_s: float) -> list[FlowGroup]:
        """``[compile(nb, extra_latency_s) for nb in nbytes_KR]``, element for element, with array operations
        over all ``K`` byte-count vectors at once (a sampled run compiles thousands of all-to-alls)."""
        nb = np.asarray(nbytes_KR)
        n_k = nb.shape[0]
        take = nb > 0
        n_local_K = np.count_nonzero(take & ~self._routed, axis=1)
        kk, ks = np.nonzero(take & self._routed)  # by vector, then in route order, as compile's flatnonzero
        lens = self._len[ks]
        first = np.repeat(self._start[ks] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        at = first + np.arange(int(lens.sum()), dtype=np.intp)
        ids, w = self._ids[at], self._w[at]
        nbytes_F, lat_F = nb[kk, ks].astype(float), self._lat[ks] + float(extra_latency_s)
        f0 = np.concatenate(([0], np.cumsum(np.bincount(kk, minlength=n_k)))).astype(np.intp)
        pf = np.repeat(np.arange(kk.shape[0], dtype=np.intp) - f0[kk], lens)
        k_of_p = np.repeat(kk, lens)
        p0 = np.concatenate(([0], np.cumsum(np.bincount(k_of_p, minlength=n_k)))).astype(np.intp)
        # each vector's own link numbering (flowplan.local_links of its pairs): its distinct links, sorted
        n_links = self._table.cap_L.shape[0]
        uniq, inv = _unique_inverse(k_of_p * n_links + ids, n_k * n_links)
        u0 = np.searchsorted(uniq, np.arange(n_k + 1, dtype=np.int64) * n_links)
        links_U, local_P = uniq % n_links, inv.ravel() - u0[k_of_p]
        new = self._table._new_group
        return [new(int(n_local_K[k]), nbytes_F[f0[k]:f0[k + 1]], lat_F[f0[k]:f0[k + 1]], pf[p0[k]:p0[k + 1]],
                    ids[p0[k]:p0[k + 1]], w[p0[k]:p0[k + 1]], (links_U[u0[k]:u0[k + 1]], local_P[p0[k]:p0[k + 1]]))
                for k in range(n_k)]


def _unique_inverse(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for integers in ``[0, bound)``: by a presence table when
    that is small (no sort; the same two integer arrays)."""
    if bound > 8 * keys.shape[0] + 4096:
        return np.unique(keys, return_inverse=True)
    present = np.zeros(bound, dtype=bool)
    present[keys] = True
    return np.flatnonzero(present), (np.cumsum(present) - 1)[keys]
