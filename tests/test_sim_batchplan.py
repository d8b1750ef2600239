"""Batched planning and array-built transfers give exactly what the one-at-a-time code gives."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicesim.sim.api import prepare
from dicesim.sim.engine.engine import Engine
from dicesim.sim.network.batchplan import _columns, _fill, plan_many
from dicesim.sim.network.flowplan import FlowTable, simulate as plan_one
from dicesim.sim.network.network import FlowNetwork
from dicesim.topology import all_pairs_routes, get_topology

TABLES = st.integers(1, 5).flatmap(lambda n_l: st.tuples(
    st.just(n_l),
    st.lists(st.sampled_from([1.0, 2.0, 3.5, 1e9]), min_size=n_l, max_size=n_l),
    st.lists(st.tuples(st.lists(st.tuples(st.integers(0, n_l - 1), st.sampled_from([1.0, 2.0])), min_size=1,
                                max_size=n_l, unique_by=lambda p: p[0]),
                       st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.7]), st.sampled_from([0.0, 0.25, 1.0, 0.6])),
             min_size=1, max_size=7)))


def _table(spec, r0=0.0) -> FlowTable:
    n_l, cap, flows = spec
    pf, pl, pw = [], [], []
    for f, (links, _, _) in enumerate(flows):
        for link, w in sorted(links):
            pf.append(f)
            pl.append(link)
            pw.append(w)
    rem = np.array([b for _, b, _ in flows])
    act = np.array([r0 + a for _, _, a in flows])
    return FlowTable(r0, rem, act, np.array(pf, dtype=np.intp), np.array(pl, dtype=np.intp), np.array(pw),
                     np.arange(n_l), np.array(cap, dtype=float), np.zeros(1, dtype=np.intp))


def _same_plan(a, b) -> None:
    for name in ("t_seg", "fin_F", "group_fin_G", "total_busy_L", "total_bytes_L"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TABLES, min_size=1, max_size=12), st.sampled_from([0.0, 1.5]))
def test_batched_plans_are_the_reference_plans_bit_for_bit(specs, r0):
    tables = [_table(s, r0) for s in specs]
    for table, got in zip(tables, plan_many(tables)):
        ref = plan_one(table)
        _same_plan(ref, got)
        # the segments it rebuilds on demand are the reference's too
        assert np.array_equal(ref.cum_KF, got.cum_KF) and np.array_equal(ref.seg_busy_KL, got.seg_busy_KL)
        mid = 0.5 * (ref.t_seg[0] + ref.t_seg[-1])
        assert np.array_equal(ref.remaining_at(table, mid), got.remaining_at(table, mid))


UNIT_TABLES = TABLES.map(lambda t: (t[0], t[1], [([(link, 1.0) for link, _ in links], b, a) for links, b, a in t[2]]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(UNIT_TABLES, min_size=1, max_size=12), st.sampled_from([0.0, 1.5]))
def test_batched_plans_of_unit_multiplicities_are_the_reference_plans(specs, r0):
    # every flow loads each link once (a batch the solver counts pairs for instead of summing weights)
    tables = [_table(s, r0) for s in specs]
    for table, got in zip(tables, plan_many(tables)):
        _same_plan(plan_one(table), got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TABLES, min_size=1, max_size=8), st.data())
def test_batched_fill_is_max_min_fair_in_every_table(specs, data):
    # the rates of one progressive-filling pass over several tables at once, each at its own levels:
    # no link over capacity, and every live flow has a saturated link on which no flow is faster
    tables = [_table(s) for s in specs]
    live = [np.array(data.draw(st.lists(st.booleans(), min_size=t.rem_F.shape[0], max_size=t.rem_F.shape[0])))
            for t in tables]
    nf = np.array([t.rem_F.shape[0] for t in tables])
    nl = np.array([t.cap_L.shape[0] for t in tables])
    f0, l0 = np.concatenate(([0], np.cumsum(nf)[:-1])), np.concatenate(([0], np.cumsum(nl)[:-1]))
    pf = np.concatenate([t.pair_flow_P + o for t, o in zip(tables, f0)]).astype(np.intp)
    pl = np.concatenate([t.pair_link_P + o for t, o in zip(tables, l0)]).astype(np.intp)
    pw = np.concatenate([t.pair_weight_P for t in tables])
    cap = np.concatenate([t.cap_L for t in tables])
    cols, wts, paired = _columns(pf, pl, pw, int(nf.sum()), cap.shape[0])
    rate, used = _fill(cols, wts, np.concatenate(live) & paired, cap, l0.astype(np.intp),
                       np.repeat(np.arange(len(tables)), nl), np.repeat(np.arange(len(tables)), nf))
    on = np.concatenate(live)[pf]
    load = np.bincount(pl[on], weights=(pw * rate[pf])[on], minlength=cap.shape[0])
    assert np.all(load <= cap * (1 + 1e-9))
    assert np.array_equal(used, np.bincount(pl[on], minlength=cap.shape[0]) > 0)
    for f in np.flatnonzero(np.concatenate(live)):
        mine = pl[pf == f]
        assert any(load[l] >= cap[l] * (1 - 1e-9) and all(rate[f] >= rate[g] * (1 - 1e-9) for g in pf[on & (pl == l)])
                   for l in mine), f
    assert np.all(rate[~np.concatenate(live)] == 0.0)


def test_sampled_all_to_alls_on_a_switch_plan_exactly():
    G = get_topology("dgx-h100")
    net = FlowNetwork(simpy.Environment(), G)
    routes = all_pairs_routes(G).routes
    rng = np.random.default_rng(3)
    tables = []
    for _ in range(40):
        M = rng.multinomial(64, np.full(8, 1 / 8), size=8)
        g = net.compile([(routes[(i, j)], float(M[i, j] * 1024)) for i in range(8) for j in range(8)
                         if i != j and M[i, j] > 0], 5e-6)
        tables.append(FlowTable(0.0, g.nbytes, g.lat_F, g.pair_flow_P, g.pair_local_P, g.pair_weight_P, g.links_L,
                                g.cap_L, np.zeros(1, dtype=np.intp)))
    for table, got in zip(tables, plan_many(tables)):
        _same_plan(plan_one(table), got)


def test_pair_flows_compile_what_the_flow_list_compiles():
    G = get_topology("8x-rtx4090-pcie")
    net = FlowNetwork(simpy.Environment(), G)
    routes = all_pairs_routes(G).routes
    pairs = [(a, b) for a in range(8) for b in range(8)]
    pf = net.pair_flows([routes[p] for p in pairs])
    nb = np.random.default_rng(0).integers(0, 4, size=64) * 4096
    got = pf.compile(nb, 3e-6)
    ref = net.compile([(routes[p], float(b)) for p, b in zip(pairs, nb) if b > 0 and p[0] != p[1]], 3e-6)
    for name in ("nbytes", "lat_F", "pair_flow_P", "pair_link_P", "pair_weight_P", "links_L", "cap_L"):
        assert np.array_equal(getattr(got, name), getattr(ref, name)), name
    assert got.n_local == sum(1 for p, b in zip(pairs, nb) if b > 0 and p[0] == p[1]) and got.gid != ref.gid


@pytest.mark.parametrize("topology", ["8x-rtx4090-pcie", "dgx-h100"])
def test_compiling_many_byte_vectors_at_once_is_compiling_each(topology):
    # host-staged routes load one link twice (multiplicity 2); zero vectors and self pairs included
    G = get_topology(topology)
    net = FlowNetwork(simpy.Environment(), G)
    routes = all_pairs_routes(G).routes
    pf = net.pair_flows([routes[(a, b)] for a in range(8) for b in range(8)])
    nb_KR = np.random.default_rng(1).integers(0, 3, size=(9, 64)) * 4096
    nb_KR[4] = 0
    many = pf.compile_many(nb_KR, 2e-6)
    for got, nb in zip(many, nb_KR):
        ref = pf.compile(nb, 2e-6)
        for name in ("nbytes", "lat_F", "pair_flow_P", "pair_link_P", "pair_weight_P", "links_L", "pair_local_P",
                     "cap_L"):
            assert np.array_equal(getattr(got, name), getattr(ref, name)), name
            assert getattr(got, name).dtype == getattr(ref, name).dtype, name
        assert (got.n_flows, got.n_local) == (ref.n_flows, ref.n_local)
    assert len({g.gid for g in many}) == len(many)


@pytest.mark.parametrize("topology, world_size, placement", [
    ("8x-rtx4090-pcie", 8, None),  # PCIe without peer access: routes staged through host memory
    ("dgx-h100", 8, None),  # NVSwitch
    ("2x-dgx-h100-rail", 16, "strided"),  # rail-optimised servers, every group spread over both
])
@pytest.mark.parametrize("strategy, routing", [("dice", "uniform"), ("sync", "zipf")])
def test_sampled_routing_result_is_unchanged_by_batched_planning(topology, world_size, placement, strategy, routing):
    """An engine run with its transfers preplanned in one batch equals one planning each on arrival."""
    kw = dict(model="tiny", world_size=world_size, num_experts=8, batch=1, image_size=64, topology=topology,
              strategy=strategy, steps=4, sampling="multinomial", profile="h100-sxm",
              routing={"kind": routing, "sampling": "multinomial"})
    if placement:
        kw["placement"] = placement
    spec = prepare(**kw).spec
    pre = Engine(spec)
    assert len(pre.net._pre) > 10
    plain = Engine(spec)
    plain.net._pre.clear()
    a, b = pre.run(), plain.run()
    assert np.array_equal(a.step_end_WT, b.step_end_WT) and np.array_equal(a.counters_WTK, b.counters_WTK)
    assert a.link_stats == b.link_stats


def test_a_combine_over_mirrored_routes_takes_its_dispatch_plan_mirrored():
    """On a switch (and across IB servers) every combine is its dispatch backwards: its plan, derived
    from the dispatch's, equals planning it directly; host-staged routes are not mirrors."""
    from dicesim.sim.network.batchplan import mirrored
    from dicesim.plan import CollectiveKind
    from dicesim.sim.engine.program import ISSUE

    for topology, W, mirror in (("dgx-h100", 8, True), ("2x-dgx-h100-ib", 16, True), ("8x-rtx4090-pcie", 8, False)):
        kw = dict(model="tiny", num_experts=W if W <= 8 else 8, world_size=W if W <= 8 else 8, batch=1, image_size=64,
                  topology=topology, strategy="dice", steps=3, sampling="multinomial", profile="h100-sxm")
        if W == 16:
            kw.update(world_size=16, placement="strided")
        eng = Engine(prepare(**kw).spec)
        gc = eng.gc[0]
        assert (gc.rev_L is not None) is mirror, topology
        if not mirror:
            continue
        uses = {(c.skip, c.layer, c.tok_step) for c in (ins[2] for ins in eng.flat if ins[0] == ISSUE)
                if c.kind == CollectiveKind.DISPATCH}
        _, pairs = gc.distinct_groups(uses)
        assert pairs
        for c, d in pairs:
            tc, td = eng.net._fresh_table(c), eng.net._fresh_table(d)
            _same_plan(plan_one(tc), mirrored(plan_one(td), td, tc, gc.rev_L))
