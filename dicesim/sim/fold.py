"""Folding symmetric expert-parallel groups: simulate one group of each kind, copy it to the rest.

When W > E the ranks form W/E expert-parallel groups, data-parallel replicas that exchange
nothing with each other. Two groups can only influence each other through a link both use
(flows sharing it, or, with ``comm_interference``, one group's compute slowing an endpoint
link the other's flows cross). A group that shares no link with any other group is *isolated*.
Two isolated groups are *equivalent* when a member-by-member correspondence maps the routes
of one onto the routes of the other link by link, with equal bandwidth, latency and link class
(and the same endpoint links of the same members), and they carry the same routed rows at every
layer and step. An isolated group then evolves exactly like any equivalent one (same
instructions, same arithmetic on the same numbers, in the same order), so the engine runs one
*representative* per class and every other group takes its representative's step ends,
counters, link totals (through the link correspondence) and events (renumbered). Groups that
share links are all simulated together; nothing about them is folded. The NCCL model
(:mod:`dicesim.sim.network.nccl`) does not break an equivalence: its bandwidth share and latencies
depend only on a link's class and the graph's peer-to-peer flag, and every group runs the same
plan (discards, kept rows and drains included).

Traces of a folded run: every rank and link has its events, copied from its representative
with the rank (and the link's track name) replaced, so a folded trace has the same rows as an
unfolded one (in a different row order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dicesim.sim.engine.engine import run_engine
from dicesim.sim.engine.runspec import EngineSpec, RawRun
from dicesim.sim.network.linkscale import comm_paths
from dicesim.sim.network.flowgroup import LinkShare
from dicesim.sim.sample import GroupSample, plan_sample, sample_info
from dicesim.topology import RouteTable, group_routes


@dataclass(frozen=True)
class Fold:
    """Which groups the engine simulates and where every other group takes its results from.

    ``rep[g]`` is the simulated group whose results group ``g`` takes (``g`` itself when
    simulated). ``link_of_L[l]``: the link of the simulated network whose totals physical link ``l``
    takes (``l`` itself where nothing folds onto another link, -1 where no group's flow goes).
    ``shares``: per simulated group that stands for groups sharing its links in lock step, how its
    flows load the quotient network (:class:`~dicesim.sim.network.flowgroup.LinkShare`); empty when
    the folded groups are isolated.
    """

    groups: tuple[tuple[int, ...], ...]
    rep: tuple[int, ...]
    link_of_L: np.ndarray
    reason: str | None
    shares: dict[int, LinkShare] = dataclasses.field(default_factory=dict)
    #: route tables of the simulated groups (the engine routes on a graph with the same latencies)
    routes: tuple[RouteTable, ...] | None = None
    #: alike groups sampled instead of folded (:mod:`dicesim.sim.sample`): results are predicted
    sample: GroupSample | None = None

    @property
    def simulated(self) -> tuple[int, ...]:
        return tuple(g for g, r in enumerate(self.rep) if r == g)

    @property
    def applied(self) -> bool:
        return len(self.simulated) < len(self.groups)

    def info(self) -> dict[str, Any]:
        """What :func:`dicesim.sim.api.simulate` reports in ``meta["fold"]``."""
        if self.sample is not None:  # a prediction, not a fold: meta["sample"] says what was simulated
            return {"applied": False, "groups": len(self.groups), "simulated_groups": len(self.simulated),
                    "reason": "no two groups carry the same load; alike groups sampled", "shared_links": False}
        return {"applied": self.applied, "groups": len(self.groups), "simulated_groups": len(self.simulated),
                "reason": self.reason, "shared_links": bool(self.shares)}


def _signature(routes: dict, members: tuple[int, ...], link_id: dict, attrs_L: list, ports: list | None):
    """Canonical shape of one group: links numbered by first use over the member pairs in order."""
    local: dict[int, int] = {}
    order: list[int] = []
    shape = []
    for i in members:
        for j in members:
            if i == j:
                continue
            ids = []
            for e in routes[(i, j)]:
                lid = link_id[e]
                k = local.get(lid)
                if k is None:
                    k = local[lid] = len(order)
                    order.append(lid)
                ids.append(k)
            shape.append(tuple(ids))
    attrs = [attrs_L[lid] for lid in order]
    port_sig = ()
    if ports is not None:  # which of the group's links a member's compute slows
        port_sig = tuple(sorted((m, local[lid]) for m, r in enumerate(members) for lid in ports[r] if lid in local))
    return (len(members), tuple(shape), tuple(attrs), port_sig), np.array(order, dtype=np.intp)


def plan_fold(spec: EngineSpec, *, sample_groups: int | None = 0, seed: int = 0) -> Fold:
    """Decide which expert-parallel groups of ``spec`` fold onto which (see the module docstring).
    Where nothing folds, alike groups with drawn routing may be sampled instead (``sample_groups``,
    :mod:`dicesim.sim.sample`; 0: never)."""
    G = spec.graph
    groups = spec.layout.groups()
    n = len(groups)
    link_id = {e: i for i, e in enumerate(G.edges)}
    n_links = len(link_id)
    cache = spec.topologies
    if n < 2:  # the engine routes on a graph with the same latencies: the cached routes are its routes
        return Fold(groups=groups, rep=tuple(range(n)), link_of_L=np.arange(n_links), reason="one expert-parallel group",
                    routes=tuple(cache.routes(G, groups)) if cache is not None else None)
    attrs_L = [(float(d["bw_Bps"]), float(d["latency_s"]), str(d.get("link", ""))) for _, _, d in G.edges(data=True)]
    tables = cache.routes(G, groups) if cache is not None else group_routes(G, groups)
    ports = None
    if spec.profile.comm_interference > 0:  # the links each rank's compute slows (sim/network/linkscale.py)
        paths, _ = comm_paths(G, [t.routes for t in tables])
        ports = [sorted(link_id[e] for e in p) for p in paths]
    sigs, links = [], []
    for members, table in zip(groups, tables):
        sig, order = _signature(table.routes, members, link_id, attrs_L, ports)
        sigs.append(sig)
        links.append(order)
    cls = _classes(spec, groups, sigs)
    if len(set(cls)) == n and sample_groups != 0:  # nothing folds: alike groups may be sampled
        sample = plan_sample(spec, sigs, _isolated(groups, links, ports), sample_groups, seed)
        if sample is not None:
            link_of_L = np.arange(n_links)
            for g, h in enumerate(sample.rep):
                link_of_L[links[g]] = links[h]
            return Fold(groups=groups, rep=sample.rep, link_of_L=link_of_L, reason="alike groups sampled",
                        routes=tuple(tables[g] for g in sample.chosen), sample=sample)
    quotient = _quotient(groups, cls, links, attrs_L, ports, n_links)
    if quotient is None:  # sharing that is not in lock step: fold only the isolated groups
        fold = _isolated_fold(groups, cls, links, ports, n_links)
        return dataclasses.replace(fold, routes=tuple(tables[g] for g in fold.simulated))
    rep, link_of_L, shares = quotient
    reason = None
    if all(r == g for g, r in enumerate(rep)):
        reason = ("groups share links" if shares
                  else "no two groups carry the same load over the same link structure")
    return Fold(groups=groups, rep=rep, link_of_L=link_of_L, reason=reason,
                shares=shares if any(r != g for g, r in enumerate(rep)) else {},
                routes=tuple(tables[g] for g, r in enumerate(rep) if r == g))


def _classes(spec: EngineSpec, groups, sigs) -> list[int]:
    """Per group, the first group of its class: same link structure and the same routed rows."""
    send = [spec.routing.send_rows_LTWS(skip) for skip in (False, True)]
    if all(s.strides[1] == 0 and s.strides[2] == 0 for s in send):  # expected counts: every rank sends alike
        send = []
    elif spec.routing.drawn:  # independent draws per rank: groups with equal rows are vanishingly rare
        return list(range(len(groups)))
    first: dict[tuple, list[int]] = {}
    cls = []
    for g, members in enumerate(groups):
        cands = first.setdefault(sigs[g], [])
        mine = list(members)
        for h in cands:
            if all(np.array_equal(s[:, :, mine, :], s[:, :, list(groups[h]), :]) for s in send):
                cls.append(h)
                break
        else:
            cands.append(g)
            cls.append(g)
    return cls


def _quotient(groups, cls, links, attrs_L, ports, n_links):
    """Fold every class onto its first group, on a network where the first group's flows stand for
    the whole class: ``(rep, link_of_L, shares)``, or None where that is not exact.

    Each link's *users* are (class, role) pairs: group ``g`` of class ``c`` uses link ``l`` as its
    ``k``-th link (canonical numbering). A class evolves in lock step (every group like its first)
    when every link that any group uses in a role is used by the same classes, in the same roles, as
    often: then each link sees the same load as every other link of its kind, and the simulated
    groups reproduce it by loading their own link of that kind once per copy. Roles that always share
    one link are one link of the quotient network.
    """
    users: dict[int, dict[tuple[int, int], int]] = {}
    for g, order in enumerate(links):
        c = cls[g]
        for k, lid in enumerate(order.tolist()):
            u = users.setdefault(lid, {})
            u[(c, k)] = u.get((c, k), 0) + 1
    kind_of: dict[tuple[int, int], tuple] = {}
    for u in users.values():
        kind = tuple(sorted(u.items()))
        for role in u:
            if kind_of.setdefault(role, kind) != kind:
                return None  # a role meets different company on different links: not in lock step
    remap = np.arange(n_links)
    weight: dict[int, np.ndarray] = {}
    quot: dict[tuple, int] = {}
    for kind in set(kind_of.values()):
        own = [int(links[c][k]) for (c, k), _ in kind]  # the simulated groups' links of this kind
        if len({attrs_L[lid] for lid in own}) != 1:
            return None
        q = quot[kind] = min(own)
        for (c, k), m in kind:
            remap[links[c][k]] = q
            weight.setdefault(c, np.ones(n_links))[links[c][k]] = m
    if ports is not None:  # compute slows a member's endpoint links: only where they are its own
        for c in set(cls):
            w = weight.get(c, np.ones(n_links))
            for r in groups[c]:
                if any(remap[lid] != lid or w[lid] != 1 for lid in ports[r]):
                    return None
    link_of_L = np.full(n_links, -1, dtype=np.intp)
    for lid, u in users.items():
        link_of_L[lid] = quot[kind_of[next(iter(u))]]
    shared = not np.array_equal(remap, np.arange(n_links)) or any((w != 1).any() for w in weight.values())
    shares = {c: LinkShare(remap, weight[c]) for c in set(cls) if c in weight} if shared else {}
    return tuple(cls), link_of_L, shares


def _isolated(groups, links, ports) -> list[bool]:
    """Per group: whether it shares no link (nor, with ``ports``, an endpoint link) with another."""
    owner: dict[int, int] = {}
    coupled: set[int] = set()
    for g, members in enumerate(groups):
        used = set(links[g].tolist())
        if ports is not None:
            used.update(lid for r in members for lid in ports[r])
        for lid in used:
            h = owner.setdefault(lid, g)
            if h != g:
                coupled.update((g, h))
    return [g not in coupled for g in range(len(groups))]


def _isolated_fold(groups, cls, links, ports, n_links) -> Fold:
    """Fold isolated groups onto the first isolated group of their class; simulate every group that
    shares a link."""
    alone = _isolated(groups, links, ports)
    coupled = {g for g, ok in enumerate(alone) if not ok}
    rep = list(range(len(groups)))
    first: dict[int, int] = {}
    link_of_L = np.arange(n_links)
    for g in range(len(groups)):
        if g in coupled:
            continue
        h = first.setdefault(cls[g], g)
        rep[g] = h
        link_of_L[links[g]] = links[h]
    reason = None
    if all(r == g for g, r in enumerate(rep)):
        reason = ("groups share links" if len(coupled) == len(groups)
                  else "no two groups carry the same load over the same link structure")
    return Fold(groups=groups, rep=tuple(rep), link_of_L=link_of_L, reason=reason)


def expand(raw: RawRun, fold: Fold, edges: list) -> RawRun:
    """The :class:`RawRun` of the whole system from one that simulated ``fold.simulated`` only."""
    if not fold.applied:
        return raw
    step_end, counters = raw.step_end_WT.copy(), raw.counters_WTK.copy()
    nbytes = np.array([s["nbytes"] for s in raw.link_stats])
    busy = np.array([s["busy_s"] for s in raw.link_stats])
    rank_of: dict[int, int] = {}  # folded rank -> the rank whose results it takes
    for g, h in enumerate(fold.rep):
        if g == h:
            continue
        mine, theirs = list(fold.groups[g]), list(fold.groups[h])
        step_end[mine], counters[mine] = step_end[theirs], counters[theirs]
        rank_of.update(zip(mine, theirs))
    taken = np.flatnonzero((fold.link_of_L >= 0) & (fold.link_of_L != np.arange(fold.link_of_L.shape[0])))
    src = fold.link_of_L[taken]
    nbytes[taken], busy[taken] = nbytes[src], busy[src]
    link_of = dict(zip(taken.tolist(), src.tolist()))
    stats = [dict(s, nbytes=float(b), busy_s=float(t)) for s, b, t in zip(raw.link_stats, nbytes, busy)]
    n_sim = len(fold.simulated)
    if raw.collectives % n_sim:
        raise RuntimeError("simulated groups ran different numbers of collectives; folding is not exact")
    events = raw.events
    if events is not None:
        events = _expand_events(events, rank_of, link_of, edges)
    return dataclasses.replace(raw, step_end_WT=step_end, counters_WTK=counters, link_stats=stats, events=events,
                               collectives=raw.collectives // n_sim * len(fold.groups))


def _expand_events(ev: pd.DataFrame, rank_of: dict[int, int], link_of: dict[int, int], edges: list) -> pd.DataFrame:
    """Copies of the representatives' events for every folded rank and link."""
    parts = [ev]
    by_rank = ev.groupby("rank", sort=False)
    have = set(by_rank.groups)
    for r, src in rank_of.items():
        if src in have:
            part = by_rank.get_group(src).copy()
            part["rank"] = r
            parts.append(part)
    links = ev[ev["kind"] == "link"]
    if len(links) and link_of:
        by_stream = links.groupby("stream", sort=False)
        for lid, src in link_of.items():
            key = f"{edges[src][0]}->{edges[src][1]}"
            if key in by_stream.groups:
                part = by_stream.get_group(key).copy()
                part["stream"] = f"{edges[lid][0]}->{edges[lid][1]}"
                parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    for col in ev.columns:  # keep the schema's dtypes
        if out[col].dtype != ev[col].dtype:
            out[col] = out[col].astype(ev[col].dtype)
    return out


def run_folded(spec: EngineSpec, *, fold: bool = True, reuse: bool = True, sample_groups: int | None = 0,
               seed: int = 0) -> tuple[RawRun, dict[str, Any]]:
    """Run ``spec``, folding equivalent groups (``fold``) and reusing repeated windows (``reuse``);
    both exact, both reported in the returned ``{"fold": ..., "reuse": ...}``. ``sample_groups``:
    where nothing folds, simulate a sample of alike groups and predict the rest (``"sample"`` in the
    returned dict, :mod:`dicesim.sim.sample`; 0: never, None: when there are many)."""
    plan = plan_fold(spec, sample_groups=sample_groups, seed=seed) if fold else None
    applied = plan is not None and plan.applied
    sub = dataclasses.replace(spec, groups=plan.simulated if applied else None, reuse=reuse,
                              shares=plan.shares if applied and plan.shares else None,
                              routes=plan.routes if plan is not None else None)
    raw = run_engine(sub)
    info_fold = plan.info() if plan is not None else {"applied": False, "groups": len(spec.layout.groups()),
                                                     "simulated_groups": len(spec.layout.groups()),
                                                     "reason": "turned off", "shared_links": False}
    info_reuse = {"applied": raw.windows_reused > 0, "windows": raw.windows, "reused_windows": raw.windows_reused,
                  "reason": raw.reuse_blocked if reuse else "turned off"}
    out = {"fold": info_fold, "reuse": info_reuse}
    if plan is not None and plan.sample is not None:
        out["sample"] = sample_info(plan.sample, raw, seed)
    if plan is not None:
        raw = expand(raw, plan, list(spec.graph.edges))
    return raw, out
