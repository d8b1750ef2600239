"""Communication slowed by compute on the path that carries it: host-staged transfers are slowed on
the shared PCIe / host-memory / socket links they cross, not only at the GPU endpoints
(:func:`dicesim.sim.network.linkscale.comm_paths`, docs/model.md)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import simpy

from dicesim.sim.api import simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.engine.streams import ComputeStreams, RankState
from dicesim.sim.network.linkscale import comm_paths, rank_port_links
from dicesim.sim.network.network import FlowNetwork
from dicesim.topology import get_topology, gpu_nodes, group_routes


def _paths(topology: str, world: int = 8):
    G = get_topology(topology)
    routes = [t.routes for t in group_routes(G, [tuple(range(world))])]
    return G, routes, *comm_paths(G, routes)


def test_host_staged_routes_add_their_shared_links_to_both_ends():
    """8x-rtx4090-pcie has no peer-to-peer: every route crosses host memory. Each rank's compute then
    slows its own endpoint and the shared links of every staged route it sends or receives on;
    a shared link counts as many users as there are ranks whose staged routes cross it."""
    G, routes, paths, users = _paths("8x-rtx4090-pcie")
    gpus = gpu_nodes(G)
    endpoint = {e for n in gpus for e in (*G.out_edges(n), *G.in_edges(n))}
    expect_users: dict[tuple, set[int]] = {}
    for (a, b), route in routes[0].items():
        if a == b:
            continue
        assert any(G.nodes[v]["kind"] == "host_mem" for _, v in route)  # staged, as the preset says
        for e in route:
            if e not in endpoint:
                assert e in paths[a] and e in paths[b]
                expect_users.setdefault(e, set()).update((a, b))
    shared = {e: n for e, n in users.items() if e not in endpoint}
    assert shared == {e: len(r) for e, r in expect_users.items()}
    assert any(G.edges[e]["link"] == "host_mem" for e in shared)
    assert all(users[e] == 1 for e in endpoint)
    for r, n in enumerate(gpus):  # the endpoint stays in each rank's own set
        assert set(G.out_edges(n)) | set(G.in_edges(n)) <= set(paths[r])


def test_peer_to_peer_routes_slow_only_the_endpoints():
    """On NVLink nothing is staged through the host: a rank's compute slows its endpoint alone."""
    G, _, paths, users = _paths("dgx-h100")
    for r, n in enumerate(gpu_nodes(G)):
        assert sorted(paths[r]) == sorted(set(G.out_edges(n)) | set(G.in_edges(n)))
    assert set(users.values()) == {1}


def _staged_pair():
    """Two GPUs whose only route runs through one host-memory hop (shared by both)."""
    G = nx.DiGraph(name="staged-pair", p2p=False)  # no peer-to-peer: staged in host memory
    G.add_node("g0", kind="gpu", rank=0)
    G.add_node("g1", kind="gpu", rank=1)
    G.add_node("cpu", kind="cpu")
    G.add_node("mem", kind="host_mem")
    for u, v, link in (("g0", "cpu", "pcie"), ("g1", "cpu", "pcie"), ("cpu", "mem", "host_mem")):
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, bw_Bps=1e9, latency_s=0.0, link=link)
    return G


@pytest.mark.parametrize("ci", [0.5, 2.0])
def test_shared_link_speed_is_one_plus_ci_times_the_computing_share(ci):
    """While k of the n ranks sharing a staged link compute, it runs 1 + ci * k / n times slower;
    a rank's endpoint runs 1 + ci times slower while it computes; all back to 1 afterwards."""
    G = _staged_pair()
    env = simpy.Environment()
    net = FlowNetwork(env, G)
    routes = [t.routes for t in group_routes(G, [(0, 1)])]
    ports, users_L = rank_port_links(net, G, routes)
    ranks = [RankState(0), RankState(1)]
    streams = ComputeStreams(env, net, ranks, interference=0.0, comm_interference=ci, ports=ports, users_L=users_L)
    mem = np.array([net.link_id(("cpu", "mem")), net.link_id(("mem", "cpu"))])
    own0 = np.array([net.link_id(("g0", "cpu"))])
    seen = {}

    def rank(r, t0, work):
        yield env.timeout(t0)
        yield from streams.compute(ranks[r], work)

    def probe(t, key):
        yield env.timeout(t)
        seen[key] = (net._scale_L[mem].copy(), net._scale_L[own0].copy())

    env.process(rank(0, 0.0, 2.0))
    env.process(rank(1, 1.0, 2.0))
    for t, key in ((0.5, "one"), (1.5, "both"), (2.5, "rank1"), (3.5, "none")):
        env.process(probe(t, key))
    env.run()
    assert users_L[mem].tolist() == [2.0, 2.0]
    assert np.allclose(seen["one"][0], 1 / (1 + ci / 2)) and np.allclose(seen["one"][1], 1 / (1 + ci))
    assert np.allclose(seen["both"][0], 1 / (1 + ci))
    assert np.allclose(seen["rank1"][0], 1 / (1 + ci / 2)) and np.allclose(seen["rank1"][1], 1.0)
    assert np.allclose(seen["none"][0], 1.0) and np.allclose(seen["none"][1], 1.0)


def test_comm_interference_now_acts_on_host_staged_machines():
    """The issue's symptom: on 8x-rtx4090-pcie raising comm_interference changed nothing, since the
    endpoint links it throttled are not the bottleneck of staged transfers. It now slows the
    overlapping strategy, monotonically, and still leaves sync alone (nothing overlaps there)."""
    base = get_profile("rtx4090")
    kw = dict(model="S/2", world_size=8, batch=2, image_size=256, steps=4, topology="8x-rtx4090-pcie")
    lat = [simulate(**kw, strategy="displaced", profile=base.with_updates(comm_interference=ci))
           .summary()["step_latency_s"] for ci in (0.0, 0.5, 2.0)]
    assert lat[0] < lat[1] < lat[2]
    sync = [simulate(**kw, strategy="sync", profile=base.with_updates(comm_interference=ci))
            .summary()["step_latency_s"] for ci in (0.0, 2.0)]
    assert sync[0] == pytest.approx(sync[1], rel=1e-12)


def test_the_switch_turns_both_directions_off():
    """``interference = False`` (scenario field; ``--no-interference``; ``[profile] interference``)
    runs the profile with both factors at 0, and the run says so."""
    kw = dict(model="S/2", world_size=8, batch=2, image_size=256, steps=4, topology="8x-rtx4090-pcie",
              strategy="displaced")
    prof = get_profile("rtx4090").with_updates(comm_interference=0.5)
    on = simulate(**kw, profile=prof)
    off = simulate(**kw, profile=prof, interference=False)
    zero = simulate(**kw, profile=prof.with_updates(interference=0.0, comm_interference=0.0))
    assert off.summary() == zero.summary()
    assert on.summary()["step_latency_s"] > off.summary()["step_latency_s"]
    assert off.meta["interference"] is False and on.meta["interference"] is True


def test_the_switch_in_a_scenario_file_and_on_the_command_line(tmp_path, capsys):
    import json

    from dicesim.cli import main
    from dicesim.errors import ConfigError
    from dicesim.scenario import load_scenario

    path = tmp_path / "s.toml"
    path.write_text('[model]\nname = "S/2"\n[profile]\nname = "rtx4090"\ninterference = false\n')
    sc = load_scenario(path)
    assert sc.interference is False and sc.profile == "rtx4090"
    path.write_text('[profile]\ninterferance = false\n')
    with pytest.raises(ConfigError, match="profile.interferance"):
        load_scenario(path)
    args = ["simulate", "--model", "S/2", "--batch", "1", "--steps", "2", "--strategy", "displaced"]
    assert main([*args, "--no-interference"]) in (0, None)
    assert "interference off" in capsys.readouterr().out
    assert main([*args, "--no-interference", "--json"]) in (0, None)
    assert json.loads(capsys.readouterr().out)["extra"]["interference"] is False
    assert main(args) in (0, None)
    assert "interference off" not in capsys.readouterr().out
