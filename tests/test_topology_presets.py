"""Presets: they validate, carry cited figures, and route the way the hardware moves bytes."""

from __future__ import annotations

import pytest

from dicesim.errors import TopologyError
from dicesim.topology import (
    NODE_KINDS,
    TOPOLOGY_NAMES,
    all_pairs_routes,
    describe,
    get_topology,
    gpu_nodes,
    links_table,
    num_servers,
    route,
    summary_line,
    validate_topology,
    world_size,
)

EXPECTED = {  # name: (world size, servers, gpu key, p2p)
    "8x-rtx4090-pcie": (8, 1, "rtx4090", False),
    "4x-l40s-pcie": (4, 1, "l40s", True),
    "8x-l40s-pcie": (8, 1, "l40s", True),
    "dgx-a100": (8, 1, "a100-sxm", True),
    "dgx-h100": (8, 1, "h100-sxm", True),
    "hgx-h200": (8, 1, "h200", True),
    "2x-dgx-h100-ib": (16, 2, "h100-sxm", True),
    "8x-dgx-h100-ib": (64, 8, "h100-sxm", True),
    "tiny-ring4": (4, 1, "generic", True),
    "tiny-2x2-ib": (4, 2, "h100-sxm", True),
    "1x-h100-host-staged": (1, 1, "h100-sxm", False),
    "1x-h200-host-staged": (1, 1, "h200", False),
}


def _nodes_on(path):
    return [path[0][0]] + [v for _, v in path]


def test_names_are_the_expected_set():
    assert set(TOPOLOGY_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", TOPOLOGY_NAMES)
def test_preset_validates_and_has_expected_shape(name):
    G = get_topology(name)
    validate_topology(G)
    W, S, gpu, p2p = EXPECTED[name]
    assert (world_size(G), num_servers(G), G.graph["gpu"], G.graph["p2p"]) == (W, S, gpu, p2p)
    assert G.graph["name"] == name and G.graph["gpus_per_node"] * S == W
    assert [G.nodes[n]["rank"] for n in gpu_nodes(G)] == list(range(W))
    assert all(k in NODE_KINDS for _, k in G.nodes(data="kind"))


@pytest.mark.parametrize("name", TOPOLOGY_NAMES)
def test_every_edge_is_duplex_and_cites_a_nonempty_source(name):
    G = get_topology(name)
    for u, v, d in G.edges(data=True):
        assert G.has_edge(v, u) and G.edges[v, u] == d
        assert G.graph["sources"][d["source"]].strip()


def test_get_topology_returns_fresh_graphs():
    a, b = get_topology("dgx-h100"), get_topology("dgx-h100")
    a.edges["n0.gpu0", "n0.nvsw0"]["bw_Bps"] = 1.0
    assert b.edges["n0.gpu0", "n0.nvsw0"]["bw_Bps"] == 450e9


def test_unknown_name_is_one_line_listing_presets():
    with pytest.raises(TopologyError) as exc:
        get_topology("dgx-b200")
    msg = exc.value.one_line()
    assert "'dgx-b200'" in msg and "dgx-h100" in msg and "\n" not in str(exc.value)


@pytest.mark.parametrize("name, link, bw_Bps", [
    ("dgx-a100", "nvlink3", 300e9), ("dgx-h100", "nvlink4", 450e9), ("hgx-h200", "nvlink4", 450e9),
    ("4x-l40s-pcie", "pcie4", 31.5e9), ("8x-rtx4090-pcie", "upi", 20e9), ("2x-dgx-h100-ib", "ib_ndr", 50e9),
    ("2x-dgx-h100-ib", "pcie5", 63e9),
])
def test_link_figures_match_hardware_brief(name, link, bw_Bps):
    df = links_table(get_topology(name))
    assert set(df.loc[df.link == link, "bw_Bps"]) == {bw_Bps}


def test_rtx4090_same_switch_is_staged_through_host_memory():
    G = get_topology("8x-rtx4090-pcie")
    path = route(G, 0, 1)
    assert _nodes_on(path) == ["n0.gpu0", "n0.pcie0", "n0.cpu0", "n0.mem0", "n0.cpu0", "n0.pcie0", "n0.gpu1"]
    # the switch uplink carries the bytes twice: up to memory and back down
    assert ("n0.pcie0", "n0.cpu0") in path and ("n0.cpu0", "n0.pcie0") in path


def test_rtx4090_cross_socket_crosses_upi_once_after_source_memory():
    G = get_topology("8x-rtx4090-pcie")
    path = route(G, 0, 4)
    assert _nodes_on(path) == ["n0.gpu0", "n0.pcie0", "n0.cpu0", "n0.mem0", "n0.cpu0", "n0.cpu1",
                               "n0.pcie1", "n0.gpu4"]
    assert [G.edges[e]["link"] for e in path].count("upi") == 1
    # staging uses the source socket's memory; reverse direction uses socket 1's
    assert ("n0.cpu1", "n0.mem1") in route(G, 4, 0)


def test_rtx4090_no_route_passes_through_a_third_gpu():
    G = get_topology("8x-rtx4090-pcie")
    table = all_pairs_routes(G)
    for (s, d), path in table.routes.items():
        gpus_on = [n for n in _nodes_on(path) if G.nodes[n]["kind"] == "gpu"] if path else []
        assert len(gpus_on) == (2 if s != d else 0)


@pytest.mark.parametrize("name", ["dgx-a100", "dgx-h100", "hgx-h200"])
def test_nvswitch_route_is_two_hops(name):
    G = get_topology(name)
    assert route(G, 0, 1) == (("n0.gpu0", "n0.nvsw0"), ("n0.nvsw0", "n0.gpu1"))
    table = all_pairs_routes(G)
    assert all(len(p) == 2 for (s, d), p in table.routes.items() if s != d)


def test_l40s_p2p_goes_through_switch_not_host():
    G = get_topology("4x-l40s-pcie")
    assert _nodes_on(route(G, 0, 3)) == ["n0.gpu0", "n0.pcie0", "n0.gpu3"]


def test_multi_node_routes_stay_local_or_use_nics():
    G = get_topology("2x-dgx-h100-ib")
    table = all_pairs_routes(G)
    for (s, d), path in table.routes.items():
        links = [G.edges[e]["link"] for e in path]
        if s // 8 == d // 8:
            assert "ib_ndr" not in links
        else:  # own NIC, switch, destination GPU's NIC
            assert links == ["pcie5", "ib_ndr", "ib_ndr", "pcie5"]
            assert path[0] == (f"n{s // 8}.gpu{s % 8}", f"n{s // 8}.nic{s % 8}")
            assert path[-1] == (f"n{d // 8}.nic{d % 8}", f"n{d // 8}.gpu{d % 8}")
    assert table.latency_s[(0, 9)] == pytest.approx(0.6e-6 * 2 + 2.5e-6 * 2)
    assert table.bottleneck_Bps[(0, 9)] == 50e9


def test_8x_dgx_h100_ib_has_one_nic_per_gpu():
    info = describe(get_topology("8x-dgx-h100-ib"))
    assert info["nodes"] == {"gpu": 64, "nvswitch": 8, "nic": 64, "net_switch": 1}
    rows = {r["link"]: r["directed_edges"] for r in info["links"]}
    assert rows == {"nvlink4": 128, "pcie5": 128, "ib_ndr": 128}


def test_summary_line_mentions_staging_for_consumer_gpus():
    assert "no p2p" in summary_line(get_topology("8x-rtx4090-pcie"))
    assert summary_line(get_topology("dgx-h100")).startswith("8 x h100-sxm on 1 server, p2p; nvlink4 450 GB/s")


@pytest.mark.parametrize("name, src, dst, latency_s", [
    ("dgx-a100", 0, 1, 2.0e-6),          # NVLink hop: 2 edges of 1.0 us
    ("4x-l40s-pcie", 0, 1, 1.2e-6),      # PCIe p2p through the switch: 2 x 0.6 us
    ("8x-rtx4090-pcie", 0, 1, 2.6e-6),   # host-staged: 4 x 0.6 us PCIe + 2 x 0.1 us memory
    ("8x-rtx4090-pcie", 0, 4, 2.65e-6),  # the same plus 0.05 us UPI
    ("2x-dgx-h100-ib", 0, 9, 6.2e-6),    # 2 x 0.6 us PCIe 5 + 2 x 2.5 us NDR
])
def test_hop_latencies_match_docs_derivation(name, src, dst, latency_s):
    table = all_pairs_routes(get_topology(name), [src, dst])
    assert table.latency_s[(src, dst)] == pytest.approx(latency_s, rel=1e-12)
