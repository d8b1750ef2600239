"""The simpy model of one run: every rank walks the plan on its compute and comm streams.

Per rank, one process plays both the host and the compute stream. The host is a clock
(``host_t``): each launch costs ``host_op_s`` (compute) or ``host_collective_s``
(collective), and the host only stops at blocking count exchanges (it needs the counts).
The compute stream runs ops in order; an op starts when the stream is free and the host
has launched it. Collectives go to :class:`~dicesim.sim.collectives.Communicator` streams
(one per expert-parallel group; a second one per group when ``count_comm = "separate"``);
an all-to-all moves its per-pair flows over the graph through
:class:`~dicesim.sim.network.FlowNetwork`, whose links carry what NCCL reaches on them
(:mod:`dicesim.sim.nccl`: the topology's line rates times the transport's fitted share). While any of a rank's collectives is in
flight, its compute runs ``1 + interference`` times slower; a running op's remaining work
is re-timed on every change (exact; see :meth:`Engine._compute`). While a rank computes, the
links of its endpoint run ``1 + comm_interference`` times slower (bandwidth and latency phase;
:meth:`FlowNetwork.set_link_scale`), so its transfers are re-planned when its compute starts/stops.

Per-step accounting per rank (cumulative, :data:`COUNTERS`): compute busy, comm busy
(any of its collectives in flight), their overlap, exposed communication (the stream
idle waiting for a collective) and host gaps (idle because the host had not launched
the next op yet). Stream time = compute + exposed + host gap, exactly.
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
from dicesim.sim.linkscale import efficiency_scaled_graph, rank_port_links
from dicesim.sim.nccl import NcclModel, builtin_nccl_model, effective_graph, hop_latency_s, route_transports
from dicesim.sim.network import FlowNetwork
from dicesim.sim.profile import HardwareProfile
from dicesim.sim.program import BLOCK, DISCARD, DRAIN, ISSUE, RUN, STEP_END, SYNC, SYNC_KEEP, WAIT, compile_program
from dicesim.sim.routing import TokenRouting
from dicesim.topology import all_pairs_routes, world_size
from dicesim.trace import EventRecorder

#: per-rank cumulative counters snapshotted at each step end (columns of RawRun.counters_WTK)
COUNTERS = ("compute_busy_s", "comm_busy_s", "overlap_s", "exposed_comm_s", "host_gap_s")
_DISPATCH, _COMBINE, _COUNTS = 0, 1, -1
#: remaining compute below this many seconds counts as finished (float round-off after re-timing)
_EPS_S = 1e-15


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
    nccl: NcclModel | None = None  # what NCCL reaches on the graph's links (None: the built-in model)


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
    """Mutable per-rank state shared by the rank process and the communicator callbacks."""

    __slots__ = ("r", "proc", "group", "moe", "moe_m", "cnt", "cnt_m", "computing", "comm_active",
                 "comm_t0", "comm_busy", "ovl_t0", "ovl", "work_left", "seg_t", "seg_f", "toggled",
                 "sched_slow", "intr_pending", "port_release")

    def __init__(self, r: int):
        self.r = r
        self.computing = False
        self.comm_active = 0
        self.comm_t0 = self.comm_busy = self.ovl_t0 = self.ovl = 0.0
        self.work_left = self.seg_t = 0.0
        self.seg_f = 1.0
        self.toggled = self.sched_slow = self.intr_pending = self.port_release = False


class Engine:
    """Builds the simpy world for one :class:`RunSpec`; :meth:`run` executes it once."""

    #: a one-rank group launches collectives only when they loop through host memory (sim/hoststaged.py)
    loopback = False
    #: who moves the bytes: NCCL's transport factors apply for "nccl", none for "memcpy"
    library = "nccl"

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
        nccl = spec.nccl or builtin_nccl_model()
        G = efficiency_scaled_graph(effective_graph(spec.graph, nccl, self.library), profile)
        self._edges = [(u, v, str(d.get("link", ""))) for u, v, d in G.edges(data=True)]
        self.net = FlowNetwork(env, G, on_link_busy=self._on_link if self.rec is not None else None)
        self.slow = 1.0 + profile.interference
        # endpoint links per rank, slowed while the rank computes (None: comm_interference == 0)
        self._ports = rank_port_links(self.net, G) if profile.comm_interference > 0 else None
        self._port_scale = 1.0 / (1.0 + profile.comm_interference)
        self.host_op_s, self.host_coll_s = profile.host_op_s, profile.host_collective_s
        self.T, self.L = spec.plan.num_steps, spec.plan.num_layers
        self.ranks = [_Rank(r) for r in range(W)]
        self.step_end = np.zeros((W, self.T))
        self.counters = np.zeros((W, self.T, len(COUNTERS)))
        self.groups = placement.groups()
        self._routes: list[dict] = []
        self._a2a_lat: list[float] = []
        self._cnt_lat: list[float] = []
        self._matrix_id: list[list[np.ndarray]] = []  # [group][skip] -> [L, T] id of the row matrix
        self._flow_cache: dict[tuple, object] = {}
        self.comms: list[Communicator] = []
        separate = spec.plan.strategy.count_comm == "separate"
        on_done = self._on_coll_done if self.rec is not None else None
        for g, members in enumerate(self.groups):
            table = all_pairs_routes(G, members)
            self._routes.append(table.routes)
            cls_lat = max((profile.link_latency(str(G.edges[e].get("link", "")))
                           for r in table.routes.values() for e in r), default=0.0)
            route_lat = max(table.latency_s.values(), default=0.0)
            multi = len(members) > 1
            # NCCL's own terms apply only where its transports carry the routes (not on CPU/gloo graphs)
            transports = route_transports(G, table.routes.values(), self.library)
            lib_lat = (nccl.a2a_latency_s + hop_latency_s(nccl, transports)) if transports else 0.0
            self._a2a_lat.append((profile.collective_base_s["all_to_all"] + cls_lat + lib_lat) if multi else 0.0)
            self._cnt_lat.append((profile.collective_base_s["count_exchange"] + cls_lat + route_lat + lib_lat)
                                 if multi else 0.0)
            self._matrix_id.append([_matrix_ids(routing, members, skip) for skip in (False, True)])
            kw = dict(starter=self._start, on_busy=self._on_busy, on_done=on_done, group=g)
            moe = Communicator(env, f"ep{g}", "comm", members, **kw)
            cnt = Communicator(env, f"ep{g}.counts", "comm:counts", members, **kw) if separate else moe
            self.comms += [moe] + ([cnt] if separate else [])
            for m, r in enumerate(members):
                st = self.ranks[r]
                st.group, st.moe, st.moe_m, st.cnt, st.cnt_m = g, moe, m, cnt, m
        self.program = compile_program(spec.plan, spec.cost, host_op_s=self.host_op_s,
                                       merge=spec.merge_compute and not spec.record)
        self.recv = [routing.recv_rows_LTW(skip) for skip in (False, True)]
        self._arrived = env.event().succeed()  # stands for a dispatch that already completed
        # expert time per [skip][layer][tok_step][rank], as nested lists for fast scalar reads
        self.exp_s = [spec.cost.expert_times_s(rows).tolist() for rows in self.recv]

    # ---------------------------------------------------------------- collectives
    def _flow_group(self, g: int, direction: int, layer: int, tok: int, skip: bool):
        key = (g, direction, skip, int(self._matrix_id[g][skip][layer, tok]))
        fg = self._flow_cache.get(key)
        if fg is None:
            M = self.spec.routing.group_matrix(self.groups[g], layer, tok, skip)
            members, routes, rb = self.groups[g], self._routes[g], self.spec.row_nbytes
            flows = []
            for i, src in enumerate(members):
                for j, dst in enumerate(members):
                    if i != j and M[i, j] > 0:
                        a, b = (src, dst) if direction == _DISPATCH else (dst, src)
                        flows.append((routes[(a, b)], float(M[i, j] * rb)))
            fg = self._flow_cache[key] = self.net.compile(flows, self._a2a_lat[g])
        return fg

    def _start(self, comm: Communicator, coll: Collective) -> simpy.Event:
        if coll.direction == _COUNTS:
            return self.env.timeout(self._cnt_lat[comm.group])
        return self.net.transfer(self._flow_group(comm.group, coll.direction, coll.layer, coll.tok_step, coll.skip))

    def _on_busy(self, members: tuple[int, ...], delta: int) -> None:
        """A collective of ``members`` starts (+1) or ends (-1): busy time, overlap, interference."""
        now = self.env.now
        slow = self.slow
        ranks = self.ranks
        for r in members:
            st = ranks[r]
            before = st.comm_active
            st.comm_active = after = before + delta
            if before == 0:  # communication starts
                st.comm_t0 = now
                if st.computing:
                    st.ovl_t0 = now
                    if slow != 1.0:
                        # slower from now on; the running timeout fires early and is extended then
                        st.work_left -= (now - st.seg_t) / st.seg_f
                        st.seg_t, st.seg_f, st.toggled = now, slow, True
            elif after == 0:  # communication ends
                st.comm_busy += now - st.comm_t0
                if st.computing:
                    st.ovl += now - st.ovl_t0
                    if slow != 1.0:
                        st.work_left -= (now - st.seg_t) / st.seg_f
                        st.seg_t, st.seg_f, st.toggled = now, 1.0, True
                        if st.sched_slow and not st.intr_pending:
                            # the running timeout assumed the slow rate: it would fire too late
                            st.intr_pending = True
                            st.proc.interrupt()

    # ---------------------------------------------------------------- rank process
    def _compute(self, st: _Rank, work: float):
        """Run ``work`` seconds of nominal compute, ``slow`` times slower while communication is in flight.

        A timeout is scheduled at the current rate. A slow-down during it only makes it fire
        early (then the rest is re-timed); a speed-up during a slow timeout interrupts it.
        """
        env = self.env
        st.computing = True
        if st.comm_active:
            st.ovl_t0 = env.now
        ports = self._ports
        if ports is not None:
            if st.port_release:  # compute resumes at the instant it stopped: the links never sped up
                st.port_release = False
            else:
                self.net.set_link_scale(ports[st.r], self._port_scale)
        slow = self.slow
        if slow == 1.0:
            yield env.timeout(work)
        else:
            st.work_left, st.seg_t, st.seg_f = work, env.now, slow if st.comm_active else 1.0
            while True:
                st.toggled = False
                st.sched_slow = st.seg_f != 1.0
                try:
                    yield env.timeout(st.work_left * st.seg_f)
                except simpy.Interrupt:
                    st.intr_pending = False
                    now = env.now
                    st.work_left = max(st.work_left - (now - st.seg_t) / st.seg_f, 0.0)
                    st.seg_t = now
                    continue
                if not st.toggled:
                    break
                now = env.now
                left = st.work_left - (now - st.seg_t) / st.seg_f
                if left <= _EPS_S:
                    break
                st.work_left, st.seg_t = left, now
        st.computing = False
        if st.comm_active:
            st.ovl += env.now - st.ovl_t0
        if ports is not None:  # the links speed up unless compute resumes at this instant
            st.port_release = True
            env.timeout(0.0, st).callbacks.append(self._release_ports)

    def _release_ports(self, ev: simpy.Event) -> None:
        st = ev.value
        if st.port_release:
            st.port_release = False
            self.net.set_link_scale(self._ports[st.r], 1.0)

    def _rank_proc(self, st: _Rank):
        env, rec, L, r = self.env, self.rec, self.L, st.r
        timeout, compute = env.timeout, self._compute
        moe, mm, cnt, cm, moe_n = st.moe, st.moe_m, st.cnt, st.cnt_m, st.moe.n
        hop = self.host_op_s
        hcoll = self.host_coll_s if moe_n > 1 or self.loopback else 0.0  # a one-rank group launches none
        exp_s = self.exp_s
        pend_d: dict[int, simpy.Event] = {}
        pend_c: dict[int, simpy.Event] = {}
        host_t = comp = exposed = host_gap = 0.0  # host clock; cumulative busy/idle seconds
        for t, prog in enumerate(self.program):
            for ins in prog:
                op = ins[0]
                if op == BLOCK:
                    blk = ins[1]
                    host_t += hop
                    now = env.now
                    if host_t > now:  # the stream waits for the host to launch the op
                        host_gap += host_t - now
                        yield timeout(host_t - now)
                        now = host_t
                    host_t += hop * (len(blk.durs_s) - 1)
                    yield from compute(st, blk.total_s)
                    comp += env.now - now
                    if rec is not None:
                        kind, layer, tok = blk.ops[0]
                        rec.add(r, "compute", "compute", kind, now * 1e6, env.now * 1e6, layer, t, tok,
                                0, 0, -1, blk.flops[0])
                    continue
                if op == STEP_END:
                    now = env.now
                    if st.comm_active:
                        st.comm_busy += now - st.comm_t0
                        st.comm_t0 = now
                    self.step_end[r, t] = now
                    self.counters[r, t] = (comp, st.comm_busy, st.ovl, exposed, host_gap)
                    if rec is not None:
                        t_prev = self.step_end[r, t - 1] if t else 0.0
                        rec.add(r, "host", "marker", f"step {t}", t_prev * 1e6, now * 1e6, -1, t)
                    continue
                if op == DISCARD:  # never used; the collectives still run in order on their communicator
                    pend_d.clear()
                    pend_c.clear()
                    continue
                if op == DRAIN:  # the sampler synchronises before it returns
                    now = env.now
                    for ev in (*pend_d.values(), *pend_c.values()):
                        if ev.callbacks is not None:
                            yield ev
                    pend_d.clear()
                    pend_c.clear()
                    exposed += env.now - now
                    if rec is not None and env.now > now:
                        rec.add(r, "compute", "wait", "wait_drain", now * 1e6, env.now * 1e6, -1, t, t)
                    continue
                _, layer, tok, skip = ins
                key = layer + L * tok
                if op == SYNC or op == ISSUE or op == SYNC_KEEP:
                    # blocking count exchange: the host needs the counts to size the dispatch
                    host_t += hcoll
                    now = env.now
                    ev = cnt.issue(cm, "counts", _COUNTS, layer, tok, skip, t, host_t if host_t > now else now)
                    if ev.callbacks is not None:
                        yield ev
                        exposed += env.now - now
                        if rec is not None:
                            rec.add(r, "compute", "wait", "wait_counts", now * 1e6, env.now * 1e6, layer, t, tok)
                    now = env.now
                    if host_t < now:
                        host_t = now
                    host_t += hcoll
                    ev = moe.issue(mm, "dispatch", _DISPATCH, layer, tok, skip, t, host_t if host_t > now else now)
                    if op == ISSUE:
                        pend_d[key] = ev
                        continue
                else:
                    ev = pend_d.pop(key) if op == RUN else pend_c.pop(key)
                # SYNC and RUN: wait for the dispatch, run the experts, issue the combine
                name = "wait_combine" if op == WAIT else "wait_dispatch"
                if op != WAIT:
                    host_t += hop  # experts launched; the stream waits on the dispatch
                if ev.callbacks is not None:
                    now = env.now
                    yield ev
                    exposed += env.now - now
                    if rec is not None:
                        rec.add(r, "compute", "wait", name, now * 1e6, env.now * 1e6, layer, t, tok)
                if op == WAIT:
                    continue
                now = env.now
                if host_t > now:
                    host_gap += host_t - now
                    yield timeout(host_t - now)
                    now = host_t
                yield from compute(st, exp_s[skip][layer][tok][r])
                comp += env.now - now
                if rec is not None:
                    rows = int(self.recv[skip][layer, tok, r])
                    rec.add(r, "compute", "compute", "experts", now * 1e6, env.now * 1e6, layer, t, tok,
                            0, rows, -1, self.spec.cost.expert_cost(rows).flops)
                host_t += hcoll
                now = env.now
                ev = moe.issue(mm, "combine", _COMBINE, layer, tok, skip, t, host_t if host_t > now else now)
                if op == RUN:
                    pend_c[key] = ev
                    continue
                if ev.callbacks is not None:  # SYNC: the combine is awaited at once
                    yield ev
                    exposed += env.now - now
                    if rec is not None:
                        rec.add(r, "compute", "wait", "wait_combine", now * 1e6, env.now * 1e6, layer, t, tok)
                if op == SYNC_KEEP:  # its dispatch has arrived: a later RUN re-runs the experts at once
                    pend_d[key] = self._arrived

    # ---------------------------------------------------------------- recording hooks
    def _on_coll_done(self, comm: Communicator, coll: Collective) -> None:
        M = (self.spec.routing.group_matrix(self.groups[comm.group], coll.layer, coll.tok_step, coll.skip)
             if coll.direction != _COUNTS else None)
        for m, r in enumerate(comm.members):
            rows = 0
            if M is not None:
                rows = int(M[m].sum() - M[m, m]) if coll.direction == _DISPATCH else int(M[:, m].sum() - M[m, m])
            self.rec.add(r, comm.stream, "collective", coll.kind, coll.start_s * 1e6, coll.end_s * 1e6,
                         coll.layer, coll.step, coll.tok_step, rows * self.spec.row_nbytes, rows)

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


def _matrix_ids(routing: TokenRouting, members: tuple[int, ...], skip: bool) -> np.ndarray:
    """``[L, T]`` ids, equal where the group's row matrix is equal (shares compiled flow groups)."""
    full = np.ascontiguousarray(routing.send_rows_LTWS(skip)[:, :, list(members), :])
    L, T = full.shape[:2]
    flat = full.reshape(L * T, -1)
    rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()  # one key per matrix
    _, inv = np.unique(rows, return_inverse=True)
    return inv.reshape(L, T)


def run_engine(spec: RunSpec) -> RawRun:
    """Build and run the simpy model for ``spec``."""
    return Engine(spec).run()
