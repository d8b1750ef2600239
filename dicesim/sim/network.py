"""Flow-level network on simpy: groups of flows share directed links max-min fairly.

Timing model of one flow: it waits for its route latency (sum of the edges' ``latency_s``) plus
the transfer's ``extra_latency_s``, then drains its bytes at its max-min fair share of every
link it crosses. Sharing is exact processor sharing: the rates of all draining flows change
whenever any flow starts draining or finishes, anywhere in the network. A transfer (a group of
flows, e.g. every pair of one all-to-all) completes when its last flow has drained. Zero-byte
flows finish when their latency ends; local flows (empty route) finish at once.

How it stays fast. Transfers whose flows share links (transitively) form a *component*; flows
in different components cannot slow each other, so each component is planned on its own. A
component plans the whole trajectory of its flows at once (:mod:`dicesim.sim.flowplan`) and
schedules one simpy timeout per transfer completion; a new transfer that shares a link with a
busy component re-plans it from the current instant. Plans are memoised per component
*history* (which transfers arrived at which offset since the component formed), so identical
transfers on otherwise idle links, and identical lock-step or periodic overlaps, cost O(1). A
plan is a pure function of that history, so memoisation never changes a result. To make
periodic overlaps repeat bit-exactly, an arrival's offset inside a component is rounded up to a
2**-40 s (~0.9 ps) grid, with or without memoisation; that is the only approximation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import simpy

from dicesim.sim.flowgroup import Edge, FlowGroup, LinkTable, Route
from dicesim.sim.flowplan import FlowTable, Plan, carry_over, make_table, simulate

__all__ = ["Edge", "FlowGroup", "FlowNetwork", "LinkBusyHook", "Route", "TransferDone"]
LinkBusyHook = Callable[[int, float, float, float], None]
"""``on_link_busy(link_id, start_s, end_s, nbytes)``: one maximal busy period of one link."""

_GRID_EXP = 40  # arrival offsets inside a component live on a 2**-_GRID_EXP s grid
_KEY_MAX = 32  # components with longer histories are not memoised (keys would rarely repeat)
_ZERO_START = np.zeros(1, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class TransferDone:
    """Value of a transfer's completion event."""

    tag: Any
    start_s: float
    end_s: float


class _Transfer:
    __slots__ = ("event", "tag", "start_s", "done_rel", "delivered")

    def __init__(self, event, tag, start_s):
        self.event, self.tag, self.start_s = event, tag, start_s
        self.done_rel = math.inf
        self.delivered = False


class _Component:
    """Transfers that share links. ``order`` is aligned with the groups of ``table``; ``finished``
    holds transfers with no flow left in the table whose completion is not delivered yet."""

    __slots__ = ("cid", "t0_s", "history", "key_size", "order", "finished", "table", "plan",
                 "acct_k", "acct_r", "version")

    def __init__(self, cid: int, t0_s: float):
        self.cid, self.t0_s = cid, t0_s
        self.history: list[tuple[Any, float]] = []
        self.key_size = 0  # > _KEY_MAX: not memoised
        self.order: list[_Transfer] = []
        self.finished: list[_Transfer] = []
        self.table: FlowTable | None = None
        self.plan: Plan | None = None
        self.acct_k, self.acct_r, self.version = 0, 0.0, 0


def _grid(r: float) -> float:
    return math.ldexp(math.ceil(math.ldexp(r, _GRID_EXP)), -_GRID_EXP)


class FlowNetwork:
    """Link state of one topology inside one simpy environment.

    ``G``: ``networkx.DiGraph`` whose edges carry ``bw_Bps`` (> 0, may be inf) and ``latency_s``
    (>= 0); the edge attribute ``link`` (or ``link_class``) names its class for statistics.
    ``on_link_busy``: optional hook called once per maximal busy period of a link (periods of
    one link arrive in time order; different links may interleave).
    ``memo_size``, ``memo_bytes``: at most this many memoised plans, of about this much memory
    (0 disables memoisation). ``group_cache_size``: compiled transfers kept by :meth:`compile`.
    """

    def __init__(self, env: simpy.Environment, G: nx.DiGraph, *,
                 on_link_busy: LinkBusyHook | None = None, memo_size: int = 4096,
                 memo_bytes: int = 256 << 20, group_cache_size: int = 4096):
        self.env = env
        self._lt = lt = LinkTable(G, group_cache_size=group_cache_size)
        self._cap = lt.cap_L
        n_l = self._cap.shape[0]
        self._hook = on_link_busy
        self._memo_size = int(memo_size)
        self._memo: dict[tuple, tuple[FlowTable, Plan]] = {}
        self._memo_budget, self._memo_used = int(memo_bytes), 0
        self.memo_hits = 0
        self.memo_misses = 0
        self._comps: dict[int, _Component] = {}
        self._next_cid = 0
        self._owner_L = np.full(n_l, -1, dtype=np.intp)  # component holding each link's flows
        self._mark_L = np.zeros(n_l, dtype=bool)  # scratch
        self._nbytes_L = np.zeros(n_l)
        self._busy_L = np.zeros(n_l)
        self._open_start_L = np.full(n_l, np.nan)  # busy periods (hook only)
        self._open_bytes_L = np.zeros(n_l)
        self._last_end_L = np.zeros(n_l)

    # ------------------------------------------------------------------ public API
    @property
    def links(self) -> tuple[Edge, ...]:
        """Directed edges in link-id order."""
        return tuple(self._lt.edges)

    def link_id(self, edge: Edge) -> int:
        """Integer id of a directed edge (used by ``on_link_busy``)."""
        return self._lt.link_id(edge)

    @property
    def idle(self) -> bool:
        """True when no transfer is in flight."""
        return not self._comps

    def compile(self, flows: Sequence[tuple[Route, float]], extra_latency_s: float = 0.0) -> FlowGroup:
        """Resolve ``[(route, nbytes), ...]`` once; pass the result to :meth:`transfer` repeatedly.
        Results are cached by content, so compiling equal flows twice returns the same group."""
        return self._lt.compile(flows, extra_latency_s)

    def transfer(self, flows: Sequence[tuple[Route, float]] | FlowGroup, extra_latency_s: float = 0.0,
                 tag: Any = None) -> simpy.Event:
        """Start a group of flows now; the returned event succeeds with a :class:`TransferDone`
        when all of them have finished. ``extra_latency_s`` is ignored for a :class:`FlowGroup`
        (it was fixed at compile time)."""
        g = flows if isinstance(flows, FlowGroup) else self._lt.compile(flows, extra_latency_s)
        if g.owner is not self._lt:
            raise ValueError("FlowGroup was compiled by another FlowNetwork")
        now = self.env.now
        ev = self.env.event()
        if g.n_flows == 0:
            return ev.succeed(TransferDone(tag, now, now))
        rec = _Transfer(ev, tag, now)
        merge = self._overlapping(g, now)
        if self._hook is not None:
            self._take_over(g, merge, now)
        old: list[tuple[_Component, float, float]] = []  # (component, offset, re-basing shift)
        if len(merge) == 1:
            comp, r = merge[0]
            comp.history.append((g.gid, r))
            comp.key_size += 1
            old.append((comp, r, 0.0))
        else:
            comp = _Component(self._next_cid, now)
            self._next_cid += 1
            self._comps[comp.cid] = comp
            r = 0.0
            if merge:  # the new transfer bridges components: re-base them onto now
                token = (tuple((tuple(c.history), rc) for c, rc in merge), g.gid)
                comp.key_size = sum(c.key_size for c, _ in merge) + 1
                comp.history.append((token, 0.0))
                old = [(c, rc, rc) for c, rc in merge]
            else:
                comp.history.append((g.gid, 0.0))
                comp.key_size = 1
        survivors: list[_Transfer] = []
        finished: list[_Transfer] = []
        for c, rc, shift in old:
            self._account_to(c, rc)
            for t, gf in zip(c.order, c.plan.group_fin_G.tolist()):
                (survivors if gf > rc else finished).append(t)
            finished += c.finished
            if shift:
                for t in c.order + c.finished:
                    t.done_rel -= shift
        key = tuple(comp.history) if comp.key_size <= _KEY_MAX and self._memo_size > 0 else None
        hit = self._memo.get(key) if key is not None else None
        if hit is not None:
            self.memo_hits += 1
            table, plan = hit
        else:
            self.memo_misses += 1
            parts = [p for c, rc, shift in old for p in carry_over(c.table, c.plan, rc, shift)]
            if parts:
                parts.append((g.nbytes, g.lat_F + r, g.pair_flow_P, g.pair_link_P, g.pair_weight_P))
                table = make_table(r, parts, self._cap)
            else:
                table = FlowTable(r, g.nbytes, g.lat_F + r, g.pair_flow_P, g.pair_local_P, g.pair_weight_P,
                                  g.links_L, g.cap_L, _ZERO_START)
            plan = simulate(table)
            if key is not None:
                self._remember(key, table, plan)
        for c, _, _ in old:
            self._release(c, keep=table.links_L)
            if c is not comp:
                c.version += 1  # its pending timeout is void
                del self._comps[c.cid]
        comp.table, comp.plan = table, plan
        comp.acct_k, comp.acct_r = 0, r
        comp.order = survivors + [rec]
        comp.finished = [t for t in finished if not t.delivered]
        for t, gf in zip(comp.order, plan.group_fin_G.tolist()):
            t.done_rel = gf
        self._owner_L[table.links_L] = comp.cid
        self._schedule(comp)
        return ev

    def link_stats(self) -> list[dict[str, Any]]:
        """Per directed link: ``link`` (u, v), ``link_class``, ``nbytes`` carried and ``busy_s``
        (time with at least one flow draining), counted up to now."""
        for c in self._comps.values():
            self._account_to(c, self.env.now - c.t0_s)
        return [
            {"link": e, "link_class": c, "nbytes": float(b), "busy_s": float(s)}
            for e, c, b, s in zip(self._lt.edges, self._lt.classes, self._nbytes_L, self._busy_L)
        ]

    # ------------------------------------------------------------------ internals
    def _remember(self, key: tuple, table: FlowTable, plan: Plan) -> None:
        """Memoise a plan; evict the oldest ones while over the entry count or the byte budget."""
        size = plan.nbytes_estimate
        if size > self._memo_budget:
            return
        memo = self._memo
        while memo and (len(memo) >= self._memo_size or self._memo_used + size > self._memo_budget):
            _, old = memo.pop(next(iter(memo)))
            self._memo_used -= old.nbytes_estimate
        memo[key] = (table, plan)
        self._memo_used += size

    def _overlapping(self, g: FlowGroup, now: float) -> list[tuple[_Component, float]]:
        """Busy components with an unfinished flow on one of ``g``'s links, with their offsets."""
        owners = self._owner_L[g.links_L]
        owners = owners[owners >= 0]
        if owners.size == 0:
            return []
        out = []
        mark = self._mark_L
        for cid in sorted(set(owners.tolist())):
            c = self._comps[cid]
            r = _grid(now - c.t0_s)
            table = c.table
            if r < c.plan.fin_min:  # every flow still unfinished: all of its links are live
                out.append((c, r))
                continue
            live_f = c.plan.fin_F > r
            live_links = table.links_L[table.pair_link_P[live_f[table.pair_flow_P]]]
            mark[live_links] = True
            hit = bool(mark[g.links_L].any())
            mark[live_links] = False
            if hit:
                out.append((c, r))
        return out

    def _take_over(self, g: FlowGroup, merge: list, now: float) -> None:
        """Close the busy periods of ``g``'s links that idle components still hold (hook only)."""
        merged = {c.cid for c, _ in merge}
        owners = self._owner_L[g.links_L]
        for cid in sorted(set(owners[owners >= 0].tolist()) - merged):
            c = self._comps[cid]
            self._account_to(c, _grid(now - c.t0_s))
            taken = g.links_L[owners == cid]
            self._owner_L[taken] = -1
            for i in taken[~np.isnan(self._open_start_L[taken])].tolist():
                self._emit(i)

    def _schedule(self, comp: _Component) -> None:
        nxt = min(t.done_rel for t in comp.order + comp.finished if not t.delivered)
        comp.version += 1
        delay = max(comp.t0_s + nxt - self.env.now, 0.0)
        to = self.env.timeout(delay, value=(comp, comp.version, nxt))
        to.callbacks.append(self._on_timeout)

    def _on_timeout(self, to: simpy.Event) -> None:
        comp, version, r = to.value
        if version != comp.version:
            return  # superseded by a re-plan or a merge
        now = self.env.now
        done = []
        pending = False
        for t in comp.order + comp.finished:
            if not t.delivered:
                if t.done_rel <= r:
                    t.delivered = True
                    done.append(t)
                else:
                    pending = True
        comp.finished = [t for t in comp.finished if not t.delivered]
        if pending:
            self._schedule(comp)
        else:
            self._account_to(comp, comp.plan.t_end)
            self._release(comp, keep=None)
            del self._comps[comp.cid]
        for t in done:
            t.event.succeed(TransferDone(t.tag, t.start_s, now))

    def _release(self, comp: _Component, keep: np.ndarray | None) -> None:
        """Give up ``comp``'s links (except ``keep``); close their busy periods for the hook."""
        links = comp.table.links_L
        if keep is not None:
            mark = self._mark_L
            mark[keep] = True
            links = links[~mark[links]]
            mark[keep] = False
        mine = links[self._owner_L[links] == comp.cid]
        self._owner_L[mine] = -1
        if self._hook is not None:
            for i in mine[~np.isnan(self._open_start_L[mine])].tolist():
                self._emit(i)

    def _account_to(self, comp: _Component, r: float) -> None:
        plan, links = comp.plan, comp.table.links_L
        if self._hook is None and comp.acct_k == 0 and comp.acct_r == plan.t_seg[0] and r >= plan.t_end:
            self._nbytes_L[links] += plan.total_bytes_L
            self._busy_L[links] += plan.total_busy_L
            comp.acct_k, comp.acct_r = plan.t_seg.shape[0] - 1, r
            return
        comp.acct_k, pieces = plan.walk(comp.acct_k, comp.acct_r, r)
        comp.acct_r = max(comp.acct_r, r)
        for a, b, busy_L, bytes_L in pieces:
            self._nbytes_L[links] += bytes_L
            self._busy_L[links[busy_L]] += b - a
            if self._hook is not None:
                self._track(comp, links, a, b, busy_L, bytes_L)

    def _track(self, comp: _Component, links, a: float, b: float, busy_L, bytes_L) -> None:
        opened, t0 = self._open_start_L, comp.t0_s
        quiet = links[~busy_L]
        quiet = quiet[self._owner_L[quiet] == comp.cid]  # a link taken over is not ours to close
        for i in quiet[~np.isnan(opened[quiet])].tolist():
            self._emit(i)
        on = links[busy_L]
        opened[on[np.isnan(opened[on])]] = t0 + a
        self._last_end_L[on] = t0 + b
        self._open_bytes_L[links] += bytes_L

    def _emit(self, i: int) -> None:
        start, nbytes = float(self._open_start_L[i]), float(self._open_bytes_L[i])
        self._open_start_L[i] = np.nan
        self._open_bytes_L[i] = 0.0
        self._hook(i, start, float(self._last_end_L[i]), nbytes)
