"""The simpy model of one run: every rank walks the plan on its compute and comm streams.

Per rank, one process plays both the host and the compute stream. The host is a clock
(``host_t``): each launch costs ``host_op_s`` (compute) or ``host_collective_s``
(collective), and the host only stops at blocking count exchanges (it needs the counts).
The compute stream runs ops in order; an op starts when the stream is free and the host
has launched it. Collectives go to :class:`~dicesim.sim.collectives.Communicator` streams
(one per expert-parallel group; a second one per group when ``count_comm = "separate"``);
an all-to-all moves its per-pair flows over the graph through
:class:`~dicesim.sim.network.FlowNetwork`. While any of a rank's collectives is in
flight, its compute runs ``1 + interference`` times slower: a running op is interrupted
on every change and its remaining work re-timed, which is exact.

Per-step accounting per rank: compute-only, comm-only and overlapped time, exposed
communication (the stream idle waiting for a collective) and host gaps (idle because
the host had not launched the next op yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import simpy

from dicesim.errors import ConfigError
from dicesim.plan import Plan
from dicesim.sim.collectives import Collective, Communicator
from dicesim.sim.costmodel import CostModel
from dicesim.sim.network import FlowNetwork
from dicesim.sim.profile import HardwareProfile
from dicesim.sim.program import BLOCK, ISSUE, RUN, STEP_END, SYNC, WAIT, compile_program
from dicesim.sim.routing import TokenRouting
from dicesim.topology import all_pairs_routes, world_size
from dicesim.trace import EventRecorder

#: per-rank cumulative counters snapshotted at each step end (columns of RawRun.counters_WTK)
COUNTERS = ("compute_only_s", "comm_only_s", "overlap_s", "exposed_comm_s", "host_gap_s")
_DISPATCH, _COMBINE = 0, 1


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything one simulation needs, already built and validated."""

    plan: Plan
    cost: CostModel
    routing: TokenRouting
    graph: nx.DiGraph
    profile: HardwareProfile
    row_nbytes: int
    record: bool = False
    merge_compute: bool = True


@dataclass(frozen=True)
class RawRun:
    """What the engine measured. Times in seconds; ``counters_WTK`` cumulative at step ends."""

    step_end_WT: np.ndarray
    counters_WTK: np.ndarray
    total_s: float
    link_stats: list[dict]
    events: pd.DataFrame | None
    collectives: int
    memo_hits: int
    memo_misses: int


class _Rank:
    __slots__ = ("r", "proc", "host_t", "computing", "comm_active", "intr_pending", "acct_t", "acc",
                 "moe", "moe_m", "cnt", "cnt_m", "group", "pend_d", "pend_c")

    def __init__(self, r: int):
        self.r = r
        self.host_t = 0.0
        self.computing = False
        self.comm_active = 0
        self.intr_pending = False
        self.acct_t = 0.0
        self.acc = [0.0] * len(COUNTERS)
        self.pend_d: dict[int, simpy.Event] = {}
        self.pend_c: dict[int, simpy.Event] = {}


def _scaled_graph(G: nx.DiGraph, profile: HardwareProfile) -> nx.DiGraph:
    """``G`` with each link's bandwidth scaled by the profile's efficiency for its class."""
    if all(profile.bw_eff(str(d.get("link", ""))) == 1.0 for _, _, d in G.edges(data=True)):
        return G
    H = G.copy()
    for _, _, d in H.edges(data=True):
        d["bw_Bps"] = d["bw_Bps"] * profile.bw_eff(str(d.get("link", "")))
    return H


class Engine:
    """Builds the simpy world for one :class:`RunSpec`; :meth:`run` executes it once."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        routing, profile = spec.routing, spec.profile
        placement = routing.placement
        W = placement.world_size
        if world_size(spec.graph) < W:
            raise ConfigError("world_size", f"{W} ranks but topology {spec.graph.graph.get('name', '')!r} "
                                            f"has {world_size(spec.graph)} GPUs")
        self.env = env = simpy.Environment()
        self.rec = EventRecorder("sim") if spec.record else None
        G = _scaled_graph(spec.graph, profile)
        self._edges = [(u, v, str(d.get("link", ""))) for u, v, d in G.edges(data=True)]
        self.net = FlowNetwork(env, G, on_link_busy=self._on_link if self.rec else None)
        self.slow = 1.0 + profile.interference
        self.host_op_s, self.host_coll_s = profile.host_op_s, profile.host_collective_s
        self.T = spec.plan.num_steps
        self.ranks = [_Rank(r) for r in range(W)]
        self.step_end = np.zeros((W, self.T))
        self.counters = np.zeros((W, self.T, len(COUNTERS)))
        self.groups = placement.groups()
        self._routes: list[dict] = []
        self._a2a_lat: list[float] = []
        self._cnt_lat: list[float] = []
        self._flow_cache: dict[tuple, object] = {}
        self.comms: list[Communicator] = []
        separate = spec.plan.strategy.count_comm == "separate"
        on_done = self._on_coll_done if self.rec else None
        for g, members in enumerate(self.groups):
            table = all_pairs_routes(G, members)
            self._routes.append(table.routes)
            cls_lat = max((profile.link_latency(str(G.edges[e].get("link", "")))
                           for r in table.routes.values() for e in r), default=0.0)
            route_lat = max(table.latency_s.values(), default=0.0)
            multi = len(members) > 1
            self._a2a_lat.append((profile.collective_base_s["all_to_all"] + cls_lat) if multi else 0.0)
            self._cnt_lat.append((profile.collective_base_s["count_exchange"] + cls_lat + route_lat) if multi else 0.0)
            moe = Communicator(env, f"ep{g}", "comm", members, self._start, self._on_busy, on_done)
            cnt = Communicator(env, f"ep{g}.counts", "comm:counts", members, self._start, self._on_busy,
                               on_done) if separate else moe
            self.comms += [moe] + ([cnt] if separate else [])
            for m, r in enumerate(members):
                st = self.ranks[r]
                st.group, st.moe, st.moe_m, st.cnt, st.cnt_m = g, moe, m, cnt, m
        self.program = compile_program(spec.plan, spec.cost, host_op_s=self.host_op_s,
                                       merge=spec.merge_compute and not spec.record)
        # expert time per (skip, layer, tok_step, rank)
        self.recv = [routing.recv_rows_LTW(skip) for skip in (False, True)]
        self.exp_s = [spec.cost.expert_times_s(rows).tolist() for rows in self.recv]
        self.L = spec.plan.num_layers

    # ---------------------------------------------------------------- collectives
    def _flow_group(self, g: int, direction: int, layer: int, tok: int, skip: bool):
        key = (g, direction, layer, tok, skip)
        fg = self._flow_cache.get(key)
        if fg is None:
            M = self.spec.routing.group_matrix(self.groups[g], layer, tok, skip)
            ckey = (g, direction, M.tobytes())
            fg = self._flow_cache.get(ckey)
            if fg is None:
                members, routes, rb = self.groups[g], self._routes[g], self.spec.row_nbytes
                flows = []
                for i, src in enumerate(members):
                    for j, dst in enumerate(members):
                        if i != j and M[i, j] > 0:
                            a, b = (src, dst) if direction == _DISPATCH else (dst, src)
                            flows.append((routes[(a, b)], float(M[i, j] * rb)))
                fg = self.net.compile(flows, self._a2a_lat[g])
                self._flow_cache[ckey] = fg
            self._flow_cache[key] = fg
        return fg

    def _start(self, comm: Communicator, coll: Collective) -> simpy.Event:
        g = self.ranks[comm.members[0]].group
        if coll.kind == "counts":
            return self.env.timeout(self._cnt_lat[g])
        direction, layer, tok, skip, _t = coll.info
        return self.net.transfer(self._flow_group(g, direction, layer, tok, skip))

    def _on_busy(self, r: int, delta: int) -> None:
        st = self.ranks[r]
        self._acct(st)
        before = st.comm_active
        st.comm_active = before + delta
        if st.computing and (before == 0) != (st.comm_active == 0) and not st.intr_pending and self.slow != 1.0:
            st.intr_pending = True
            st.proc.interrupt()

    def _acct(self, st: _Rank) -> None:
        now = self.env.now
        dt = now - st.acct_t
        if dt > 0.0:
            if st.computing:
                st.acc[2 if st.comm_active else 0] += dt
            elif st.comm_active:
                st.acc[1] += dt
        st.acct_t = now

    # ---------------------------------------------------------------- rank process
    def _work(self, st: _Rank, work: float):
        """Run ``work`` seconds of nominal compute, slowed while communication is in flight."""
        env = self.env
        self._acct(st)
        st.computing = True
        slow = self.slow
        if slow == 1.0:
            yield env.timeout(work)
        else:
            while True:
                f = slow if st.comm_active else 1.0
                t0 = env.now
                try:
                    yield env.timeout(work * f)
                    break
                except simpy.Interrupt:
                    st.intr_pending = False
                    work = max(work - (env.now - t0) / f, 0.0)
        self._acct(st)
        st.computing = False

    def _host_gap(self, st: _Rank):
        gap = st.host_t - self.env.now
        if gap > 0.0:
            st.acc[4] += gap
            yield self.env.timeout(gap)

    def _wait(self, st: _Rank, ev: simpy.Event, name: str, layer: int, t: int, tok: int):
        if ev.callbacks is None:
            return  # already done
        t0 = self.env.now
        yield ev
        st.acc[3] += self.env.now - t0
        if self.rec is not None:
            self.rec.add(st.r, "compute", "wait", name, t0 * 1e6, self.env.now * 1e6, layer, t, tok)

    def _experts(self, st: _Rank, layer: int, tok: int, skip: bool, t: int):
        st.host_t += self.host_op_s
        yield from self._host_gap(st)
        t0 = self.env.now
        yield from self._work(st, self.exp_s[skip][layer][tok][st.r])
        if self.rec is not None:
            rows = int(self.recv[skip][layer, tok, st.r])
            self.rec.add(st.r, "compute", "compute", "experts", t0 * 1e6, self.env.now * 1e6, layer, t, tok,
                         0, rows, -1, self.spec.cost.expert_cost(rows).flops)

    def _issue(self, st: _Rank, comm: Communicator, member: int, kind: str, info: tuple) -> simpy.Event:
        st.host_t += self.host_coll_s
        now = self.env.now
        return comm.issue(member, kind, info, st.host_t if st.host_t > now else now)

    def _counts(self, st: _Rank, layer: int, tok: int, skip: bool, t: int):
        ev = self._issue(st, st.cnt, st.cnt_m, "counts", (-1, layer, tok, skip, t))
        yield from self._wait(st, ev, "wait_counts", layer, t, tok)
        if st.host_t < self.env.now:
            st.host_t = self.env.now  # the host read the counts: it is synchronised

    def _rank_proc(self, st: _Rank):
        env, rec, L = self.env, self.rec, self.L
        hop = self.host_op_s
        for t, prog in enumerate(self.program):
            for ins in prog:
                op = ins[0]
                if op == BLOCK:
                    blk = ins[1]
                    st.host_t += hop
                    yield from self._host_gap(st)
                    st.host_t += hop * (len(blk.durs_s) - 1)
                    t0 = env.now
                    yield from self._work(st, blk.total_s)
                    if rec is not None:
                        kind, layer, tok = blk.ops[0]
                        rec.add(st.r, "compute", "compute", kind, t0 * 1e6, env.now * 1e6, layer, t, tok,
                                0, 0, -1, blk.flops[0])
                elif op == STEP_END:
                    self._acct(st)
                    self.step_end[st.r, t] = env.now
                    self.counters[st.r, t] = st.acc
                    if rec is not None:
                        t_prev = self.step_end[st.r, t - 1] if t else 0.0
                        rec.add(st.r, "host", "marker", f"step {t}", t_prev * 1e6, env.now * 1e6, -1, t)
                else:
                    _, layer, tok, skip = ins
                    key = layer + L * tok
                    if op == SYNC:
                        yield from self._counts(st, layer, tok, skip, t)
                        ev = self._issue(st, st.moe, st.moe_m, "dispatch", (_DISPATCH, layer, tok, skip, t))
                        yield from self._wait(st, ev, "wait_dispatch", layer, t, tok)
                        yield from self._experts(st, layer, tok, skip, t)
                        ev = self._issue(st, st.moe, st.moe_m, "combine", (_COMBINE, layer, tok, skip, t))
                        yield from self._wait(st, ev, "wait_combine", layer, t, tok)
                    elif op == ISSUE:
                        yield from self._counts(st, layer, tok, skip, t)
                        st.pend_d[key] = self._issue(st, st.moe, st.moe_m, "dispatch",
                                                     (_DISPATCH, layer, tok, skip, t))
                    elif op == RUN:
                        yield from self._wait(st, st.pend_d.pop(key), "wait_dispatch", layer, t, tok)
                        yield from self._experts(st, layer, tok, skip, t)
                        st.pend_c[key] = self._issue(st, st.moe, st.moe_m, "combine",
                                                     (_COMBINE, layer, tok, skip, t))
                    else:  # WAIT
                        yield from self._wait(st, st.pend_c.pop(key), "wait_combine", layer, t, tok)

    # ---------------------------------------------------------------- recording hooks
    def _on_coll_done(self, comm: Communicator, coll: Collective) -> None:
        direction, layer, tok, skip, t = coll.info
        g = self.ranks[comm.members[0]].group
        M = (self.spec.routing.group_matrix(self.groups[g], layer, tok, skip)
             if coll.kind != "counts" else None)
        for m, r in enumerate(comm.members):
            rows = 0 if M is None else int((M[m].sum() - M[m, m]) if direction == _DISPATCH else (M[:, m].sum() - M[m, m]))
            self.rec.add(r, comm.stream, "collective", coll.kind, coll.start_s * 1e6, coll.end_s * 1e6,
                         layer, t, tok, rows * self.spec.row_nbytes, rows)

    def _on_link(self, link_id: int, start_s: float, end_s: float, nbytes: float) -> None:
        u, v, cls = self._edges[link_id]
        self.rec.add(-1, f"{u}->{v}", "link", cls, start_s * 1e6, end_s * 1e6, nbytes=int(round(nbytes)))

    # ---------------------------------------------------------------- run
    def run(self) -> RawRun:
        """Execute the whole plan once and return the measurements."""
        for st in self.ranks:
            st.proc = self.env.process(self._rank_proc(st))
        self.env.run()
        unfinished = [c.name for c in self.comms if not c.idle] + [
            f"rank {st.r}" for st in self.ranks if st.proc.is_alive]
        if unfinished:
            raise RuntimeError(f"simulation deadlocked: {', '.join(unfinished[:4])} did not finish")
        total = float(self.step_end[:, -1].max()) if self.T else 0.0
        return RawRun(
            step_end_WT=self.step_end, counters_WTK=self.counters, total_s=total,
            link_stats=self.net.link_stats(),
            events=self.rec.to_frame() if self.rec is not None else None,
            collectives=sum(c.count for c in self.comms),
            memo_hits=self.net.memo_hits, memo_misses=self.net.memo_misses,
        )


def run_engine(spec: RunSpec) -> RawRun:
    """Build and run the simpy model for ``spec``."""
    return Engine(spec).run()
