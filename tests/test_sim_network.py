"""Flow-level network: closed forms, max-min properties, and fast path vs a slow reference."""

from __future__ import annotations

import math
from itertools import pairwise

import networkx as nx
import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicesim.errors import TopologyError
from dicesim.sim.network.maxmin import maxmin_rates
from dicesim.sim.network.network import FlowNetwork, TransferDone

REL = 1e-9


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def run_transfers(G, transfers, **net_kw):
    """transfers: [(start_s, flows, extra_latency_s)]; returns (end times, network)."""
    env = simpy.Environment()
    net = FlowNetwork(env, G, **net_kw)
    ends = [None] * len(transfers)

    def proc(i, start, flows, extra):
        yield env.timeout(start)
        done = yield net.transfer(flows, extra_latency_s=extra, tag=i)
        assert isinstance(done, TransferDone) and done.tag == i
        assert done.start_s == start and done.end_s == env.now
        ends[i] = env.now

    for i, (start, flows, extra) in enumerate(transfers):
        env.process(proc(i, start, flows, extra))
    env.run()
    return ends, net


def link(G, u, v, bw, lat=0.0, cls="x"):
    G.add_edge(u, v, bw_Bps=float(bw), latency_s=float(lat), link=cls)


def switch_graph(n, bw_port, lat=1e-6):
    G = nx.DiGraph()
    for i in range(n):
        link(G, f"g{i}", "sw", bw_port, lat, "port")
        link(G, "sw", f"g{i}", bw_port, lat, "port")
    return G


def a2a_flows(n, m, route):
    return [(route(i, j), m) for i in range(n) for j in range(n) if i != j]


# ---------------------------------------------------------------- closed forms
def test_single_flow_latency_plus_bytes_over_bw():
    G = nx.DiGraph()
    link(G, "a", "b", 5e9, 2e-6)
    link(G, "b", "c", 8e9, 3e-6)
    route = (("a", "b"), ("b", "c"))
    ends, _ = run_transfers(G, [(0.25, [(route, 1e6)], 4e-6)])
    assert close(ends[0], 0.25 + 9e-6 + 1e6 / 5e9)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_k_equal_flows_share_one_link(k):
    G = nx.DiGraph()
    link(G, "a", "b", 1e9, 1e-6)
    r = (("a", "b"),)
    ends, net = run_transfers(G, [(0.0, [(r, 3e6)] * k, 0.0)])
    assert close(ends[0], 1e-6 + k * 3e6 / 1e9)
    (s,) = net.link_stats()
    assert close(s["nbytes"], k * 3e6) and close(s["busy_s"], k * 3e6 / 1e9)


def test_disjoint_links_do_not_interfere():
    G = nx.DiGraph()
    link(G, "a", "b", 1e9)
    link(G, "c", "d", 2e9)
    ends, _ = run_transfers(G, [(0.0, [((("a", "b"),), 1e6)], 0.0), (0.0, [((("c", "d"),), 1e6)], 0.0)])
    assert close(ends[0], 1e-3) and close(ends[1], 0.5e-3)


def test_early_finisher_speeds_up_the_other():
    G = nx.DiGraph()
    bw, lat, a, b = 4e9, 5e-6, 1e6, 3e6
    link(G, "x", "y", bw, lat)
    r = (("x", "y"),)
    ends, _ = run_transfers(G, [(0.0, [(r, a)], 0.0), (0.0, [(r, b)], 0.0)])
    assert close(ends[0], lat + 2 * a / bw)
    assert close(ends[1], lat + 2 * a / bw + (b - a) / bw)


def test_transfer_started_mid_way_shares_correctly():
    G = nx.DiGraph()
    bw, lat = 1e9, 1e-6
    link(G, "x", "y", bw, lat)
    r = (("x", "y"),)
    b1, b2, t2 = 4e6, 1e6, 2e-3
    ends, _ = run_transfers(G, [(0.0, [(r, b1)], 0.0), (t2, [(r, b2)], 0.0)])
    drained_alone = (t2 + lat - lat) * bw  # flow 1 alone from lat until flow 2 starts draining
    left1 = b1 - drained_alone
    t_share = t2 + lat
    end2 = t_share + 2 * b2 / bw  # flow 2 is smaller: it ends first at half rate
    assert left1 > b2
    assert close(ends[1], end2)
    assert close(ends[0], end2 + (left1 - b2) / bw)


def test_fully_connected_all_to_all():
    n, B, m, lat = 5, 2e9, 3e6, 1.5e-6
    G = nx.DiGraph()
    for i in range(n):
        for j in range(n):
            if i != j:
                link(G, i, j, B, lat)
    ends, _ = run_transfers(G, [(0.0, a2a_flows(n, m, lambda i, j: ((i, j),)), 7e-6)])
    assert close(ends[0], lat + 7e-6 + m / B)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_single_switch_all_to_all_port_bound(n):
    B, m, lat = 25e9, 1e6, 1e-6
    G = switch_graph(n, B, lat)
    flows = a2a_flows(n, m, lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}")))
    ends, net = run_transfers(G, [(0.0, flows, 10e-6)])
    assert close(ends[0], 2 * lat + 10e-6 + (n - 1) * m / B)
    for s in net.link_stats():
        assert close(s["nbytes"], (n - 1) * m) and close(s["busy_s"], (n - 1) * m / B)


def test_local_and_zero_byte_flows():
    G = switch_graph(2, 1e9, 1e-6)
    r = (("g0", "sw"), ("sw", "g1"))
    ends, _ = run_transfers(G, [(1.0, [((), 5e6)], 3e-6), (1.0, [(r, 0.0), ((), 1e9)], 3e-6)])
    assert ends[0] == 1.0
    assert close(ends[1], 1.0 + 2e-6 + 3e-6)


def test_parking_lot_textbook_rates():
    # long flow over both links, one short flow on each: everybody gets half
    assert np.allclose(maxmin_rates([[0, 1], [0], [1]], [1.0, 1.0]), [0.5, 0.5, 0.5], rtol=REL)
    # unequal capacities: link 0 (cap 1) freezes f0, f1 at 1/2; f2, f3 split the rest of link 1
    r = maxmin_rates([[0, 1], [0], [1], [1]], [1.0, 2.0])
    assert np.allclose(r, [0.5, 0.5, 0.75, 0.75], rtol=REL)
    # classic 3-link parking lot, long flow plus one local flow per link
    r = maxmin_rates([[0, 1, 2], [0], [1], [2]], [1.0, 1.0, 1.0])
    assert np.allclose(r, [0.5, 0.5, 0.5, 0.5], rtol=REL)
    # dense incidence and multiplicity: f0 loads link 0 twice
    r = maxmin_rates(np.array([[2, 0], [1, 1]]), [3.0, 10.0])
    assert np.allclose(r, [1.0, 1.0], rtol=REL)


def test_bad_graph_and_route_raise():
    G = nx.DiGraph()
    G.add_edge("a", "b", bw_Bps=0.0, latency_s=0.0)
    with pytest.raises(TopologyError):
        FlowNetwork(simpy.Environment(), G)
    G = switch_graph(2, 1e9)
    net = FlowNetwork(simpy.Environment(), G)
    with pytest.raises(TopologyError):
        net.transfer([((("g0", "g1"),), 1.0)])
    with pytest.raises(TopologyError):
        net.transfer([((("g0", "sw"), ("g1", "sw")), 1.0)])


def test_link_busy_hook_matches_stats():
    periods = []
    G = switch_graph(3, 1e9, 1e-6)
    flows = a2a_flows(3, 1e6, lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}")))
    one = [((("g0", "sw"), ("sw", "g1")), 5e6)]
    _, net = run_transfers(G, [(0.0, flows, 0.0), (1e-3, one, 0.0), (0.5, flows, 0.0)],
                              on_link_busy=lambda *a: periods.append(a))
    stats = net.link_stats()
    for i, s in enumerate(stats):
        mine = sorted(p for p in periods if p[0] == i)
        assert close(sum(p[2] - p[1] for p in mine), s["busy_s"])
        assert close(sum(p[3] for p in mine), s["nbytes"])
        assert all(a[2] <= b[1] + 1e-15 for a, b in pairwise(mine))


# ---------------------------------------------------------------- slow reference
def reference(G, transfers):
    """Per-flow event loop: recompute every rate at every flow start or finish.

    Returns (transfer end times, busy seconds per link, bytes per link) in edge order."""
    lid = {e: i for i, e in enumerate(G.edges)}
    cap = [G.edges[e]["bw_Bps"] for e in G.edges]
    busy, nbytes = [0.0] * len(cap), [0.0] * len(cap)
    flows = []  # [transfer, activation, bytes left, link ids]
    ends = [start for start, _, _ in transfers]
    for k, (start, fl, extra) in enumerate(transfers):
        for route, b in fl:
            if route:
                lat = sum(G.edges[e]["latency_s"] for e in route) + extra
                flows.append([k, start + lat, float(b), [lid[e] for e in route]])
                for e in route:
                    nbytes[lid[e]] += b
    t, done = 0.0, [False] * len(flows)
    while not all(done):
        live = [i for i, f in enumerate(flows) if not done[i] and f[1] <= t]
        for i in live:
            if flows[i][2] <= 0:
                done[i] = True
                ends[flows[i][0]] = max(ends[flows[i][0]], t)
        live = [i for i in live if not done[i]]
        rates = maxmin_rates([flows[i][3] for i in live], cap) if live else []
        t_next = min([f[1] for i, f in enumerate(flows) if not done[i] and f[1] > t], default=math.inf)
        t_next = min([t_next] + [t + flows[i][2] / r for i, r in zip(live, rates)])
        if not math.isfinite(t_next):
            break
        for j in {j for i in live for j in flows[i][3]}:
            busy[j] += t_next - t
        for i, r in zip(live, rates):
            f = flows[i]
            if t + f[2] / r <= t_next + 1e-12 * max(t_next, 1.0):
                f[2] = 0.0
            else:
                f[2] -= r * (t_next - t)
        t = t_next
    return ends, busy, nbytes


def check_against_reference(G, transfers):
    ref, ref_busy, ref_bytes = reference(G, transfers)
    periods = []
    fast, net = run_transfers(G, transfers, on_link_busy=lambda *a: periods.append(a))
    fresh, _ = run_transfers(G, transfers, memo_size=0)
    plain, _ = run_transfers(G, transfers)
    assert fast == fresh == plain  # neither memoisation nor the hook may change a single bit
    for a, b in zip(fast, ref):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (fast, ref)
    for i, s in enumerate(net.link_stats()):
        assert math.isclose(s["busy_s"], ref_busy[i], rel_tol=1e-9, abs_tol=1e-9), (i, s, ref_busy[i])
        assert math.isclose(s["nbytes"], ref_bytes[i], rel_tol=1e-9, abs_tol=1e-9)
        mine = sorted(p for p in periods if p[0] == i)
        assert math.isclose(sum(p[2] - p[1] for p in mine), s["busy_s"], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(sum(p[3] for p in mine), s["nbytes"], rel_tol=1e-9, abs_tol=1e-9)
        assert all(p[1] <= p[2] for p in mine)
        assert all(a[2] <= b[1] + 1e-12 for a, b in pairwise(mine))
    return fast, net


@st.composite
def scenarios(draw):
    n = draw(st.integers(3, 5))
    G = nx.DiGraph()
    for u in range(n):
        for v in range(n):
            if u != v and draw(st.booleans()):
                link(G, u, v, draw(st.sampled_from([1.0, 2.0, 3.0, 5.0, math.inf])),
                     draw(st.sampled_from([0.0, 0.25, 1.0])))
    edges = list(G.edges)
    if not edges:
        link(G, 0, 1, 1.0)
        edges = list(G.edges)
    transfers = []
    for _ in range(draw(st.integers(1, 4))):
        fl = []
        for _ in range(draw(st.integers(1, 4))):
            route, e = [], draw(st.sampled_from(edges))
            for _ in range(draw(st.integers(0, 3))):  # random walk: may repeat a link
                route.append(e)
                nxt = [x for x in edges if x[0] == e[1]]
                if not nxt:
                    break
                e = draw(st.sampled_from(nxt))
            fl.append((tuple(route), draw(st.sampled_from([0.0, 1.0, 2.5, 4.0, 10.0]))))
        start = draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.75, 3.0, 6.0]))
        transfers.append((start, fl, draw(st.sampled_from([0.0, 0.5]))))
    return G, transfers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fast_path_matches_reference_and_memo_is_exact(sc):
    G, transfers = sc
    check_against_reference(G, transfers)


def test_repeated_and_lockstep_transfers_hit_memo_exactly():
    G = switch_graph(4, 10.0, 0.1)
    route = lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}"))
    a2a = a2a_flows(4, 3.0, route)
    small = [(route(0, 1), 1.0), (route(2, 3), 2.0)]
    transfers = []
    for step in range(6):  # sequential all-to-alls, two groups in lock-step, staggered pairs
        transfers += [(10.0 * step, a2a, 0.2), (10.0 * step, small, 0.0), (10.0 * step + 0.3, small, 0.1)]
    _, net = check_against_reference(G, transfers)
    assert net.memo_hits == 15  # 3 per step after the first


def test_memo_eviction_and_budget_do_not_change_results():
    G = switch_graph(4, 3.0, 0.1)
    route = lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}"))
    groups = [[(route(i, j), float(1 + (i + j + k) % 3)) for i in range(4) for j in range(4) if i != j]
              for k in range(3)]
    transfers = [(5.0 * k, groups[k % 3], 0.0) for k in range(12)] + [(5.0 * k + 0.2, groups[0], 0.0)
                                                                     for k in range(12)]
    base, _ = run_transfers(G, transfers, memo_size=0)
    for kw in ({}, {"memo_size": 2}, {"memo_bytes": 1}, {"memo_bytes": 20_000}):
        ends, net = run_transfers(G, transfers, **kw)
        assert ends == base, kw
        assert net._memo_used <= kw.get("memo_bytes", 1 << 40) and len(net._memo) <= kw.get("memo_size", 4096)


def test_memo_tells_apart_the_same_overlap_at_other_offsets():
    G = switch_graph(3, 2.0, 0.05)
    route = lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}"))
    big, small = a2a_flows(3, 4.0, route), [(route(0, 1), 1.5)]
    transfers = [(0.0, big, 0.0), (0.3, small, 0.0), (20.0, big, 0.0), (20.9, small, 0.0),
                 (40.0, big, 0.0), (40.3, small, 0.0)]
    ends, net = check_against_reference(G, transfers)
    assert net.memo_hits == 3  # big twice, and small at offset 0.3 once; 0.9 is a different state
    assert ends[1] - 0.3 != ends[3] - 20.9 and math.isclose(ends[1] - 0.3, ends[5] - 40.3, rel_tol=1e-12)


def test_independent_components_and_a_bridging_transfer():
    G = switch_graph(6, 4.0, 0.05)
    route = lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}"))
    left = a2a_flows(3, 2.0, route)
    right = [(route(i, j), 3.0) for i in range(3, 6) for j in range(3, 6) if i != j]
    bridge = [(route(1, 4), 5.0), (route(5, 2), 1.0)]
    transfers = []
    for step in range(4):
        t = 20.0 * step
        transfers += [(t, left, 0.0), (t + 0.37, right, 0.1), (t + 1.1, bridge, 0.0)]
    _, net = check_against_reference(G, transfers)
    # left and right never share a link, so right is an isolated plan even while left runs;
    # the bridge merges both components: its re-based key repeats every step too
    assert net.memo_misses == 3 and net.memo_hits == 9
@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=4), min_size=1, max_size=12),
       st.lists(st.sampled_from([1.0, 2.0, 3.5, 10.0]), min_size=6, max_size=6))
def test_maxmin_is_feasible_and_every_flow_has_a_bottleneck(flow_links, cap):
    r = maxmin_rates(flow_links, cap)
    load = np.zeros(6)
    for f, links in enumerate(flow_links):
        for i in links:
            load[i] += r[f]
    assert np.all(load <= np.array(cap) * (1 + 1e-9))
    for f, links in enumerate(flow_links):
        assert any(
            load[i] >= cap[i] * (1 - 1e-9)
            and all(r[f] >= r[g] * (1 - 1e-9) for g, lg in enumerate(flow_links) if i in lg)
            for i in links
        ), (f, r)


def test_deterministic_across_runs():
    G = switch_graph(4, 7.0, 0.05)
    route = lambda i, j: ((f"g{i}", "sw"), ("sw", f"g{j}"))
    rng = np.random.default_rng(3)
    transfers = [(float(rng.uniform(0, 5)), [(route(i, j), float(rng.uniform(0, 4)))
                                             for i in range(4) for j in range(4) if i != j], 0.0)
                 for _ in range(8)]
    a, na = run_transfers(G, transfers)
    b, nb = run_transfers(G, transfers)
    assert a == b and na.link_stats() == nb.link_stats()
