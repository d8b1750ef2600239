"""Builders: edge counts and hop counts in closed form, for any size."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.errors import ConfigError
from dicesim.topology import (
    LinkSpec,
    all_pairs_routes,
    fully_connected,
    gpu_nodes,
    multi_node,
    nvswitch_server,
    pcie_server,
    ring,
    single_switch,
    validate_topology,
    world_size,
)

sizes = st.integers(min_value=1, max_value=24)
NV = LinkSpec(bw_Bps=100e9, latency_s=1e-6, link="nvlink4", source="generic")


@given(n=sizes)
@settings(max_examples=25, deadline=None)
def test_ring_edges_and_hops(n):
    G = ring(n, 10e9, 2e-6)
    validate_topology(G)
    assert G.number_of_edges() == (2 * n if n >= 3 else 2 * (n - 1))
    table = all_pairs_routes(G)
    for (s, d), path in table.routes.items():
        hops = min((d - s) % n, (s - d) % n)
        assert len(path) == hops
        assert table.latency_s[(s, d)] == pytest.approx(2e-6 * hops)


@given(n=sizes)
@settings(max_examples=25, deadline=None)
def test_fully_connected_edges_and_direct_routes(n):
    G = fully_connected(n, 10e9, 1e-6)
    validate_topology(G)
    assert G.number_of_edges() == n * (n - 1)
    assert all(len(p) == (s != d) for (s, d), p in all_pairs_routes(G).routes.items())


@given(n=sizes)
@settings(max_examples=25, deadline=None)
def test_single_switch_edges_and_two_hop_routes(n):
    G = single_switch(n, 10e9, 1e-6)
    validate_topology(G)
    assert G.number_of_edges() == 2 * n and G.number_of_nodes() == n + 1
    table = all_pairs_routes(G)
    assert all(len(p) == 2 * (s != d) for (s, d), p in table.routes.items())
    assert all(table.bottleneck_Bps[k] == 10e9 for k, p in table.routes.items() if p)


@given(servers=st.integers(1, 5), per=st.integers(1, 6), nics=st.integers(1, 6))
@settings(max_examples=30, deadline=None)
def test_multi_node_counts_ranks_and_validity(servers, per, nics):
    builder = partial(nvswitch_server, NV, gpus=per, gpu="h100-sxm", name="srv")
    G = multi_node(servers, builder, 50e9, 3e-6, nics_per_server=nics)
    validate_topology(G)
    assert world_size(G) == servers * per
    # per server: 2 edges per GPU-switch link, 2 per NIC attach, 2 per NIC-switch link
    assert G.number_of_edges() == servers * (2 * per + 4 * nics)
    for n in gpu_nodes(G):
        rank, server = G.nodes[n]["rank"], G.nodes[n]["server"]
        assert server == rank // per and n == f"n{server}.gpu{rank % per}"


def test_pcie_server_layout():
    pcie = LinkSpec(bw_Bps=24e9, latency_s=0.6e-6, link="pcie4", source="generic")
    G = pcie_server(sockets=2, switches_per_socket=2, gpus_per_switch=2, gpu_link=pcie, uplink=pcie,
                    host_mem=pcie, socket_link=pcie, p2p=True, gpu="generic", name="x")
    validate_topology(G)
    assert world_size(G) == 8
    assert G.has_edge("n0.gpu5", "n0.pcie2") and G.has_edge("n0.pcie2", "n0.cpu1")
    assert G.has_edge("n0.cpu0", "n0.cpu1") and G.has_edge("n0.cpu1", "n0.mem1")
    # 8 GPU links + 4 uplinks + 2 memory links + 1 socket link, each duplex
    assert G.number_of_edges() == 2 * (8 + 4 + 2 + 1)


@pytest.mark.parametrize("call, field", [
    (lambda: ring(0, 1e9, 1e-6), "n"),
    (lambda: fully_connected(True, 1e9, 1e-6), "n"),
    (lambda: single_switch(4, 0.0, 1e-6), "bw_Bps/latency_s"),
    (lambda: ring(4, 1e9, -1.0), "bw_Bps/latency_s"),
    (lambda: multi_node(0, lambda: ring(2, 1e9, 1e-6), 1e9), "servers"),
    (lambda: multi_node(2, lambda: ring(2, 1e9, 1e-6), 1e9, attach_to=["nope"], nics_per_server=1), "attach_to"),
    (lambda: multi_node(2, lambda: ring(2, 1e9, 1e-6), 1e9, nic_source="uncited"), "sources"),
])
def test_builder_argument_errors_name_the_field(call, field):
    with pytest.raises(ConfigError) as exc:
        call()
    assert exc.value.field == field
