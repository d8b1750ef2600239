"""The simpy model of one run: every rank walks the compiled plan on its compute and comm streams.

:class:`Engine` builds the world of one :class:`~dicesim.sim.engine.runspec.EngineSpec` and runs
it once. The run's parallel layout (:class:`dicesim.plan.ParallelLayout`) says which ranks form
which groups and which communicators each group opens (one, or a second for count exchanges);
a :class:`~dicesim.sim.engine.communicator.Communicator` runs each in issue order, and the
group's :class:`~dicesim.sim.engine.groupcomm.GroupComm` moves what each collective carries over
the graph through :class:`~dicesim.sim.network.network.FlowNetwork`, whose links carry what NCCL
reaches on them (:mod:`dicesim.sim.network.nccl`: the topology's line rates times the
transport's fitted share). How compute and communication slow each other (exactly, op by op) is
:mod:`dicesim.sim.engine.streams`; what each rank does, instruction by instruction, is
:mod:`dicesim.sim.engine.rank`.

Exact shortcuts: ``EngineSpec.groups`` limits the run to some groups (the others fold onto
them, :mod:`dicesim.sim.fold`); with ``EngineSpec.reuse`` a group whose windows between cuts
repeat takes them from its record (:mod:`dicesim.sim.engine.reuse`); the transfers of groups that
share no link are planned in one batch before the run (:meth:`FlowNetwork.preplan`).
"""

from __future__ import annotations

from functools import partial

import networkx as nx
import numpy as np
import simpy

from dicesim.errors import ConfigError
from dicesim.plan import CollectiveKind
from dicesim.sim.engine.communicator import Collective, Communicator
from dicesim.sim.engine.groupcomm import GroupComm
from dicesim.sim.engine.program import ISSUE, HostTable, compile_program
from dicesim.sim.engine.rank import rank_process
from dicesim.sim.engine.recording import TraceHooks
from dicesim.sim.engine.reuse import isolated, window_memos
from dicesim.sim.engine.skeleton import skeleton_of, windows_of
from dicesim.sim.engine.streamcut import StreamMemo
from dicesim.sim.engine.runspec import COUNTERS, EngineSpec, RawRun
from dicesim.sim.engine.streams import ComputeStreams, RankState
from dicesim.sim.network.linkscale import efficiency_scaled_graph, rank_port_links
from dicesim.sim.network.nccl import NcclModel, builtin_nccl_model, effective_graph
from dicesim.sim.network.network import FlowNetwork
from dicesim.topology import RouteTable, group_routes, world_size

_DISPATCH = int(CollectiveKind.DISPATCH)


class Engine:
    """Builds the simpy world for one :class:`EngineSpec`; :meth:`run` executes it once."""

    #: a one-rank group launches collectives only when they loop through host memory (sim/hoststaged.py)
    loopback = False
    #: who moves the bytes: NCCL's transport factors apply for "nccl", none for "memcpy"
    library = "nccl"

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        routing, profile, layout = spec.routing, spec.profile, spec.layout
        W = layout.world_size
        if world_size(spec.graph) < W:
            raise ConfigError("world_size", f"{W} ranks but topology {spec.graph.graph.get('name', '')!r} "
                                            f"has {world_size(spec.graph)} GPUs")
        self.env = env = simpy.Environment()
        nccl = spec.nccl or builtin_nccl_model()
        # the NCCL model enters as G's capacities and, per group, as latency compiled into every flow
        # (GroupComm): memoised and pre-planned transfer plans, keyed by flows and capacities, include it
        G = efficiency_scaled_graph(effective_graph(spec.graph, nccl, self.library), profile)
        self.gc: dict[int, GroupComm] = {}
        edges = [(u, v, str(d.get("link", ""))) for u, v, d in G.edges(data=True)]
        self.trace = TraceHooks(edges, self.gc, spec.row_nbytes) if spec.record else None
        self.net = FlowNetwork(env, G, on_link_busy=self.trace.link if self.trace is not None else None)
        self.T, self.L = spec.plan.num_steps, spec.plan.num_layers
        self.ranks = [RankState(r) for r in range(W)]
        self.step_end = np.zeros((W, self.T))
        self.counters = np.zeros((W, self.T, len(COUNTERS)))
        self.groups = layout.groups()
        self.active = tuple(range(len(self.groups))) if spec.groups is None else tuple(spec.groups)
        self.comms: list[Communicator] = []
        on_done = self.trace.collective if self.trace is not None else None
        tables = spec.routes if spec.routes is not None else group_routes(G, [self.groups[g] for g in self.active])
        # per rank the links its compute slows, and their users (None: comm_interference == 0)
        ports, users_L = (rank_port_links(self.net, G, [t.routes for t in tables])
                          if profile.comm_interference > 0 else (None, None))
        self.streams = ComputeStreams(env, self.net, self.ranks, interference=profile.interference,
                                      comm_interference=profile.comm_interference, ports=ports, users_L=users_L)
        for g, table in zip(self.active, tables):
            members = self.groups[g]
            self.gc[g] = self._group_comm(g, members, table, G, nccl)
            kw = dict(starter=self._start, on_busy=self.streams.on_busy, on_done=on_done, group=g)
            comms = tuple(Communicator(env, f"ep{g}{c.suffix}", c.stream, members, **kw) for c in layout.communicators)
            self.comms += comms
            for m, r in enumerate(members):
                st = self.ranks[r]
                st.group, st.comms, st.mids = g, comms, (m,) * len(comms)
        host = HostTable(spec.cost)
        launches = len(self.groups[0]) > 1 or self.loopback  # a one-rank group launches no collective
        self.coll_host = [host.collective(int(k), launches=launches) for k in CollectiveKind]
        self.sync_s = profile.host.sync_s if profile.host is not None else 0.0
        merge = spec.merge_compute and not spec.record
        skel = skeleton_of(spec.plans, spec.plan, layout) if spec.plans is not None and merge else None
        priced = skel.price(spec.cost, host) if skel is not None else None
        if priced is None:
            self.program = compile_program(spec.plan, spec.cost, layout, host=host, merge=merge)
            find = None
        else:  # the same program, compiled once per plan and layout (sim/engine/skeleton.py)
            self.program = priced.program
            find = partial(windows_of, spec.plans, spec.plan, layout, priced.pattern)
        self.flat = [ins for prog in self.program for ins in prog]
        self.recv = [routing.recv_rows_LTW(skip) for skip in (False, True)]
        # expert time per [skip][layer][tok_step] of each simulated rank, as nested lists for fast scalar reads;
        # the times are a pure function of the rows, priced once per distinct row count over all ranks
        act = self.active_ranks
        exp_RSLT = np.moveaxis(spec.cost.expert_times_s(np.stack([rows[:, :, act] for rows in self.recv])), -1, 0)
        for r, exp_s in zip(act, exp_RSLT.tolist()):
            self.ranks[r].exp_s = exp_s
        # groups that share no link with another group evolve on their own: exact shortcuts apply
        gcs = [self.gc[g] for g in self.active]
        ports_of = None if ports is None else [[ports[r] for r in gc.members] for gc in gcs]
        alone = isolated([gc.links_L for gc in gcs], ports_of)
        cuts = spec.plan.rules.window_cuts(spec.plan.strategy)
        self.memos, self.reuse_blocked = window_memos(
            self.flat, [(gc.members, gc.count_lat_s, gc.matrix_id, gc.links_L, ok) for gc, ok in zip(gcs, alone)],
            n_counters=len(COUNTERS), cuts=cuts, record=spec.record, enabled=spec.reuse, find=find,
            memo=StreamMemo if cuts.stream else None)
        for memo in self.memos:
            for r in memo.members:
                self.ranks[r].memo = memo
        if profile.comm_interference == 0:  # transfers of isolated groups start on idle links: plan them together
            # (skip, layer, tok_step) of every dispatch (Coll fields 3, 1, 2); each plans its combine too
            uses = skel.dispatch_uses if priced is not None else {
                (ins[2][3], ins[2][1], ins[2][2]) for ins in self.flat if ins[0] == ISSUE and ins[2][0] == _DISPATCH}
            for gc, ok in zip(gcs, alone):
                if ok:
                    plan, mirrors = gc.distinct_groups(uses)
                    self.net.preplan(plan, mirrors, gc.rev_L)

    def _group_comm(self, g: int, members: tuple[int, ...], table: RouteTable, G: nx.DiGraph,
                    nccl: NcclModel) -> GroupComm:
        """The communication of group ``g`` on the engine's graph ``G`` (sim/hoststaged.py overrides it)."""
        s = self.spec
        return GroupComm(g, members, table, G, s.profile, s.routing, self.net, s.row_nbytes, nccl=nccl,
                         library=self.library, share=s.shares.get(g) if s.shares else None,
                         images=s.cost.workload.images, head_split=s.layout.head_split)

    @property
    def active_ranks(self) -> list[int]:
        """Global ranks this engine simulates."""
        return [r for g in self.active for r in self.groups[g]]

    def recv_rows(self, skip: bool, layer: int, tok: int, r: int) -> int:
        """Rows rank ``r`` received for its experts in the exchange of (layer, tok)."""
        return int(self.recv[skip][layer, tok, r])

    def _start(self, comm: Communicator, c: Collective) -> simpy.Event:
        return self.gc[comm.group].start(c.coll)

    # ---------------------------------------------------------------- run
    def run(self) -> RawRun:
        """Execute the whole plan once and return the measurements."""
        active = [self.ranks[r] for r in self.active_ranks]
        for st in active:
            st.proc = self.env.process(rank_process(self, st))
        self.env.run()
        unfinished = [c.name for c in self.comms if not c.idle] + [
            f"rank {st.r}" for st in active if st.proc.is_alive]
        if unfinished:
            raise RuntimeError(f"simulation deadlocked: {', '.join(unfinished[:4])} did not finish")
        total = float(self.step_end[:, -1].max()) if self.T else 0.0
        raw = RawRun(
            step_end_WT=self.step_end, counters_WTK=self.counters, total_s=total,
            link_stats=self.net.link_stats(),
            events=self.trace.rec.to_frame() if self.trace is not None else None,
            collectives=sum(c.count for c in self.comms),
            memo_hits=self.net.memo_hits, memo_misses=self.net.memo_misses,
            sim_events=_scheduled(self.env), windows=sum(m.win.n_windows for m in self.memos),
            windows_reused=sum(m.repeated for m in self.memos), reuse_blocked=self.reuse_blocked,
        )
        self._release()
        return raw

    def _release(self) -> None:
        """Drop the world of a finished run. Its objects refer to each other (communicators call back
        into the engine, processes hold its ranks), so only the cycle collector could free them; the
        compiled program alone is ~10^4 tuples per run, and a sweep's collections of that garbage
        cost as much as its simulations. Dropped here, reference counting frees them at once."""
        for st in self.ranks:
            st.proc = st.comms = st.memo = st.exp_s = None
        for c in self.comms:
            c._starter = c._on_busy = c._on_done = None
        self.comms, self.program, self.flat, self.memos, self.recv = [], [], [], [], []
        self.gc.clear()


def _scheduled(env: simpy.Environment) -> int:
    """Events ``env`` has scheduled so far, read off its event-id counter (0 where simpy hides it)."""
    text = repr(getattr(env, "_eid", ""))
    return int(text[6:-1]) if text.startswith("count(") else 0


def run_engine(spec: EngineSpec) -> RawRun:
    """Build and run the simpy model for ``spec``."""
    return Engine(spec).run()
