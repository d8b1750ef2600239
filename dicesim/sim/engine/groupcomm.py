"""One group on the network: its routes, collective latencies and what each collective moves.

The engine keeps one :class:`GroupComm` per simulated group and asks it to start every
collective (:meth:`GroupComm.start`), whatever its kind in the one collective vocabulary
(:class:`~dicesim.plan.CollectiveKind`):

- ``counts``: a latency (the count exchange is latency-bound);
- ``dispatch`` / ``combine``: an all-to-all of the group's row matrix for (layer, token step,
  skip), compiled once per distinct matrix into a :class:`~dicesim.sim.network.flowgroup.FlowGroup`
  (row matrices get integer ids, so equal all-to-alls share one group and the network's plans);
- ``kv_gather``: an all-gather: every member sends the keys and values of its tokens, of every
  layer the collective covers, to every other member (sequence parallelism);
- ``token_gather``: the same with one row per token (K or V alone; the tokens at a forward's end);
- ``scatter`` / ``broadcast``: member 0 sends every other member one row per token of a slice /
  one row per image (the conditioning);
- ``head_a2a``: Ulysses' all-to-all of one q-sized tensor (one row per token of the member's slice):
  every member sends ``1/S`` of it (the heads, or the tokens, of the receiver) to every other member,
  directly, as ``all_to_all_single`` does (microsoft/DeepSpeed@38327e0 deepspeed/sequence/layer.py:244),
  with the all-to-all's fixed latency;
- ``kv_ring``: ring attention's W-1 K/V passes of one layer, one after the other: in each, every member
  sends its K/V block in hand (2 rows per token of its slice) to the next member and receives the
  previous member's (zhuzilin/ring-flash-attention@8996282 ring_flash_attn/utils.py:106-107, 121-124:
  ``send_rank = rank + 1``, ``recv_rank = rank - 1``), over the ring's routes, each pass with one
  protocol hop of fixed latency (:func:`pass_latency`); a pass starts when the previous one has ended
  everywhere (each rank waits for its pass before it sends the block it received: ring_flash_attn.py:61-63).

USP (``head_split`` < S): a ``head_a2a`` moves inside the Ulysses groups of ``head_split`` consecutive
members and a ``kv_ring`` around the ring groups of the members ``head_split`` apart (member m sends
to m + head_split; feifeibear/long-context-attention@56118e0 yunchang/globals.py:42-57), all groups at
once in one transfer (the groups run in lock step: every member issues the same collectives; a group
does not wait for another's members in the real run, which only the lock step makes equal: an
assumption), each with the latency of its own routes.

An all-gather moves as NCCL's ring does (its algorithm for all-gather, and gloo's): member i
forwards the slices of S-1 members to member i+1, so each ring hop carries (S-1) slices and a
socket link that the ring crosses twice carries what it carries, not what every member pair
would send across it; its latency is S-1 protocol hops in a row, as the ring all-reduce of
:mod:`dicesim.sim.microbench.collective_ops`. Where the profile has an ``all_gather`` base latency
(per ring step) and bandwidth (``collective_bw_Bps``; a CPU profile fits them on a gloo microbenchmark,
:mod:`dicesim.calibrate.fit_collectives`), the all-gather is gloo's ring (facebookincubator/gloo@5898507
gloo/allgather.cc: ``(size - 1) * 2`` half-slice send/recv pairs to rank+1 / from rank-1, each after the
next-to-last one): S-1 step latencies, and its S-1 slices drain at that bandwidth on an idle link (the
flows carry their bytes scaled by the link's bandwidth over it, so sharing and slow-downs still apply);
otherwise the profile's ``all_to_all`` base latency stands in (an assumption). A ring-attention pass
likewise takes the profile's ``p2p_pass`` base and bandwidth where given. The scatter and the broadcast go from
member 0 to every other member directly (the broadcast's ring pipeline is not modelled: it moves
one row per image) with the all-to-all's fixed latency.

It also knows which network links the group's traffic can touch (what decides whether it is
isolated from other groups).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from dicesim.plan import CollectiveKind
from dicesim.plan.layout import head_groups, ring_successors
from dicesim.sim.engine.program import Coll
from dicesim.sim.network.flowgroup import FlowGroup, LinkShare
from dicesim.sim.network.nccl import NcclModel, hop_latency_s, route_transports
from dicesim.sim.network.network import FlowNetwork
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.costs.routing import TokenRouting
from dicesim.topology import RouteTable

DISPATCH, COMBINE, COUNTS, KV_GATHER = (int(k) for k in (CollectiveKind.DISPATCH, CollectiveKind.COMBINE,
                                                             CollectiveKind.COUNTS, CollectiveKind.KV_GATHER))
TOKEN_GATHER, SCATTER, BROADCAST, HEAD_A2A, KV_RING = (
    int(k) for k in (CollectiveKind.TOKEN_GATHER, CollectiveKind.SCATTER, CollectiveKind.BROADCAST,
                     CollectiveKind.HEAD_A2A, CollectiveKind.KV_RING))
#: all-gathers -> rows per token and layer each member sends to every other member
_GATHER_ROWS = {KV_GATHER: 2, TOKEN_GATHER: 1}


class GroupComm:
    """Collective data movement of group ``g`` (global ranks ``members``) over ``net``; ``images``:
    images each rank computes (rows of a ``broadcast``)."""

    def __init__(self, g: int, members: tuple[int, ...], table: RouteTable, G: nx.DiGraph, profile: HardwareProfile,
                 routing: TokenRouting, net: FlowNetwork, row_nbytes: int, *, nccl: NcclModel, library: str,
                 share: LinkShare | None = None, images: int = 0, head_split: int = 0):
        self.g, self.members, self.routing, self.row_nbytes, self.net = g, members, routing, row_nbytes, net
        self.images = images
        S = len(members)
        #: members of one Ulysses group (consecutive); the ring groups take the members this far apart
        self.head_split = head_split if 0 < head_split <= S else S
        #: members of one ring (0: the whole group, whatever its Ulysses groups, as before USP)
        self.ring_size = S if head_split == 0 else S // self.head_split
        #: each member's position's next in its ring (:func:`~dicesim.plan.layout.ring_successors`)
        self.ring_next = ring_successors(S, S // self.ring_size)
        # a one-rank group exchanges nothing
        self.a2a_lat_s = self.count_lat_s = self.ring_lat_s = self.pass_lat_s = self.head_lat_s = 0.0
        if len(members) > 1:
            self.a2a_lat_s, self.count_lat_s = collective_latencies(
                G, table.routes.values(), max(table.latency_s.values(), default=0.0), profile, nccl, library)
            self.ring_lat_s = ring_latency(G, table, members, profile, nccl, library)
            self.head_lat_s = self.a2a_lat_s
            if self.head_split < S:  # USP: the Ulysses groups' own routes
                self.head_lat_s = 0.0 if self.head_split == 1 else collective_latencies(
                    G, [table.routes[(members[a], members[b])] for grp in head_groups(S, self.head_split)
                        for a in grp for b in grp if a != b], 0.0, profile, nccl, library)[0]
            self.pass_lat_s = 0.0 if self.ring_size == 1 else pass_latency(G, table, members, profile, nccl, library,
                                                                            nxt=self.ring_next)
        #: kind -> factor on the bytes its flows carry: the ring's link bandwidth over the kind's own
        #: (``collective_bw_Bps``), 1 where the profile has none
        self.byte_scale = {KV_GATHER: 1.0, TOKEN_GATHER: 1.0, KV_RING: 1.0}
        if len(members) > 1:
            scaled = [((KV_GATHER, TOKEN_GATHER), "all_gather", ring_successors(S, 1))]
            if self.ring_size > 1:  # a one-member ring passes nothing
                scaled.append(((KV_RING,), "p2p_pass", self.ring_next))
            for kinds, key, nxt in scaled:
                own = profile.collective_bw_Bps.get(key)
                link_bw = ring_link_bw_Bps(G, table, members, profile, nxt=nxt)
                if own is not None and np.isfinite(link_bw):
                    self.byte_scale.update(dict.fromkeys(kinds, link_bw / own))
        #: [skip] -> [L, T] id of the group's row matrix (equal ids for equal matrices)
        self.matrix_id = [matrix_ids(routing, members, skip) for skip in (False, True)]
        #: ids of the links the group's flows cross (on the quotient network when ``share`` is given:
        #: the group then stands for equivalent groups in lock step with it, :mod:`dicesim.sim.fold`)
        self.links_L = np.array(sorted({net.link_id(e) for r in table.routes.values() for e in r}), dtype=np.intp)
        merged = share is not None and not np.array_equal(share.remap_L[self.links_L], self.links_L)
        if share is not None:
            self.links_L = share.links(self.links_L)
        # flow (i, j) of a dispatch carries member i's rows to member j; a combine brings them back
        self._pairs = [net.pair_flows([table.routes[(a, b) if d == DISPATCH else (b, a)]
                                       for a in members for b in members], share) for d in (DISPATCH, COMBINE)]
        self._cache: dict[tuple, FlowGroup] = {}
        #: link id -> its reverse when every combine route is its dispatch route backwards with the
        #: same capacities and latency sums (then a combine's plan is its dispatch's, mirrored)
        self.rev_L = (_mirror(table, members, net) if not merged and self._pairs[DISPATCH].same_latency(self._pairs[COMBINE])
                      else None)

    def start(self, coll: Coll):
        """Start ``coll`` now on the group's links; the simpy event that fires when it has ended."""
        if coll.kind == COUNTS:
            return self.net.env.timeout(self.count_lat_s)
        if coll.kind in _GATHER_ROWS:
            return self.net.transfer(self.gather_group(coll.span, coll.kind))
        if coll.kind == SCATTER or coll.kind == BROADCAST:
            return self.net.transfer(self.root_group(coll.kind))
        if coll.kind == HEAD_A2A:
            return self.net.transfer(self.head_group())
        if coll.kind == KV_RING:
            return self.net.env.process(self._passes(self.pass_group()))
        return self.net.transfer(self.flow_group(coll.kind, coll.layer, coll.tok_step, coll.skip))

    def moved_rows(self, coll: Coll) -> list[int]:
        """Rows each member sent to the others in ``coll`` (for the trace; 0 for a count exchange)."""
        S = len(self.members)
        if coll.kind == COUNTS:
            return [0] * S
        if coll.kind in _GATHER_ROWS:
            return [_GATHER_ROWS[coll.kind] * self.routing.tokens_per_rank * coll.span * (S - 1)] * S
        if coll.kind == SCATTER or coll.kind == BROADCAST:
            return [self._root_rows(coll.kind) * (S - 1)] + [0] * (S - 1)
        if coll.kind == HEAD_A2A:  # (u-1)/u of the member's rows (whole rows; the flows carry the exact bytes)
            u = self.head_split
            return [self.routing.tokens_per_rank * (u - 1) // u] * S
        if coll.kind == KV_RING:  # R-1 passes of the member's K/V block (2 rows per token of its slice)
            return [2 * self.routing.tokens_per_rank * (self.ring_size - 1)] * S
        M = self.routing.group_matrix(self.members, coll.layer, coll.tok_step, coll.skip)
        if coll.kind == DISPATCH:
            return [int(M[m].sum() - M[m, m]) for m in range(S)]
        return [int(M[:, m].sum() - M[m, m]) for m in range(S)]  # a combine sends back what arrived

    def gather_group(self, span: int, kind: int = KV_GATHER) -> FlowGroup:
        """The transfer of one all-gather covering ``span`` layers of each member's rows of its tokens
        (``kv_gather``: keys and values, 2 rows per token and layer; ``token_gather``: 1), as a ring:
        member i sends member i+1 the slices of every member but i+1."""
        key = (kind, span)
        fg = self._cache.get(key)
        if fg is None:
            S = len(self.members)
            nbytes = np.zeros((S, S))
            if S > 1:
                slice_nbytes = _GATHER_ROWS[kind] * self.routing.tokens_per_rank * self.row_nbytes * span
                nbytes[np.arange(S), (np.arange(S) + 1) % S] = (S - 1) * slice_nbytes * self.byte_scale[kind]
            fg = self._cache[key] = self._pairs[DISPATCH].compile(nbytes.ravel(), self.ring_lat_s)
        return fg

    def _root_rows(self, kind: int) -> int:
        return self.routing.tokens_per_rank if kind == SCATTER else self.images

    def root_group(self, kind: int) -> FlowGroup:
        """The transfer of a ``scatter`` (a slice of tokens) or ``broadcast`` (a row per image) from member 0."""
        fg = self._cache.get((kind, 0))
        if fg is None:
            S = len(self.members)
            nbytes = np.zeros((S, S))
            nbytes[0, 1:] = self._root_rows(kind) * self.row_nbytes
            fg = self._cache[(kind, 0)] = self._pairs[DISPATCH].compile(nbytes.ravel(), self.a2a_lat_s)
        return fg

    def head_group(self) -> FlowGroup:
        """The transfer of one Ulysses all-to-all: every member sends every other member of its Ulysses group
        (all S members, or USP's ``head_split`` consecutive ones) ``1/u`` of its q-sized tensor
        (``tokens_per_rank`` rows), ``tokens_per_rank x row_nbytes / u`` bytes."""
        fg = self._cache.get((HEAD_A2A, 0))
        if fg is None:
            S, u = len(self.members), self.head_split
            nbytes = np.zeros((S, S))
            for grp in head_groups(S, u):
                nbytes[np.ix_(grp, grp)] = self.routing.tokens_per_rank * self.row_nbytes / u
            np.fill_diagonal(nbytes, 0.0)  # the member's own share stays
            fg = self._cache[(HEAD_A2A, 0)] = self._pairs[DISPATCH].compile(nbytes.ravel(), self.head_lat_s)
        return fg

    def pass_group(self) -> FlowGroup:
        """The transfer of one ring-attention pass: every member sends the next member of its ring (the next
        member; under USP the member ``head_split`` on) one K/V block, ``2 x tokens_per_rank x row_nbytes`` bytes."""
        fg = self._cache.get((KV_RING, 0))
        if fg is None:
            S = len(self.members)
            nbytes = np.zeros((S, S))
            if self.ring_size > 1:
                nbytes[np.arange(S), self.ring_next] = (2 * self.routing.tokens_per_rank * self.row_nbytes
                                                        * self.byte_scale[KV_RING])
            fg = self._cache[(KV_RING, 0)] = self._pairs[DISPATCH].compile(nbytes.ravel(), self.pass_lat_s)
        return fg

    def _passes(self, fg: FlowGroup):
        """The R-1 passes of one ``kv_ring`` (R: the ring's members), one after the other (a simpy process)."""
        for _ in range(self.ring_size - 1):
            yield self.net.transfer(fg)

    def flow_group(self, direction: int, layer: int, tok: int, skip: bool) -> FlowGroup:
        """The transfer of one all-to-all (compiled once per distinct row matrix and direction)."""
        key = (direction, skip, int(self.matrix_id[skip][layer, tok]))
        fg = self._cache.get(key)
        if fg is None:
            nbytes = self.routing.group_matrix(self.members, layer, tok, skip) * self.row_nbytes
            nbytes.flat[::nbytes.shape[0] + 1] = 0  # rows a rank keeps for its own experts do not travel
            fg = self._cache[key] = self._pairs[direction].compile(nbytes.ravel(), self.a2a_lat_s)
        return fg

    def _compile_all(self, uses: list[tuple[bool, int, int]]) -> None:
        """Compile the dispatch and combine of every ``(skip, layer, tok_step)`` in ``uses`` not compiled yet,
        in one batch per direction (:meth:`PairFlows.compile_many`: the groups :meth:`flow_group` makes)."""
        for skip in (False, True):
            todo = [(layer, tok) for s, layer, tok in uses if s == skip]
            if not todo:
                continue
            ls, ts = (np.array(x, dtype=np.intp) for x in zip(*todo))
            ids = self.matrix_id[skip][ls, ts]
            send = self.routing.send_rows_LTWS(skip)
            members = np.array(self.members, dtype=np.intp)
            S = members.shape[0]
            nbytes_KSS = send[ls[:, None], ts[:, None], members[None, :], :] * self.row_nbytes
            nbytes_KSS[:, np.arange(S), np.arange(S)] = 0  # rows a rank keeps for its own experts do not travel
            for d in (DISPATCH, COMBINE):
                keys = [(d, skip, int(i)) for i in ids.tolist()]
                need = [k for k, key in enumerate(keys) if key not in self._cache]
                if need:
                    groups = self._pairs[d].compile_many(nbytes_KSS[need].reshape(len(need), S * S), self.a2a_lat_s)
                    for k, fg in zip(need, groups):
                        self._cache.setdefault(keys[k], fg)

    def distinct_groups(self, uses) -> tuple[list[FlowGroup], list[tuple[FlowGroup, FlowGroup]]]:
        """Every transfer of the ``(skip, layer, tok_step)`` all-to-alls in ``uses``, each distinct one
        once: the ones to plan, and ``(combine, dispatch)`` mirror pairs (see :attr:`rev_L`)."""
        seen, todo, plan, mirrors = set(), [], [], []
        for skip, layer, tok in uses:
            mid = (skip, int(self.matrix_id[skip][layer, tok]))
            if mid not in seen:
                seen.add(mid)
                todo.append((skip, layer, tok))
        self._compile_all(todo)
        for skip, layer, tok in todo:
            d, c = (self.flow_group(x, layer, tok, skip) for x in (DISPATCH, COMBINE))
            plan.append(d)
            if self.rev_L is None:
                plan.append(c)
            else:
                mirrors.append((c, d))
        return plan, mirrors


def collective_latencies(G: nx.DiGraph, routes, route_lat_s: float, profile: HardwareProfile, nccl: NcclModel,
                         library: str) -> tuple[float, float]:
    """``(all-to-all, count exchange)`` fixed latency of a group whose flows take ``routes`` (edges of
    ``G``); ``route_lat_s``: the longest route's latency sum, which the latency-bound count exchange
    pays in full (an all-to-all's flows pay their own route latency in the network).

    The profile's base and link-class terms always apply; NCCL's own terms (its all-to-all
    latency and the slowest protocol hop) only where NCCL transports carry the routes, so not on
    CPU/gloo graphs or for ``library = "memcpy"``.
    """
    routes = list(routes)
    cls_lat = max((profile.link_latency(str(G.edges[e].get("link", ""))) for r in routes for e in r), default=0.0)
    transports = route_transports(G, routes, library)
    lib_lat = (nccl.a2a_latency_s + hop_latency_s(nccl, transports)) if transports else 0.0
    return (profile.collective_base_s["all_to_all"] + cls_lat + lib_lat,
            profile.collective_base_s["count_exchange"] + cls_lat + route_lat_s + lib_lat)


def ring_latency(G: nx.DiGraph, table: RouteTable, members: tuple[int, ...], profile: HardwareProfile,
                 nccl: NcclModel, library: str) -> float:
    """Fixed latency of a ring all-gather over ``members`` (in member order): the base (S-1 ``all_gather`` step
    latencies where the profile has one, else the ``all_to_all`` base) and link-class terms, S-1 protocol hops
    in a row where NCCL transports carry the ring, and S-2 more ring-route latencies
    (each flow pays its own route once in the network)."""
    S = len(members)
    hops = [(members[i], members[(i + 1) % S]) for i in range(S)]
    routes = [table.routes[h] for h in hops]
    cls_lat = max((profile.link_latency(str(G.edges[e].get("link", ""))) for r in routes for e in r), default=0.0)
    transports = route_transports(G, routes, library)
    hop_s = hop_latency_s(nccl, transports) if transports else 0.0
    ring_route_s = max(table.latency_s[h] for h in hops)
    base = profile.collective_base_s
    fixed = (S - 1) * base["all_gather"] if "all_gather" in base else base["all_to_all"]
    return fixed + cls_lat + (S - 1) * hop_s + max(S - 2, 0) * ring_route_s


def pass_latency(G: nx.DiGraph, table: RouteTable, members: tuple[int, ...], profile: HardwareProfile,
                 nccl: NcclModel, library: str, *, nxt: tuple[int, ...]) -> float:
    """Fixed latency of one ring-attention pass over ``members`` (every member to the next, at once): the
    profile's ``p2p_pass`` base where it has one (a CPU profile fitted on a gloo microbenchmark), else its
    all-to-all base (standing in for a grouped send/receive's: an assumption until one is measured;
    PyTorch runs an NCCL all-to-all as sends and receives to every peer inside one NCCL group where NCCL has no
    ncclAllToAll: pytorch/pytorch@0033e77 torch/csrc/cuda/nccl.cpp ``all2all_single_equal_split``), the
    link-class term of the ring's routes, and one protocol hop where NCCL transports carry them (each flow pays
    its own route latency in the network). ``nxt``: each member's position's next in its ring."""
    routes = [table.routes[(members[i], members[j])] for i, j in enumerate(nxt)]
    cls_lat = max((profile.link_latency(str(G.edges[e].get("link", ""))) for r in routes for e in r), default=0.0)
    transports = route_transports(G, routes, library)
    hop_s = hop_latency_s(nccl, transports) if transports else 0.0
    return profile.collective_base_s.get("p2p_pass", profile.collective_base_s["all_to_all"]) + cls_lat + hop_s


def ring_link_bw_Bps(G: nx.DiGraph, table: RouteTable, members: tuple[int, ...], profile: HardwareProfile, *,
                     nxt: tuple[int, ...]) -> float:
    """The slowest link bandwidth on the ring's routes (member i to member ``nxt[i]``), as collectives reach it."""
    routes = [table.routes[(members[i], members[j])] for i, j in enumerate(nxt)]
    return min((float(G.edges[e]["bw_Bps"]) * profile.bw_eff(str(G.edges[e].get("link", ""))) for r in routes
                for e in r), default=float("inf"))


def _mirror(table: RouteTable, members: tuple[int, ...], net: FlowNetwork) -> np.ndarray | None:
    """Link id -> id of the same link backwards, if every route between members is the reverse of
    the route back and each link's reverse has its capacity; else None."""
    rev = np.full(len(net.links), -1, dtype=np.intp)
    for a in members:
        for b in members:
            if a == b:
                continue
            there, back = table.routes[(a, b)], table.routes[(b, a)]
            if tuple((v, u) for u, v in reversed(there)) != back:
                return None
            for u, v in there:
                rev[net.link_id((u, v))] = net.link_id((v, u))
    used = np.flatnonzero(rev >= 0)
    if not np.array_equal(net.capacities_L[used], net.capacities_L[rev[used]]):
        return None
    return rev


def matrix_ids(routing: TokenRouting, members: tuple[int, ...], skip: bool) -> np.ndarray:
    """``[L, T]`` ids, equal where the group's row matrix is equal (shares compiled flow groups)."""
    send = routing.send_rows_LTWS(skip)
    L, T = send.shape[:2]
    if L and T and send.strides[1] == 0:  # every step repeats step 0's table (expected counts): the
        # distinct rows, hence their order and ids, are those of step 0; each step takes its layer's id
        first = np.ascontiguousarray(send[:, :1, list(members), :])
        return np.repeat(content_ids(first.reshape(L, -1)), T).reshape(L, T)
    full = np.ascontiguousarray(send[:, :, list(members), :])
    return content_ids(full.reshape(L * T, -1)).reshape(L, T)


def content_ids(rows_NX: np.ndarray) -> np.ndarray:
    """``[N]`` ids of the rows of a C-contiguous array, equal for equal rows, numbered in the byte
    order of the rows (what ``np.unique`` over the rows as void scalars gives, without its sort of
    wide void items, which cost a study about a second): a hash per row, one sort of the distinct ones."""
    keys = [r.tobytes() for r in rows_NX]
    rank = {k: i for i, k in enumerate(sorted(set(keys)))}
    return np.fromiter((rank[k] for k in keys), dtype=np.intp, count=len(keys))
