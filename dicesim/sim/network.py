"""Flow-level network on simpy: groups of flows share directed links max-min fairly.

Timing model of one flow: it waits for its route latency (sum of the edges' ``latency_s``) plus
the transfer's ``extra_latency_s``, then drains its bytes at its max-min fair share of every
link it crosses. Sharing is exact processor sharing: the rates of all draining flows change
whenever any flow starts draining or finishes, anywhere in the network. A transfer (a group of
flows, e.g. every pair of one all-to-all) completes when its last flow has drained. Zero-byte
flows finish when their latency ends; local flows (empty route) finish at once.

How it stays fast: the network plans the whole trajectory of all active flows at once
(:mod:`dicesim.sim.flowplan`) and schedules one simpy timeout per group completion; a new
transfer re-plans from the current instant. Plans are memoised per *busy period history*
(which groups arrived at which offset since the network was last idle), so identical
transfers on an otherwise idle network, or identical lock-step or periodic overlaps, cost
O(1). A plan is a pure function of that history, so memoisation never changes a result. To make
periodic overlaps repeat bit-exactly, an arrival's offset inside a busy period is rounded up to
a 2**-40 s (~0.9 ps) grid, with or without memoisation; that is the only approximation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import simpy

from dicesim.errors import TopologyError
from dicesim.sim.flowplan import FlowTable, Plan, carry_over, make_table, simulate

Edge = tuple[Any, Any]
Route = tuple[Edge, ...]
LinkBusyHook = Callable[[int, float, float, float], None]
"""``on_link_busy(link_id, start_s, end_s, nbytes)``: one maximal busy period of one link."""

_GRID_EXP = 40  # arrival offsets inside a busy period live on a 2**-_GRID_EXP s grid
_HISTORY_MAX = 16
_ZERO_START = np.zeros(1, dtype=np.intp)  # longer busy periods are not memoised (keys would rarely repeat)


@dataclass(frozen=True, slots=True)
class TransferDone:
    """Value of a transfer's completion event."""

    tag: Any
    start_s: float
    end_s: float


class FlowGroup:
    """A compiled transfer: its flows resolved to link indices (made by :meth:`FlowNetwork.compile`).

    Reuse it for repeated identical transfers: it skips route resolution and key hashing.
    """

    __slots__ = ("net_id", "gid", "n_flows", "n_local", "nbytes", "lat_F", "pair_flow_P",
                 "pair_link_P", "pair_weight_P", "links_L", "pair_local_P", "cap_L")

    def __init__(self, net_id, gid, n_local, nbytes, lat_F, pair_flow_P, pair_link_P, pair_weight_P,
                 cap_global):
        self.net_id, self.gid, self.n_local = net_id, gid, n_local
        self.nbytes, self.lat_F = nbytes, lat_F
        self.n_flows = int(nbytes.shape[0])
        self.pair_flow_P, self.pair_link_P, self.pair_weight_P = pair_flow_P, pair_link_P, pair_weight_P
        # the group's own link numbering, so a plan of this group alone needs no set union
        links, local = np.unique(pair_link_P, return_inverse=True)
        self.links_L, self.pair_local_P, self.cap_L = links, local.astype(np.intp), cap_global[links]


class _Active:
    __slots__ = ("slot", "event", "tag", "start_s", "done_rel")

    def __init__(self, slot, event, tag, start_s):
        self.slot, self.event, self.tag, self.start_s = slot, event, tag, start_s
        self.done_rel = math.inf


class FlowNetwork:
    """Link state of one topology inside one simpy environment.

    ``G``: ``networkx.DiGraph`` whose edges carry ``bw_Bps`` (> 0, may be inf) and ``latency_s``
    (>= 0); the edge attribute ``link`` (or ``link_class``) names its class for statistics.
    ``on_link_busy``: optional hook called once per maximal busy period of a link.
    ``memo_size``: number of memoised plans kept (0 disables memoisation).
    """

    def __init__(self, env: simpy.Environment, G: nx.DiGraph, *,
                 on_link_busy: LinkBusyHook | None = None, memo_size: int = 4096,
                 group_cache_size: int = 65536):
        self.env = env
        self._edges: list[Edge] = list(G.edges)
        self._link_id = {e: i for i, e in enumerate(self._edges)}
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
        self._cap = np.array(cap, dtype=float)
        self._lat = lat
        self._cls = cls
        self._hook = on_link_busy
        self._memo_size = int(memo_size)
        self._group_cache_size = int(group_cache_size)
        self._routes: dict[Route, tuple[np.ndarray, np.ndarray, float]] = {}
        self._group_cache: dict[Any, FlowGroup] = {}
        self._next_gid = 0
        self._memo: dict[tuple, tuple[FlowTable, Plan]] = {}
        self.memo_hits = 0
        self.memo_misses = 0
        n_l = len(self._edges)
        self._nbytes_L = np.zeros(n_l)
        self._busy_L = np.zeros(n_l)
        self._open_start_L = np.full(n_l, np.nan)
        self._open_bytes_L = np.zeros(n_l)
        # current busy period: origin, arrivals, undelivered groups, table, plan, accounting cursor
        self._t0_s = 0.0
        self._history: list[tuple[int, float]] = []
        self._active: dict[int, _Active] = {}
        self._table: FlowTable | None = None
        self._plan: Plan | None = None
        self._acct_k = 0
        self._acct_r = 0.0
        self._version = 0

    # ------------------------------------------------------------------ public API
    @property
    def links(self) -> tuple[Edge, ...]:
        """Directed edges in link-id order."""
        return tuple(self._edges)

    def link_id(self, edge: Edge) -> int:
        """Integer id of a directed edge (used by ``on_link_busy``)."""
        try:
            return self._link_id[edge]
        except KeyError:
            raise TopologyError(f"no link {edge[0]}->{edge[1]} in the topology") from None

    @property
    def idle(self) -> bool:
        """True when no transfer is in flight."""
        return not self._active

    def compile(self, flows: Sequence[tuple[Route, float]], extra_latency_s: float = 0.0) -> FlowGroup:
        """Resolve ``[(route, nbytes), ...]`` once; pass the result to :meth:`transfer` repeatedly."""
        try:
            key = (tuple(flows), float(extra_latency_s))
            hash(key)
        except TypeError:  # routes given as lists
            key = (tuple((tuple(map(tuple, r)), b) for r, b in flows), float(extra_latency_s))
        g = self._group_cache.get(key)
        if g is None:
            g = self._compile(key[0], key[1])
            if len(self._group_cache) >= self._group_cache_size:
                self._group_cache.pop(next(iter(self._group_cache)))
            self._group_cache[key] = g
        return g

    def transfer(self, flows: Sequence[tuple[Route, float]] | FlowGroup, extra_latency_s: float = 0.0,
                 tag: Any = None) -> simpy.Event:
        """Start a group of flows now; the returned event succeeds with a :class:`TransferDone`
        when all of them have finished. ``extra_latency_s`` is ignored for a :class:`FlowGroup`
        (it was fixed at compile time)."""
        g = flows if isinstance(flows, FlowGroup) else self.compile(flows, extra_latency_s)
        if g.net_id != id(self):
            raise ValueError("FlowGroup was compiled by another FlowNetwork")
        env = self.env
        now = env.now
        ev = env.event()
        if g.n_flows == 0:
            return ev.succeed(TransferDone(tag, now, now))
        if not self._active:
            self._t0_s = now
            self._history = []
            r = 0.0
        else:
            # Arrival offsets are rounded up to a 2**-40 s (~0.9 ps) grid so that a periodic
            # overlap repeats bit-exactly (and hits the memo) despite absolute-time rounding.
            r = math.ldexp(math.ceil(math.ldexp(now - self._t0_s, _GRID_EXP)), -_GRID_EXP)
            self._account_to(r)
        slot = len(self._history)
        self._history.append((g.gid, r))
        key = tuple(self._history) if slot < _HISTORY_MAX and self._memo_size > 0 else None
        hit = self._memo.get(key) if key is not None else None
        if hit is not None:
            self.memo_hits += 1
            table, plan = hit
        else:
            self.memo_misses += 1
            parts = carry_over(self._table, self._plan, r) if self._active else []
            if parts:
                parts.append((slot, g.nbytes, g.lat_F + r, g.pair_flow_P, g.pair_link_P, g.pair_weight_P))
                table = make_table(r, parts, self._cap)
            else:
                table = FlowTable(r, g.nbytes, g.lat_F + r, g.pair_flow_P, g.pair_local_P, g.pair_weight_P,
                                  g.links_L, g.cap_L, np.array([slot], dtype=np.intp), _ZERO_START)
            plan = simulate(table)
            if key is not None:
                if len(self._memo) >= self._memo_size:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[key] = (table, plan)
        self._table, self._plan = table, plan
        self._acct_k, self._acct_r = 0, r
        self._active[slot] = _Active(slot, ev, tag, now)
        active = self._active
        for s, fin in zip(table.group_slot_G.tolist(), plan.group_fin_G.tolist()):
            active[s].done_rel = fin
        self._schedule()
        return ev

    def link_stats(self) -> list[dict[str, Any]]:
        """Per directed link: ``link`` (u, v), ``link_class``, ``nbytes`` carried and ``busy_s``
        (time with at least one flow draining), counted up to now."""
        if self._active:
            self._account_to(self.env.now - self._t0_s)
        return [
            {"link": e, "link_class": c, "nbytes": float(b), "busy_s": float(s)}
            for e, c, b, s in zip(self._edges, self._cls, self._nbytes_L, self._busy_L)
        ]

    # ------------------------------------------------------------------ internals
    def _compile(self, flows: tuple, extra_latency_s: float) -> FlowGroup:
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
        gid = self._next_gid
        self._next_gid += 1
        return FlowGroup(id(self), gid, n_local, np.array(nbytes, dtype=float), np.array(lat, dtype=float),
                         np.repeat(np.arange(len(nbytes), dtype=np.intp), lens),
                         np.array(ids, dtype=np.intp), np.array(weights, dtype=float), self._cap)

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
        ids = sorted(counts)
        hit = (ids, [float(counts[i]) for i in ids], lat)
        self._routes[route] = hit
        return hit

    def _schedule(self) -> None:
        nxt = min(a.done_rel for a in self._active.values())
        self._version += 1
        delay = max(self._t0_s + nxt - self.env.now, 0.0)
        to = self.env.timeout(delay, value=(self._version, nxt))
        to.callbacks.append(self._on_timeout)

    def _on_timeout(self, to: simpy.Event) -> None:
        version, r = to.value
        if version != self._version:
            return  # superseded by a later re-plan
        now = self.env.now
        done = [a for a in self._active.values() if a.done_rel <= r]
        for a in done:
            del self._active[a.slot]
        if self._active:
            self._schedule()
        else:
            self._account_to(self._plan.t_end)
            if self._hook is not None:
                self._close_open_periods()
            self._table = self._plan = None
        for a in done:
            a.event.succeed(TransferDone(a.tag, a.start_s, now))

    def _account_to(self, r: float) -> None:
        plan, links = self._plan, self._table.links_L
        if (self._hook is None and self._acct_k == 0 and self._acct_r == plan.t_seg[0]
                and r >= plan.t_end):
            self._nbytes_L[links] += plan.total_bytes_L
            self._busy_L[links] += plan.total_busy_L
            self._acct_k, self._acct_r = plan.t_seg.shape[0] - 1, r
            return
        self._acct_k, pieces = plan.walk(self._acct_k, self._acct_r, r)
        self._acct_r = max(self._acct_r, r)
        for a, b, busy_L, bytes_L in pieces:
            self._nbytes_L[links] += bytes_L
            self._busy_L[links[busy_L]] += b - a
            if self._hook is not None:
                self._track_periods(links, a, b, busy_L, bytes_L)

    def _track_periods(self, links, a, b, busy_L, bytes_L) -> None:
        t0 = self._t0_s
        opened = self._open_start_L
        busy_g = np.zeros(opened.shape[0], dtype=bool)
        busy_g[links[busy_L]] = True
        for i in np.flatnonzero(~np.isnan(opened) & ~busy_g).tolist():
            self._emit(i, opened[i], t0 + a)
        opened[busy_g & np.isnan(opened)] = t0 + a
        self._open_bytes_L[links] += bytes_L

    def _close_open_periods(self) -> None:
        end = self._t0_s + self._plan.t_end
        for i in np.flatnonzero(~np.isnan(self._open_start_L)).tolist():
            self._emit(i, self._open_start_L[i], end)

    def _emit(self, i: int, start_s: float, end_s: float) -> None:
        nbytes = float(self._open_bytes_L[i])
        self._open_start_L[i] = np.nan
        self._open_bytes_L[i] = 0.0
        self._hook(i, float(start_s), float(end_s), nbytes)
