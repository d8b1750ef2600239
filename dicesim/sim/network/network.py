"""Flow-level network on simpy: groups of flows share directed links max-min fairly.

Timing model of one flow: it waits for its route latency (sum of the edges' ``latency_s``) plus
the transfer's ``extra_latency_s``, then drains its bytes at its max-min fair share of every
link it crosses. Sharing is exact processor sharing: the rates of all draining flows change
whenever any flow starts draining or finishes, anywhere in the network. A transfer (a group of
flows, e.g. every pair of one all-to-all) completes when its last flow has drained. Zero-byte
flows finish when their latency ends; local flows (empty route) finish at once.

How it stays fast. Transfers whose flows share links (transitively) form a *component*; flows
in different components cannot slow each other, so each component is planned on its own. A
component plans the whole trajectory of its flows at once (:mod:`dicesim.sim.network.flowplan`) and
schedules one simpy timeout per transfer completion; a new transfer that shares a link with a
busy component re-plans it from the current instant. Plans are memoised per component
*history* (which transfers arrived at which offset since the component formed), so identical
transfers on otherwise idle links, and identical lock-step or periodic overlaps, cost O(1). A
plan is a pure function of that history, so memoisation never changes a result. To make
periodic overlaps repeat bit-exactly, an arrival's offset inside a component is rounded up to a
2**-40 s (~0.9 ps) grid, with or without memoisation; that is the only approximation.
Link speed can change over time (:meth:`FlowNetwork.set_link_scale`, :mod:`dicesim.sim.network.linkscale`):
a change re-plans only the components with an unfinished flow on a changed link, and is part of
their history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx
import numpy as np
import simpy

from dicesim.sim.network.batchplan import mirrored, plan_many
from dicesim.sim.network.flowgroup import Edge, FlowGroup, LinkShare, LinkTable, PairFlows, Route
from dicesim.sim.network.flowplan import FlowTable, Trajectory, carry_over, make_table, simulate
from dicesim.sim.network.components import KEY_MAX, Component, Transfer, TransferDone, grid
from dicesim.sim.network.ledger import LinkBusyHook, LinkLedger
from dicesim.sim.network.linkscale import flow_scale_F, rescale_waits, scale_key

__all__ = ["Edge", "FlowGroup", "FlowNetwork", "LinkBusyHook", "LinkShare", "PairFlows", "Route", "TransferDone"]

_ZERO_START = np.zeros(1, dtype=np.intp)


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
        n_l = lt.cap_L.shape[0]
        self._cap = lt.cap_L.copy()  # current capacities: nominal x speed scale
        self._scale_L = np.ones(n_l)  # link speed scales (set_link_scale)
        self._n_slow = 0  # links with a scale below 1
        self._ledger = LinkLedger(n_l, on_link_busy)
        self._memo_size = int(memo_size)
        self._memo: dict[tuple, tuple[FlowTable, Trajectory]] = {}
        self._memo_budget, self._memo_used = int(memo_bytes), 0
        self.memo_hits = 0
        self.memo_misses = 0
        self._pre: dict[int, tuple[FlowTable, Trajectory]] = {}  # gid -> plan as a transfer on idle links
        self._comps: dict[int, Component] = {}
        self._next_cid = 0
        self._owner_L = np.full(n_l, -1, dtype=np.intp)  # component holding each link's flows
        self._mark_L = np.zeros(n_l, dtype=bool)  # scratch

    # ------------------------------------------------------------------ public API
    @property
    def links(self) -> tuple[Edge, ...]:
        """Directed edges in link-id order."""
        return tuple(self._lt.edges)

    def link_id(self, edge: Edge) -> int:
        """Integer id of a directed edge (used by ``on_link_busy``)."""
        return self._lt.link_id(edge)

    @property
    def capacities_L(self) -> np.ndarray:
        """Nominal bandwidth (bytes/s) of every link, in link-id order (read-only view)."""
        v = self._lt.cap_L.view()
        v.setflags(write=False)
        return v

    @property
    def idle(self) -> bool:
        """True when no transfer is in flight."""
        return not self._comps

    def compile(self, flows: Sequence[tuple[Route, float]], extra_latency_s: float = 0.0) -> FlowGroup:
        """Resolve ``[(route, nbytes), ...]`` once; pass the result to :meth:`transfer` repeatedly.
        Results are cached by content, so compiling equal flows twice returns the same group."""
        return self._lt.compile(flows, extra_latency_s)

    def pair_flows(self, routes: Sequence[Route], share: LinkShare | None = None) -> PairFlows:
        """Resolve ``routes`` once; :meth:`PairFlows.compile` then makes a group per byte-count vector.
        ``share``: the routes' flows stand for copies of themselves (:class:`LinkShare`)."""
        return self._lt.pair_flows(routes, share)

    def preplan(self, groups: Sequence[FlowGroup], mirrors: Sequence[tuple[FlowGroup, FlowGroup]] = (),
                rev_L: np.ndarray | None = None) -> None:
        """Plan ``groups`` as transfers that start on idle links at full speed, all in one batch
        (:mod:`dicesim.sim.network.batchplan`, bit-identical to planning each on arrival). A later transfer of
        one of them that does start that way uses its plan; any other start plans as usual.
        ``mirrors``: ``(group, image)`` pairs where ``group`` is ``image`` with each link ``l`` replaced
        by ``rev_L[l]``; ``group`` then takes ``image``'s plan, mirrored (``image`` must be in ``groups``)."""
        todo = list({g.gid: g for g in groups if g.n_flows and g.gid not in self._pre}.values())
        tables = [self._fresh_table(g) for g in todo]
        for g, table, plan in zip(todo, tables, plan_many(tables)):
            self._pre[g.gid] = (table, plan)
        for g, image in mirrors:
            if g.n_flows and g.gid not in self._pre and image.gid in self._pre:
                table = self._fresh_table(g)
                plan = mirrored(self._pre[image.gid][1], self._pre[image.gid][0], table, rev_L)
                self._pre[g.gid] = (table, plan) if plan is not None else (table, plan_many([table])[0])

    @staticmethod
    def _fresh_table(g: FlowGroup) -> FlowTable:
        """The table :meth:`transfer` builds for ``g`` starting alone on idle links at full speed."""
        return FlowTable(0.0, g.nbytes, g.lat_F + 0.0, g.pair_flow_P, g.pair_local_P, g.pair_weight_P, g.links_L,
                         g.cap_L, _ZERO_START)

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
        rec = Transfer(ev, tag, now)
        entry, lat_F = g.gid, g.lat_F  # history entry; latency at the links' current speed
        if self._n_slow:
            sk = scale_key(g.links_L, self._scale_L)
            if sk[0]:
                entry, lat_F = (g.gid, sk), g.lat_F / flow_scale_F(g.pair_flow_P, g.pair_link_P, self._scale_L)
        merge = self._overlapping(g, now)
        if self._ledger.hook is not None:
            self._take_over(g, merge, now)
        old: list[tuple[Component, float, float]] = []  # (component, offset, re-basing shift)
        if len(merge) == 1:
            comp, r = merge[0]
            comp.history.append((entry, r))
            comp.key_size += 1
            old.append((comp, r, 0.0))
        else:
            comp = Component(self._next_cid, now)
            self._next_cid += 1
            self._comps[comp.cid] = comp
            r = 0.0
            if merge:  # the new transfer bridges components: re-base them onto now
                token = (tuple((tuple(c.history), rc) for c, rc in merge), entry)
                comp.key_size = sum(c.key_size for c, _ in merge) + 1
                comp.history.append((token, 0.0))
                old = [(c, rc, rc) for c, rc in merge]
            else:
                comp.history.append((entry, 0.0))
                comp.key_size = 1
        survivors: list[Transfer] = []
        finished: list[Transfer] = []
        for c, rc, shift in old:
            self._account_to(c, rc)
            for t, gf in zip(c.order, c.plan.group_fin_G.tolist()):
                (survivors if gf > rc else finished).append(t)
            finished += c.finished
            if shift:
                for t in c.order + c.finished:
                    t.done_rel -= shift

        def build() -> FlowTable:
            parts = [p for c, rc, shift in old for p in carry_over(c.table, c.plan, rc, shift)]
            if parts:
                parts.append((g.nbytes, lat_F + r, g.pair_flow_P, g.pair_link_P, g.pair_weight_P))
                return make_table(r, parts, self._cap)
            cap = g.cap_L if entry is g.gid else self._cap[g.links_L]
            return FlowTable(r, g.nbytes, lat_F + r, g.pair_flow_P, g.pair_local_P, g.pair_weight_P,
                             g.links_L, cap, _ZERO_START)

        table, plan = self._planned(comp, build)
        for c, _, _ in old:
            self._release(c, keep=table.links_L)
            if c is not comp:
                c.version += 1  # its pending timeout is void
                del self._comps[c.cid]
        self._install(comp, r, table, plan, survivors + [rec], finished)
        return ev

    def set_link_scale(self, links_L: np.ndarray, scale: float) -> None:
        """From now on, links ``links_L`` (ids) carry ``scale`` (0 < scale <= 1) of their bandwidth and
        the latency of flows crossing them advances at that speed (:mod:`dicesim.sim.network.linkscale`).
        Components with an unfinished flow on a changed link are re-planned from now."""
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"link scale must be in (0, 1], got {scale}")
        old = self._scale_L
        changed = links_L[old[links_L] != scale]
        if changed.shape[0] == 0:
            return
        new = old.copy()
        new[changed] = scale
        self._scale_L = new
        self._cap[changed] = self._lt.cap_L[changed] * scale
        self._n_slow = int(np.count_nonzero(new != 1.0))
        owners = self._owner_L[changed]
        for cid in sorted(set(owners[owners >= 0].tolist())):
            self._replan(self._comps[cid], changed, old)

    def link_stats(self) -> list[dict[str, Any]]:
        """Per directed link: ``link`` (u, v), ``link_class``, ``nbytes`` carried, ``busy_s`` (time with
        at least one flow draining), counted up to now, and ``eff_bw_Bps``, the bandwidth the network
        gives it (the graph's, i.e. line rate x the collective library's efficiency)."""
        for c in self._comps.values():
            self._account_to(c, self.env.now - c.t0_s)
        return [
            {"link": e, "link_class": c, "nbytes": float(b), "busy_s": float(s), "eff_bw_Bps": float(cap)}
            for e, c, b, s, cap in zip(self._lt.edges, self._lt.classes, self._ledger.nbytes_L, self._ledger.busy_L,
                                       self._lt.cap_L)
        ]

    def link_totals(self, links_L: np.ndarray) -> np.ndarray:
        """``(2, len(links_L))``: bytes carried and busy seconds of links ``links_L`` accounted so far
        (complete for links without a flow in flight)."""
        return self._ledger.totals(links_L)

    def add_link_totals(self, links_L: np.ndarray, totals: np.ndarray) -> None:
        """Add ``(2, len(links_L))`` bytes and busy seconds to links ``links_L``: traffic accounted
        without simulating it (a repeated window, :mod:`dicesim.sim.engine.reuse`)."""
        self._ledger.add_totals(links_L, totals)

    # ------------------------------------------------------------------ internals
    def _replan(self, comp: Component, changed: np.ndarray, old_L: np.ndarray) -> None:
        """Re-plan ``comp`` from now because the speed of ``changed`` links moved from ``old_L``;
        nothing to do unless one of its unfinished flows crosses a changed link."""
        r = grid(self.env.now - comp.t0_s)
        if not self._crosses(comp, r, changed):
            return
        table, plan = comp.table, comp.plan
        comp.history.append((("scale", scale_key(table.links_L, self._scale_L)), r))
        comp.key_size += 1
        self._account_to(comp, r)
        survivors = [t for t, gf in zip(comp.order, plan.group_fin_G.tolist()) if gf > r]
        finished = [t for t, gf in zip(comp.order, plan.group_fin_G.tolist()) if gf <= r] + comp.finished
        new_table, new_plan = self._planned(comp, lambda: make_table(
            r, rescale_waits(carry_over(table, plan, r), r, old_L, self._scale_L), self._cap))
        self._release(comp, keep=new_table.links_L)
        self._install(comp, r, new_table, new_plan, survivors, finished)

    def _planned(self, comp: Component, build: Callable[[], FlowTable]) -> tuple[FlowTable, Trajectory]:
        """The plan of ``comp``'s history: preplanned, memoised, or ``build()`` simulated (and memoised)."""
        if len(comp.history) == 1 and type(comp.history[0][0]) is int:  # one transfer on idle links
            hit = self._pre.get(comp.history[0][0])
            if hit is not None:
                self.memo_hits += 1
                return hit
        key = tuple(comp.history) if comp.key_size <= KEY_MAX and self._memo_size > 0 else None
        hit = self._memo.get(key) if key is not None else None
        if hit is not None:
            self.memo_hits += 1
            return hit
        self.memo_misses += 1
        table = build()
        plan = simulate(table)
        size = plan.nbytes_estimate if key is not None else math.inf
        if size <= self._memo_budget:  # evict the oldest plans while over the count or the budget
            memo = self._memo
            while memo and (len(memo) >= self._memo_size or self._memo_used + size > self._memo_budget):
                _, old = memo.pop(next(iter(memo)))
                self._memo_used -= old.nbytes_estimate
            memo[key] = (table, plan)
            self._memo_used += size
        return table, plan

    def _install(self, comp: Component, r: float, table: FlowTable, plan: Trajectory, order: list[Transfer],
                 finished: list[Transfer]) -> None:
        """Make ``plan`` (from offset ``r``) the component's, with its transfers in table order."""
        comp.table, comp.plan = table, plan
        comp.acct_k, comp.acct_r = 0, r
        comp.order = order
        comp.finished = [t for t in finished if not t.delivered]
        for t, gf in zip(order, plan.group_fin_G.tolist()):
            t.done_rel = gf
        self._owner_L[table.links_L] = comp.cid
        self._schedule(comp)

    def _overlapping(self, g: FlowGroup, now: float) -> list[tuple[Component, float]]:
        """Busy components with an unfinished flow on one of ``g``'s links, with their offsets."""
        owners = self._owner_L[g.links_L]
        owners = owners[owners >= 0]
        if owners.size == 0:
            return []
        out = []
        for cid in sorted(set(owners.tolist())):
            c = self._comps[cid]
            r = grid(now - c.t0_s)
            if self._crosses(c, r, g.links_L):
                out.append((c, r))
        return out

    def _crosses(self, c: Component, r: float, links_L: np.ndarray) -> bool:
        """Whether a flow of ``c`` unfinished at offset ``r`` crosses one of ``links_L``, some of
        which ``c`` owns."""
        if r < c.plan.fin_min:  # every flow still unfinished: all of its links are live
            return True
        table, mark = c.table, self._mark_L
        live_f = c.plan.fin_F > r
        live_links = table.links_L[table.pair_link_P[live_f[table.pair_flow_P]]]
        mark[live_links] = True
        hit = bool(mark[links_L].any())
        mark[live_links] = False
        return hit

    def _take_over(self, g: FlowGroup, merge: list, now: float) -> None:
        """Close the busy periods of ``g``'s links that idle components still hold (hook only)."""
        merged = {c.cid for c, _ in merge}
        owners = self._owner_L[g.links_L]
        for cid in sorted(set(owners[owners >= 0].tolist()) - merged):
            c = self._comps[cid]
            self._account_to(c, grid(now - c.t0_s))
            taken = g.links_L[owners == cid]
            self._owner_L[taken] = -1
            self._ledger.close(taken)

    def _schedule(self, comp: Component) -> None:
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

    def _release(self, comp: Component, keep: np.ndarray | None) -> None:
        """Give up ``comp``'s links (except ``keep``); close their busy periods for the hook."""
        links = comp.table.links_L
        if keep is not None:
            mark = self._mark_L
            mark[keep] = True
            links = links[~mark[links]]
            mark[keep] = False
        mine = links[self._owner_L[links] == comp.cid]
        self._owner_L[mine] = -1
        if self._ledger.hook is not None:
            self._ledger.close(mine)

    def _account_to(self, comp: Component, r: float) -> None:
        self._ledger.account(comp, r, self._owner_L)
