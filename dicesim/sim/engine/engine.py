"""The simpy model of one run: every rank walks the plan on its compute and comm streams.

Per rank, one process plays both the host and the compute stream. The host is a clock
(``host_t``): each launch costs ``host_op_s`` (compute) or ``host_collective_s``
(collective), and the host only stops at blocking count exchanges (it needs the counts).
The compute stream runs ops in order; an op starts when the stream is free and the host
has launched it. Collectives go to :class:`~dicesim.sim.collectives.Communicator` streams
(one per expert-parallel group; a second one per group when ``count_comm = "separate"``);
an all-to-all moves its per-pair flows over the graph through
:class:`~dicesim.sim.network.FlowNetwork`, whose links carry what NCCL reaches on them
(:mod:`dicesim.sim.network.nccl`: the topology's line rates times the transport's fitted share);
what a group's collectives move and their fixed latencies come from its
:class:`~dicesim.sim.groupcomm.GroupComm`. How compute and communication slow each other
(exactly, op by op) is :mod:`dicesim.sim.engine.streams`.

Per-step accounting per rank (cumulative, :data:`COUNTERS`): compute busy, comm busy
(any of its collectives in flight), their overlap, exposed communication (the stream
idle waiting for a collective) and host gaps (idle because the host had not launched
the next op yet). Stream time = compute + exposed + host gap, exactly.

Exact shortcuts: ``RunSpec.groups`` limits the run to some expert-parallel groups (the
others fold onto them, :mod:`dicesim.sim.fold`); with ``RunSpec.reuse`` a group whose windows
between count exchanges repeat takes them from its record (:mod:`dicesim.sim.engine.reuse`); the
transfers of groups that share no link are planned in one batch before the run
(:meth:`FlowNetwork.preplan`).
"""

from __future__ import annotations

from itertools import islice

import networkx as nx
import numpy as np
import simpy

from dicesim.errors import ConfigError
from dicesim.sim.engine.communicator import Collective, Communicator
from dicesim.sim.engine.groupcomm import COMBINE, DISPATCH, GroupComm
from dicesim.sim.network.linkscale import efficiency_scaled_graph, rank_port_links
from dicesim.sim.network.nccl import NcclModel, builtin_nccl_model, effective_graph
from dicesim.sim.network.network import FlowNetwork
from dicesim.sim.engine.program import BLOCK, DISCARD, DRAIN, ISSUE, RUN, STEP_END, SYNC, SYNC_KEEP, WAIT, compile_program
from dicesim.sim.engine.reuse import DONE, isolated, window_memos
from dicesim.sim.engine.runspec import COUNTERS, RawRun, RunSpec  # noqa: F401  (re-exported)
from dicesim.sim.engine.streams import ComputeStreams, RankState
from dicesim.topology import RouteTable, group_routes, world_size
from dicesim.trace import EventRecorder

_COUNTS = -1  # direction of a count exchange (all-to-alls: groupcomm.DISPATCH / COMBINE)


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
        # the NCCL model enters as G's capacities and, per group, as latency compiled into every flow
        # (GroupComm): memoised and pre-planned transfer plans, keyed by flows and capacities, include it
        G = efficiency_scaled_graph(effective_graph(spec.graph, nccl, self.library), profile)
        self._edges = [(u, v, str(d.get("link", ""))) for u, v, d in G.edges(data=True)]
        self.net = FlowNetwork(env, G, on_link_busy=self._on_link if self.rec is not None else None)
        self.host_op_s, self.host_coll_s = profile.host_op_s, profile.host_collective_s
        self.T, self.L = spec.plan.num_steps, spec.plan.num_layers
        self.ranks = [RankState(r) for r in range(W)]
        # endpoint links per rank, slowed while the rank computes (None: comm_interference == 0)
        ports = rank_port_links(self.net, G) if profile.comm_interference > 0 else None
        self.streams = ComputeStreams(env, self.net, self.ranks, interference=profile.interference,
                                      comm_interference=profile.comm_interference, ports=ports)
        self.step_end = np.zeros((W, self.T))
        self.counters = np.zeros((W, self.T, len(COUNTERS)))
        self.groups = placement.groups()
        self.active = tuple(range(len(self.groups))) if spec.groups is None else tuple(spec.groups)
        self.gc: dict[int, GroupComm] = {}
        self.comms: list[Communicator] = []
        separate = spec.plan.strategy.count_comm == "separate"
        on_done = self._on_coll_done if self.rec is not None else None
        tables = group_routes(G, [self.groups[g] for g in self.active])
        for g, table in zip(self.active, tables):
            members = self.groups[g]
            self.gc[g] = self._group_comm(g, members, table, G, nccl)
            kw = dict(starter=self._start, on_busy=self.streams.on_busy, on_done=on_done, group=g)
            moe = Communicator(env, f"ep{g}", "comm", members, **kw)
            cnt = Communicator(env, f"ep{g}.counts", "comm:counts", members, **kw) if separate else moe
            self.comms += [moe] + ([cnt] if separate else [])
            for m, r in enumerate(members):
                st = self.ranks[r]
                st.group, st.moe, st.moe_m, st.cnt, st.cnt_m = g, moe, m, cnt, m
        self.program = compile_program(spec.plan, spec.cost, host_op_s=self.host_op_s,
                                       merge=spec.merge_compute and not spec.record)
        self.flat = [ins for prog in self.program for ins in prog]
        self.recv = [routing.recv_rows_LTW(skip) for skip in (False, True)]
        # expert time per [skip][layer][tok_step] of each simulated rank, as nested lists for fast scalar reads
        for r in self.active_ranks:
            self.ranks[r].exp_s = [spec.cost.expert_times_s(rows[:, :, r]).tolist() for rows in self.recv]
        # groups that share no link with another group evolve on their own: exact shortcuts apply
        gcs = [self.gc[g] for g in self.active]
        ports_of = None if ports is None else [[ports[r] for r in gc.members] for gc in gcs]
        alone = isolated([gc.links_L for gc in gcs], ports_of)
        self.memos, self.reuse_blocked = window_memos(
            self.flat, self.L, [(gc.members, gc.count_lat_s, gc.matrix_id, gc.links_L, ok) for gc, ok in zip(gcs, alone)],
            n_counters=len(COUNTERS), count_comm=spec.plan.strategy.count_comm, record=spec.record, enabled=spec.reuse)
        for memo in self.memos:
            for r in memo.members:
                self.ranks[r].memo = memo
        if profile.comm_interference == 0:  # transfers of isolated groups start on idle links: plan them together
            uses = {(ins[3], ins[1], ins[2]) for ins in self.flat if ins[0] in (SYNC, ISSUE, SYNC_KEEP)}
            for gc, ok in zip(gcs, alone):
                if ok:
                    plan, mirrors = gc.distinct_groups(uses)
                    self.net.preplan(plan, mirrors, gc.rev_L)

    def _group_comm(self, g: int, members: tuple[int, ...], table: RouteTable, G: nx.DiGraph,
                    nccl: NcclModel) -> GroupComm:
        """The communication of group ``g`` on the engine's graph ``G`` (sim/hoststaged.py overrides it)."""
        s = self.spec
        return GroupComm(g, members, table, G, s.profile, s.routing, self.net, s.row_nbytes, nccl=nccl,
                         library=self.library)

    @property
    def active_ranks(self) -> list[int]:
        """Global ranks this engine simulates."""
        return [r for g in self.active for r in self.groups[g]]

    # ---------------------------------------------------------------- collectives
    def _start(self, comm: Communicator, coll: Collective) -> simpy.Event:
        gc = self.gc[comm.group]
        if coll.direction == _COUNTS:
            return self.env.timeout(gc.count_lat_s)
        return self.net.transfer(gc.flow_group(coll.direction, coll.layer, coll.tok_step, coll.skip))

    # ---------------------------------------------------------------- rank process
    def _rank_proc(self, st: RankState):
        env, rec, L, r = self.env, self.rec, self.L, st.r
        timeout, compute = env.timeout, self.streams.compute
        moe, mm, cnt, cm, moe_n = st.moe, st.moe_m, st.cnt, st.cnt_m, st.moe.n
        hop = self.host_op_s
        hcoll = self.host_coll_s if moe_n > 1 or self.loopback else 0.0  # a one-rank group launches none
        exp_s, memo = st.exp_s, st.memo
        pend_d: dict[int, simpy.Event] = {}
        pend_c: dict[int, simpy.Event] = {}
        host_t = comp = exposed = host_gap = 0.0  # host clock; cumulative busy/idle seconds
        t = 0  # current step
        it = iter(self.flat)
        for ins in it:
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
                t = ins[1]
                now = env.now
                if st.comm_active:
                    st.comm_busy += now - st.comm_t0
                    st.comm_t0 = now
                self.step_end[r, t] = now
                self.counters[r, t] = (comp, st.comm_busy, st.ovl, exposed, host_gap)
                if rec is not None:
                    t_prev = self.step_end[r, t - 1] if t else 0.0
                    rec.add(r, "host", "marker", f"step {t}", t_prev * 1e6, now * 1e6, -1, t)
                t += 1
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
                if memo is not None:  # a cut (dicesim.sim.engine.reuse): record it; jump over repeated windows
                    jump = memo.cut(mm, now, (comp, st.comm_busy, st.ovl, exposed, host_gap), self.net, moe)
                    if jump is not None:
                        gain = memo.apply(jump, mm, r, now, (comp, st.comm_busy, st.ovl, exposed, host_gap),
                                          self.step_end, self.counters).tolist()
                        comp += gain[0]
                        st.comm_busy += gain[1]
                        st.ovl += gain[2]
                        exposed += gain[3]
                        host_gap += gain[4]
                        ins = next(islice(it, jump.skip_n - 1, None))
                        yield timeout(jump.duration_s)
                        now = host_t = env.now
                        op, layer, tok, skip = ins
                        key = layer + L * tok
                        t = int(memo.win.cut_step[jump.landing])
                        pend_d = {k: DONE for k in memo.win.cut_pending[jump.landing][0]}
                        pend_c = {k: DONE for k in memo.win.cut_pending[jump.landing][1]}
                        memo.cut(mm, now, (comp, st.comm_busy, st.ovl, exposed, host_gap), self.net, moe)
                host_t += hcoll
                ev = moe.issue(mm, "dispatch", DISPATCH, layer, tok, skip, t, host_t if host_t > now else now)
                if op == ISSUE:
                    pend_d[key] = ev
                    continue
            else:
                ev = pend_d.pop(key) if op == RUN else pend_c.pop(key)
            # SYNC, SYNC_KEEP and RUN: wait for the dispatch, run the experts, issue the combine
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
            yield from compute(st, exp_s[skip][layer][tok])
            comp += env.now - now
            if rec is not None:
                rows = int(self.recv[skip][layer, tok, r])
                rec.add(r, "compute", "compute", "experts", now * 1e6, env.now * 1e6, layer, t, tok,
                        0, rows, -1, self.spec.cost.expert_cost(rows).flops)
            host_t += hcoll
            now = env.now
            ev = moe.issue(mm, "combine", COMBINE, layer, tok, skip, t, host_t if host_t > now else now)
            if op == RUN:
                pend_c[key] = ev
                continue
            if ev.callbacks is not None:  # SYNC: the combine is awaited at once
                yield ev
                exposed += env.now - now
                if rec is not None:
                    rec.add(r, "compute", "wait", "wait_combine", now * 1e6, env.now * 1e6, layer, t, tok)
            if op == SYNC_KEEP:  # its dispatch has arrived: a later RUN re-runs the experts at once
                pend_d[key] = DONE

    # ---------------------------------------------------------------- recording hooks
    def _on_coll_done(self, comm: Communicator, coll: Collective) -> None:
        M = (self.spec.routing.group_matrix(self.groups[comm.group], coll.layer, coll.tok_step, coll.skip)
             if coll.direction != _COUNTS else None)
        for m, r in enumerate(comm.members):
            rows = 0
            if M is not None:
                rows = int(M[m].sum() - M[m, m]) if coll.direction == DISPATCH else int(M[:, m].sum() - M[m, m])
            self.rec.add(r, comm.stream, "collective", coll.kind, coll.start_s * 1e6, coll.end_s * 1e6,
                         coll.layer, coll.step, coll.tok_step, rows * self.spec.row_nbytes, rows)

    def _on_link(self, link_id: int, start_s: float, end_s: float, nbytes: float) -> None:
        u, v, cls = self._edges[link_id]
        self.rec.add(-1, f"{u}->{v}", "link", cls, start_s * 1e6, end_s * 1e6, nbytes=int(round(nbytes)))

    # ---------------------------------------------------------------- run
    def run(self) -> RawRun:
        """Execute the whole plan once and return the measurements."""
        active = [self.ranks[r] for r in self.active_ranks]
        for st in active:
            st.proc = self.env.process(self._rank_proc(st))
        self.env.run()
        unfinished = [c.name for c in self.comms if not c.idle] + [
            f"rank {st.r}" for st in active if st.proc.is_alive]
        if unfinished:
            raise RuntimeError(f"simulation deadlocked: {', '.join(unfinished[:4])} did not finish")
        total = float(self.step_end[:, -1].max()) if self.T else 0.0
        return RawRun(
            step_end_WT=self.step_end, counters_WTK=self.counters, total_s=total,
            link_stats=self.net.link_stats(),
            events=self.rec.to_frame() if self.rec is not None else None,
            collectives=sum(c.count for c in self.comms),
            memo_hits=self.net.memo_hits, memo_misses=self.net.memo_misses,
            sim_events=_scheduled(self.env), windows=sum(m.win.n_windows for m in self.memos),
            windows_reused=sum(m.repeated for m in self.memos), reuse_blocked=self.reuse_blocked,
        )


def _scheduled(env: simpy.Environment) -> int:
    """Events ``env`` has scheduled so far, read off its event-id counter (0 where simpy hides it)."""
    text = repr(getattr(env, "_eid", ""))
    return int(text[6:-1]) if text.startswith("count(") else 0


def run_engine(spec: RunSpec) -> RawRun:
    """Build and run the simpy model for ``spec``."""
    return Engine(spec).run()
