"""One GPU whose all-to-all bytes go GPU -> pinned host memory -> GPU: the host-staged check.

The executor's host-staged mode (``validate/executor/hoststaged.py``) runs W emulated ranks on one
GPU and moves every row that would cross ranks down to pinned host memory and back up, as
NCCL does between GPUs without peer-to-peer. This is the graph the simulator runs that
experiment on: GPU -> PCIe switch -> CPU root port -> host memory and back, every link
full duplex, so a staged copy loads the GPU's PCIe link once in each direction (device to
host, then host to device; the copy engines pipeline the two). :func:`loopback_route` is
that round trip. Figures are per direction with their citations below; the GPU check
measures the copy path it runs on and reports it beside the prediction.
"""

from __future__ import annotations

from types import MappingProxyType

import networkx as nx

from dicesim.errors import ConfigError
from dicesim.topology.graph import LinkSpec, add_device, add_gpu, add_link, gpu_nodes, new_topology
from dicesim.topology.routing import Route

_PCIE5_LAT = "Latency 0.6 us per PCIe edge, as the pcie4-gpu preset (docs/topologies.md, latency derivation)."

SOURCES = MappingProxyType(
    {
        "pcie5-host-h100": (
            "H100 SXM5 host interface PCIe Gen5 x16: 64 GB/s per direction (NVIDIA H100 datasheet: 128 GB/s "
            "bidirectional). Pinned copy-engine bandwidth measured on an H100 VM, host to device: "
            "57.06/56.68/57.07 GB/s (NVIDIA/nvbandwidth#6, host_to_device_memcpy_ce, 2023-07-11); 57 GB/s used "
            "for both directions. Both directions at once can fall short of that (NVIDIA/nvbandwidth#53, "
            "A100: 25 GB/s D2H with 11 GB/s H2D while both run): the GPU check measures it. " + _PCIE5_LAT
        ),
        "pcie5-host-h200": (
            "H200 SXM host interface PCIe Gen5 x16 (NVIDIA H200 datasheet: 128 GB/s bidirectional, the same as "
            "H100 SXM), so the H100 pinned copy figure is assumed: 57 GB/s per direction (NVIDIA/nvbandwidth#6). "
            + _PCIE5_LAT
        ),
        "pcie5-uplink": (
            "PCIe Gen5 x16 from the GPU's PCIe switch to the CPU root port (HGX H100/H200 baseboards place the "
            "GPUs behind PCIe Gen5 switches): same 57 GB/s effective per direction as the GPU link. " + _PCIE5_LAT
        ),
        "ddr5-host": (
            "Host memory of one socket: 8 channels DDR5-4800 x 8 B = 307.2 GB/s peak (JEDEC arithmetic; "
            "Sapphire Rapids hosts of HGX H100/H200), split evenly between the write and read directions: "
            "153.6 GB/s each; latency 0.1 us as ddr-host. Assumption; not the bottleneck next to PCIe."
        ),
    }
)

PCIE5_HOST_H100 = LinkSpec(bw_Bps=57e9, latency_s=0.6e-6, link="pcie5", source="pcie5-host-h100")
PCIE5_HOST_H200 = LinkSpec(bw_Bps=57e9, latency_s=0.6e-6, link="pcie5", source="pcie5-host-h200")
PCIE5_UPLINK = LinkSpec(bw_Bps=57e9, latency_s=0.6e-6, link="pcie5", source="pcie5-uplink")
HOST_MEM_DDR5 = LinkSpec(bw_Bps=153.6e9, latency_s=0.1e-6, link="host_mem", source="ddr5-host")

#: GPU key -> the GPU's own PCIe link
GPU_LINKS = MappingProxyType({"h100-sxm": PCIE5_HOST_H100, "h200": PCIE5_HOST_H200})


def one_gpu_host_staged(gpu: str, *, host_link: LinkSpec | None = None, name: str | None = None) -> nx.DiGraph:
    """One ``gpu`` behind a PCIe switch on one CPU socket with host memory; no peer-to-peer.

    ``host_link`` replaces both PCIe links between the GPU and the CPU (e.g. with the copy
    bandwidth measured on the machine).
    """
    if gpu not in GPU_LINKS and host_link is None:
        raise ConfigError("gpu", f"no host-link figures for {gpu!r}", tuple(GPU_LINKS))
    link = host_link or GPU_LINKS[gpu]
    uplink = host_link or PCIE5_UPLINK
    specs = (link, uplink, HOST_MEM_DDR5)
    known = {**SOURCES, "generic": "numbers supplied by the caller (measured on the machine), no external source"}
    G = new_topology(name=name or f"1x-{gpu.split('-')[0]}-host-staged", p2p=False, gpu=gpu, gpus_per_node=1,
                     sources={s.source: known[s.source] for s in specs})
    cpu = add_device(G, "n0.cpu0", "cpu")
    add_link(G, cpu, add_device(G, "n0.mem0", "host_mem"), HOST_MEM_DDR5)
    sw = add_device(G, "n0.pcie0", "pcie_switch")
    add_link(G, sw, cpu, uplink)
    add_link(G, add_gpu(G, "n0.gpu0", rank=0, server=0), sw, link)
    return G


def h100_host_staged() -> nx.DiGraph:
    """One H100 SXM, PCIe Gen5 x16 to the host: the host-staged overlap check on an H100."""
    return one_gpu_host_staged("h100-sxm")


def h200_host_staged() -> nx.DiGraph:
    """One H200 SXM, PCIe Gen5 x16 to the host: the host-staged overlap check on an H200."""
    return one_gpu_host_staged("h200")


def loopback_route(G: nx.DiGraph, rank: int = 0) -> Route:
    """GPU ``rank`` -> its nearest host memory -> GPU ``rank`` (lowest total latency each way)."""
    gpu = next((n for n in gpu_nodes(G) if G.nodes[n]["rank"] == rank), None)
    if gpu is None:
        raise ConfigError("rank", f"{rank} is not a GPU of {G.graph.get('name', 'the topology')}")
    mems = [n for n, k in G.nodes(data="kind") if k == "host_mem"]
    if not mems:
        raise ConfigError("topology", f"{G.graph.get('name', 'the topology')} has no host_mem node to stage through")
    lengths, paths = nx.single_source_dijkstra(G, gpu, weight="latency_s")
    mem = min((m for m in mems if m in lengths), key=lambda m: (lengths[m], m), default=None)
    if mem is None:
        raise ConfigError("topology", f"GPU {gpu} reaches no host memory")
    down = nx.dijkstra_path(G, mem, gpu, weight="latency_s")
    nodes = paths[mem] + down[1:]
    return tuple(zip(nodes[:-1], nodes[1:]))
