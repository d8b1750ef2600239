"""Named topology presets (small factory functions) and ``get_topology`` for names or files.

Every number comes from ``dicesim.topology.hardware`` with its citation; docs/topologies.md
lists each preset's layout and figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import MappingProxyType

import networkx as nx

from dicesim.errors import TopologyError
from dicesim.topology import hardware as hw
from dicesim.topology.builders import multi_node, nvswitch_server, pcie_server, rail_fabric, ring
from dicesim.topology.graph import world_size
from dicesim.topology.host_staged import h100_host_staged, h200_host_staged
from dicesim.topology.io import load_topology_file
from dicesim.topology.validate import validate_topology


def rtx4090_pcie_8x() -> nx.DiGraph:
    """8x RTX 4090: two PCIe 4.0 switches (4 GPUs each), one per CPU socket, sockets joined by UPI.

    No peer-to-peer on consumer GPUs, so every GPU-to-GPU byte is staged in host memory.
    """
    return pcie_server(sockets=2, switches_per_socket=1, gpus_per_switch=4, gpu_link=hw.PCIE4_GPU,
                       uplink=hw.PCIE4_UPLINK, host_mem=hw.HOST_MEM_DDR4, socket_link=hw.UPI, p2p=False,
                       gpu="rtx4090", name="8x-rtx4090-pcie")


def l40s_pcie_4x() -> nx.DiGraph:
    """4x L40S under one PCIe 4.0 switch on one socket; peer-to-peer through the switch."""
    return pcie_server(sockets=1, switches_per_socket=1, gpus_per_switch=4, gpu_link=hw.PCIE4_GPU,
                       uplink=hw.PCIE4_UPLINK, host_mem=hw.HOST_MEM_DDR4, socket_link=None, p2p=True,
                       gpu="l40s", name="4x-l40s-pcie")


def dgx_a100() -> nx.DiGraph:
    """DGX A100: 8 GPUs on NVSwitch (NVLink3), one logical switch node with per-GPU port bandwidth."""
    return nvswitch_server(hw.NVLINK3_A100, gpus=8, gpu="a100-sxm", name="dgx-a100")


def dgx_h100() -> nx.DiGraph:
    """DGX H100: 8 GPUs on NVSwitch (NVLink4)."""
    return nvswitch_server(hw.NVLINK4_H100, gpus=8, gpu="h100-sxm", name="dgx-h100")


def hgx_h200() -> nx.DiGraph:
    """HGX H200: 8 GPUs on NVSwitch (NVLink4, same fabric figures as H100)."""
    return nvswitch_server(hw.NVLINK4_H200, gpus=8, gpu="h200", name="hgx-h200")


def dgx_h100_ib(servers: int) -> nx.DiGraph:
    """``servers`` DGX H100 nodes; 8 ConnectX-7 NDR NICs per node, one per GPU over PCIe 5, one IB switch."""
    return multi_node(servers, dgx_h100, hw.IB_NDR.bw_Bps, hw.IB_NDR.latency_s, nic_link=hw.IB_NDR.link,
                      nic_source=hw.IB_NDR.source, attach=hw.PCIE5_NIC, name=f"{servers}x-dgx-h100-ib")


def dgx_h100_rail(servers: int) -> nx.DiGraph:
    """``servers`` DGX H100 as in a DGX SuperPOD: 8 NDR NICs per node (one per GPU, PCIe 5), one leaf
    switch per rail per 32 nodes, each leaf 1:1 to the spine (aggregated)."""
    return rail_fabric(servers, dgx_h100, hw.IB_NDR, attach=hw.PCIE5_NIC, uplink=hw.IB_NDR_UPLINK,
                       servers_per_leaf=hw.SERVERS_PER_LEAF, uplinks_per_leaf=hw.LEAF_UPLINKS,
                       name=f"{servers}x-dgx-h100-rail")


def l40s_pcie_8x() -> nx.DiGraph:
    """8x L40S in a 'PCIe Optimized 2-8-5' server: 2 sockets joined by UPI, per socket two PCIe 4.0
    switches of 2 GPUs each; peer-to-peer through the switches and the host."""
    return pcie_server(sockets=2, switches_per_socket=2, gpus_per_switch=2, gpu_link=hw.PCIE4_GPU,
                       uplink=hw.PCIE4_UPLINK, host_mem=hw.HOST_MEM_DDR4, socket_link=hw.UPI, p2p=True,
                       gpu="l40s", name="8x-l40s-pcie")


def l40s_roce(servers: int) -> nx.DiGraph:
    """``servers`` 2-8-5 L40S servers on rail-optimised 400 GbE RoCE: one NIC per PCIe switch (4 per
    server, rail k = switch k), one leaf per rail per 32 servers, each leaf 1:1 to the spine."""
    return rail_fabric(servers, l40s_pcie_8x, hw.ROCE_400G, attach=hw.PCIE4_NIC, uplink=hw.ROCE_UPLINK,
                       servers_per_leaf=hw.SERVERS_PER_LEAF, uplinks_per_leaf=hw.LEAF_UPLINKS,
                       nics_per_server=4, attach_to=[f"n0.pcie{j}" for j in range(4)], name=f"{servers}x-l40s-roce")


def hgx_h100_roce(servers: int) -> nx.DiGraph:
    """``servers`` HGX H100 (``dgx-h100`` inside) as in NVIDIA's 2-8-9-400 HGX reference architecture: one
    400 GbE RoCE SuperNIC per GPU over PCIe 5, rail-optimised Spectrum-X leaf-spine (one leaf per rail per
    32 servers, each leaf 1:1 to the spine)."""
    return rail_fabric(servers, dgx_h100, hw.ROCE_400G_HGX, attach=hw.PCIE5_NIC, uplink=hw.ROCE_UPLINK,
                       servers_per_leaf=hw.SERVERS_PER_LEAF, uplinks_per_leaf=hw.LEAF_UPLINKS,
                       name=f"{servers}x-hgx-h100-roce")


def tiny_ring4() -> nx.DiGraph:
    """4 GPUs in a ring of generic 100 GB/s, 1 us links: small closed-form cases for tests."""
    return ring(4, 100e9, 1e-6, link="generic", name="tiny-ring4")


def tiny_2x2_ib() -> nx.DiGraph:
    """2 servers x 2 H100 on NVSwitch, one NDR NIC per GPU: the smallest multi-node case."""
    return multi_node(2, partial(nvswitch_server, hw.NVLINK4_H100, gpus=2, gpu="h100-sxm", name="2-h100"),
                      hw.IB_NDR.bw_Bps, hw.IB_NDR.latency_s, nic_link=hw.IB_NDR.link,
                      nic_source=hw.IB_NDR.source, attach=hw.PCIE5_NIC, name="tiny-2x2-ib")


PRESETS: MappingProxyType[str, Callable[[], nx.DiGraph]] = MappingProxyType(
    {
        "8x-rtx4090-pcie": rtx4090_pcie_8x,
        "4x-l40s-pcie": l40s_pcie_4x,
        "8x-l40s-pcie": l40s_pcie_8x,
        "dgx-a100": dgx_a100,
        "dgx-h100": dgx_h100,
        "hgx-h200": hgx_h200,
        "2x-dgx-h100-ib": partial(dgx_h100_ib, 2),
        "8x-dgx-h100-ib": partial(dgx_h100_ib, 8),
        "tiny-ring4": tiny_ring4,
        "tiny-2x2-ib": tiny_2x2_ib,
        "1x-h100-host-staged": h100_host_staged,
        "1x-h200-host-staged": h200_host_staged,
    }
)

TOPOLOGY_NAMES: tuple[str, ...] = tuple(PRESETS)
"""Preset names accepted by get_topology, in display order."""

#: cluster presets by server count: ``<N>x-<family>`` for N in (low, high), e.g. ``128x-dgx-h100-rail``;
#: ``1x-...`` is the family's single server with its NICs (what one node does before the network)
SCALED: MappingProxyType[str, tuple[Callable[[int], nx.DiGraph], int, int]] = MappingProxyType(
    {"dgx-h100-rail": (dgx_h100_rail, 1, 2048), "l40s-roce": (l40s_roce, 1, 128),
     "hgx-h100-roce": (hgx_h100_roce, 1, 128)}
)
SCALED_NAMES: tuple[str, ...] = tuple(f"<N>x-{k}" for k in SCALED)
_SCALED_RE = re.compile(r"^([0-9]+)x-([a-z0-9-]+)$")  # ASCII digits: \d matches "٣"


def _scaled(key: str) -> nx.DiGraph | None:
    m = _SCALED_RE.match(key)
    if m is None or m.group(2) not in SCALED:
        return None
    build, low, high = SCALED[m.group(2)]
    n = int(m.group(1))
    if not low <= n <= high:
        raise TopologyError(f"topology {key!r}: {n} servers out of range (allowed: {low}..{high})")
    return build(n)


def topology_gpus(name_or_path: str | Path) -> int:
    """GPUs of the topology :func:`get_topology` returns, without building a cluster preset whole:
    a scaled preset repeats one server, so its GPU count is the server count times the smallest
    preset's GPUs per server (a 2,048-server fabric takes seconds to build and validate)."""
    m = _SCALED_RE.match(str(name_or_path))
    if m is not None and m.group(2) in SCALED:
        build, low, high = SCALED[m.group(2)]
        n = int(m.group(1))
        if low <= n <= high:
            return world_size(build(low)) // low * n
    return world_size(get_topology(name_or_path))


def get_topology(name_or_path: str | Path) -> nx.DiGraph:
    """A validated topology: a preset name (see TOPOLOGY_NAMES, and SCALED_NAMES with N servers) or a
    .graphml/.toml file path.

    Returns a fresh graph each call, so callers may annotate it freely.
    """
    key = str(name_or_path)
    G = PRESETS[key]() if key in PRESETS else _scaled(key)
    if G is not None:
        validate_topology(G)
        return G
    if Path(key).suffix.lower() in (".graphml", ".toml") or Path(key).exists():
        return load_topology_file(key)
    raise TopologyError(f"unknown topology {key!r} (allowed: {', '.join(TOPOLOGY_NAMES + SCALED_NAMES)}, "
                        "or a .graphml/.toml file)")
