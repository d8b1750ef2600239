"""The topology drawing: one line trace per link class, one marker trace per node kind."""

from dicesim.report.topology_fig import fig_topology, topology_layout
from dicesim.topology import get_topology


def test_rtx4090_drawing_has_each_class_and_kind():
    G = get_topology("8x-rtx4090-pcie")
    fig = fig_topology(G)
    lines = {t.name for t in fig.data if t.mode == "lines"}
    markers = {t.name: len(t.x) for t in fig.data if t.mode == "markers"}
    assert lines == {"host_mem", "pcie4", "upi"}
    assert markers == {"gpu": 8, "pcie_switch": 2, "cpu": 2, "host_mem": 2}
    # 16 GPU<->switch directed edges are 8 duplex links, each drawn once (3 points: u, v, gap)
    pcie = next(t for t in fig.data if t.name == "pcie4")
    assert len(pcie.x) == 3 * (8 + 2)


def test_layout_puts_gpus_below_switches():
    G = get_topology("dgx-h100")
    pos = topology_layout(G)
    gpu_y = {pos[n][1] for n, a in G.nodes(data=True) if a["kind"] == "gpu"}
    sw_y = {pos[n][1] for n, a in G.nodes(data=True) if a["kind"] == "nvswitch"}
    assert max(gpu_y) < min(sw_y)
