"""TopologyCache: one graph per name and one route search per (graph, groups), and runs that use it
equal runs that do not (the study's evaluator hands one cache to every configuration)."""

from __future__ import annotations

import pickle

import pytest

from dicesim.plan import PlanCache
from dicesim.scenario import make_scenario
from dicesim.sim.api import resolve_profile, simulate
from dicesim.topology import get_topology, group_routes
from dicesim.topology.cache import TopologyCache
from dicesim.trust import assess_run


def test_graph_built_once_and_routes_equal_a_fresh_search():
    cache = TopologyCache()
    G = cache.graph("dgx-h100")
    assert cache.graph("dgx-h100") is G
    groups = [(0, 1, 2, 3), (4, 5, 6, 7)]
    tables = cache.routes(G, groups)
    assert cache.routes(G, [list(g) for g in groups]) is tables  # same groups, any sequence type
    fresh = group_routes(get_topology("dgx-h100"), groups)
    assert [t.routes for t in tables] == [t.routes for t in fresh]
    assert [t.latency_s for t in tables] == [t.latency_s for t in fresh]
    other = get_topology("dgx-h100")  # another graph object: searched on its own
    assert cache.routes(other, groups) is not tables
    assert pickle.loads(pickle.dumps(cache))._graphs == {}  # sent to a worker empty


@pytest.mark.parametrize("strategy,topology,world_size", [
    ("dice", "dgx-h100", 8), ("sync", "2x-dgx-h100-ib", 16), ("displaced", "8x-rtx4090-pcie", 8),
    ("sp", "dgx-h100", 8)])
def test_runs_with_the_cache_equal_runs_without(strategy, topology, world_size):
    cache, plans = TopologyCache(), PlanCache()
    sc = make_scenario(strategy=strategy, topology=topology, world_size=world_size, steps=6)
    for _ in range(2):  # the second run reads the cached graph and routes
        G = cache.graph(topology)
        got = simulate(sc, graph=G, plans=plans, topologies=cache)
        want = simulate(sc)
        assert got.totals == want.totals
        assert got.links.equals(want.links)
        a = assess_run(sc, G, resolve_profile(None, sc, G), got.summary(), got.links, topologies=cache)
        fresh = get_topology(topology)
        b = assess_run(sc, fresh, resolve_profile(None, sc, fresh), want.summary(), want.links)
        assert a == b
