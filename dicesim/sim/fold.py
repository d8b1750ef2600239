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
from dicesim.topology import group_routes


@dataclass(frozen=True)
class Fold:
    """Which groups the engine simulates and where every other group takes its results from.

    ``rep[g]`` is the simulated group whose results group ``g`` takes (``g`` itself when
    simulated); ``links[g]``: group ``g``'s links (global ids) in the order of its class's
    canonical numbering, so ``links[g][k]`` corresponds to ``links[rep[g]][k]``.
    """

    groups: tuple[tuple[int, ...], ...]
    rep: tuple[int, ...]
    links: tuple[np.ndarray, ...]
    reason: str | None

    @property
    def simulated(self) -> tuple[int, ...]:
        return tuple(g for g, r in enumerate(self.rep) if r == g)

    @property
    def applied(self) -> bool:
        return len(self.simulated) < len(self.groups)

    def info(self) -> dict[str, Any]:
        """What :func:`dicesim.sim.api.simulate` reports in ``meta["fold"]``."""
        return {"applied": self.applied, "groups": len(self.groups), "simulated_groups": len(self.simulated),
                "reason": self.reason}


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


def plan_fold(spec: EngineSpec) -> Fold:
    """Decide which expert-parallel groups of ``spec`` fold onto which (see the module docstring)."""
    G = spec.graph
    groups = spec.layout.groups()
    n = len(groups)
    if n < 2:
        return Fold(groups=groups, rep=tuple(range(n)), links=tuple(np.zeros(0, dtype=np.intp) for _ in groups),
                    reason="one expert-parallel group")
    link_id = {e: i for i, e in enumerate(G.edges)}
    attrs_L = [(float(d["bw_Bps"]), float(d["latency_s"]), str(d.get("link", ""))) for _, _, d in G.edges(data=True)]
    tables = group_routes(G, groups)
    ports = None
    if spec.profile.comm_interference > 0:  # the links each rank's compute slows (sim/network/linkscale.py)
        paths, _ = comm_paths(G, [t.routes for t in tables])
        ports = [sorted(link_id[e] for e in p) for p in paths]
    sigs, links = [], []
    for members, table in zip(groups, tables):
        sig, order = _signature(table.routes, members, link_id, attrs_L, ports)
        sigs.append(sig)
        links.append(order)
    # isolated: no link (and no endpoint link whose slow-down matters) in common with another group
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
    send = [spec.routing.send_rows_LTWS(skip) for skip in (False, True)]
    rep = list(range(n))
    classes: dict[tuple, list[int]] = {}
    for g in range(n):
        if g in coupled:
            continue
        cands = classes.setdefault(sigs[g], [])
        mine = list(groups[g])
        for h in cands:
            theirs = list(groups[h])
            if all(np.array_equal(s[:, :, mine, :], s[:, :, theirs, :]) for s in send):
                rep[g] = h
                break
        else:
            cands.append(g)
    reason = None
    if all(r == g for g, r in enumerate(rep)):
        reason = ("groups share links" if len(coupled) == n
                  else "no two groups carry the same load over the same link structure")
    return Fold(groups=groups, rep=tuple(rep), links=tuple(links), reason=reason)


def expand(raw: RawRun, fold: Fold, edges: list) -> RawRun:
    """The :class:`RawRun` of the whole system from one that simulated ``fold.simulated`` only."""
    if not fold.applied:
        return raw
    step_end, counters = raw.step_end_WT.copy(), raw.counters_WTK.copy()
    nbytes = np.array([s["nbytes"] for s in raw.link_stats])
    busy = np.array([s["busy_s"] for s in raw.link_stats])
    rank_of: dict[int, int] = {}  # folded rank -> the rank whose results it takes
    link_of: dict[int, int] = {}
    for g, h in enumerate(fold.rep):
        if g == h:
            continue
        mine, theirs = list(fold.groups[g]), list(fold.groups[h])
        step_end[mine], counters[mine] = step_end[theirs], counters[theirs]
        nbytes[fold.links[g]], busy[fold.links[g]] = nbytes[fold.links[h]], busy[fold.links[h]]
        rank_of.update(zip(mine, theirs))
        link_of.update(zip(fold.links[g].tolist(), fold.links[h].tolist()))
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


def run_folded(spec: EngineSpec, *, fold: bool = True, reuse: bool = True) -> tuple[RawRun, dict[str, Any]]:
    """Run ``spec``, folding equivalent isolated groups (``fold``) and reusing repeated windows
    (``reuse``); both exact, both reported in the returned ``{"fold": ..., "reuse": ...}``."""
    plan = plan_fold(spec) if fold else None
    sub = dataclasses.replace(spec, groups=plan.simulated if plan is not None and plan.applied else None, reuse=reuse)
    raw = run_engine(sub)
    info_fold = plan.info() if plan is not None else {"applied": False, "groups": len(spec.layout.groups()),
                                                     "simulated_groups": len(spec.layout.groups()),
                                                     "reason": "turned off"}
    info_reuse = {"applied": raw.windows_reused > 0, "windows": raw.windows, "reused_windows": raw.windows_reused,
                  "reason": raw.reuse_blocked if reuse else "turned off"}
    if plan is not None:
        raw = expand(raw, plan, list(spec.graph.edges))
    return raw, {"fold": info_fold, "reuse": info_reuse}
