"""Public link figures used by the presets, each with the citation that justifies it.

Bandwidths are per direction and, where a measured figure exists, the effective one NCCL
reaches rather than the datasheet peak. Edge latencies are derived from the small-message
figures in docs/topologies.md ("Latency derivation"); calibration refines all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from dicesim.topology.graph import LinkSpec

_BRIEF = "shared brief hardware.md"
_LAT_NV = (
    "Latency: DGX-A100 small all-reduce ~10 us (2 GPUs) to ~34 us (8 GPUs) fits a ring with "
    "2(W-1) hops of 2.0 us plus a 6 us NCCL base (base range 4-14 us); a hop is 2 edges, so 1.0 us per edge."
)
_LAT_PCIE = (
    "Latency: 8x RTX 4090 small all-reduce ~42 us = 6 us base + 14 hops of ~2.6 us; a host-staged hop is "
    "4 PCIe edges + 2 host-memory edges (0.1 us each), so 0.6 us per PCIe edge (per-hop PCIe range 1-6 us)."
)

SOURCES = MappingProxyType(
    {
        "nvlink3-a100": (
            f"{_BRIEF}: A100 NVLink3 via NVSwitch, 300 GB/s per direction per GPU spec, ~230 GB/s NCCL bus "
            "bandwidth (NVIDIA/nccl#1054: app-level ~80% of peak; NVIDIA/nccl-tests#228: ~220 GB/s measured). "
            + _LAT_NV
        ),
        "nvlink4-h100": (
            f"{_BRIEF}: H100 NVLink4 via NVSwitch, 450 GB/s per direction line rate, ~370 GB/s effective "
            "(NVIDIA/nccl-tests#212, NCCL maintainer: ~20% protocol overhead, busbw of non-allreduce ops). "
            "Latency as nvlink3-a100 (same per-hop range 0.5-3.4 us)."
        ),
        "nvlink4-h200": (
            f"{_BRIEF}: H200 (HGX) lists NVLink peer-to-peer; it uses the same NVLink4/NVSwitch generation as "
            "H100 (NVIDIA H200 datasheet: 900 GB/s bidirectional), so the H100 effective ~370 GB/s is assumed. "
            "Latency as nvlink3-a100."
        ),
        "pcie4-gpu": (
            f"{_BRIEF}: PCIe 4.0 x16, 32 GB/s per direction spec, ~22-25 GB/s measured; 24 GB/s used. " + _LAT_PCIE
        ),
        "pcie4-uplink": (
            f"{_BRIEF}: PCIe switch uplink to the CPU root port is PCIe 4.0 x16 (same ~24 GB/s effective), "
            "shared by the 4 GPUs behind the switch. " + _LAT_PCIE
        ),
        "upi": (
            f"{_BRIEF}: cross-socket (QPI/UPI) bandwidth varies and is often the bottleneck of 8-GPU PCIe boxes. "
            "Assumed 20 GB/s per direction, the low end of one UPI link (lowlat-ms.pages.dev/glossary/qpi: "
            "~20-25 GB/s per direction per link); latency 0.05 us (same page: remote hop adds ~40-50 ns). "
            "Assumption to calibrate."
        ),
        "ddr-host": (
            "Host memory of one socket: 8 channels DDR4-3200 x 8 B = 204.8 GB/s peak (JEDEC arithmetic), split "
            "evenly between the write (CPU->memory) and read (memory->CPU) directions: 102.4 GB/s each; latency "
            "0.1 us (DRAM access order). Assumption; not the bottleneck next to PCIe."
        ),
        "pcie5-nic": (
            f"{_BRIEF}: PCIe 5.0 x16, 64 GB/s per direction spec (datasheet peak; no measured GPU-NIC figure "
            "given, the 48 GB/s NIC is the bottleneck). Latency 0.6 us per edge as pcie4-gpu."
        ),
        "ib-ndr": (
            f"{_BRIEF}: InfiniBand NDR ConnectX-7 400 Gb/s = 50 GB/s per NIC, 48-49 GB/s measured "
            "(NVIDIA/nccl-tests#267; all-to-all does not aggregate NICs); 48 GB/s used. Latency: network hop "
            "3-10 us, so 2.5 us per NIC<->switch edge (5 us NIC to NIC)."
        ),
        "ib-ndr-spine": (
            "NVIDIA DGX SuperPOD reference architecture, DGX H100 (RA-11333-001; docs.nvidia.com/dgx-superpod/"
            "reference-architecture-scalable-infrastructure-h100): scalable units (SU) of 32 DGX H100 systems on a "
            "rail-optimised NDR 400 Gb/s InfiniBand compute fabric, one leaf switch per rail per SU. The same RA "
            "family's component table (DGX B200 SuperPOD RA, same NDR fabric) lists for 4 SUs / 128 nodes / 1024 GPUs "
            "32 leaf and 16 spine switches with 1024 node-leaf and 1024 leaf-spine cables: each leaf has as many "
            "uplinks (32) as node ports (1:1). Per uplink the ib-ndr figure, 48 GB/s; a leaf's uplinks are one "
            "aggregated edge (traffic spread evenly over the spines). Latency 2.5 us per leaf-spine edge, as ib-ndr."
        ),
        "roce-400g": (
            "400 GbE RoCE NIC (BlueField-3 B3140H SuperNIC or ConnectX-7): 50 GB/s line rate; perftest reaches "
            "392 Gb/s = 49 GB/s on one rail (NVIDIA/nccl#2409, where NCCL itself reached ~27 GB/s per rail: left to "
            "the profile's link efficiency and calibration); 48 GB/s used, as ib-ndr. Latency 2.5 us per "
            "NIC<->switch edge (shared brief hardware.md: network hop 3-10 us); an assumption to calibrate."
        ),
        "eth-spine": (
            "NVIDIA Enterprise Reference Architecture east-west fabric (docs.nvidia.com/enterprise-reference-"
            "architectures/rtx-pro-ai-factory, Networking Physical Topologies): Spectrum Ethernet switches in a full "
            "non-blocking fat tree, rail-optimised through the SuperNICs, so a leaf has as many uplinks as node ports. "
            "32 servers per leaf is assumed (as the InfiniBand preset). Per uplink the roce-400g figure; a leaf's "
            "uplinks are one aggregated edge. Latency 2.5 us per leaf-spine edge, as roce-400g."
        ),
        "pcie4-nic": (
            f"{_BRIEF}: PCIe 4.0 x16 between a PCIe switch and a NIC, the pcie4-gpu figure (24 GB/s effective). "
            "Placement from the NVIDIA AI Enterprise reference architecture (compute node hardware): 'PCIe Optimized "
            "2-8-5' = 2 sockets, 8 GPUs, 5 network adapters with GPUs balanced across sockets and root ports: 4 "
            "east-west NICs, one per PCIe switch of 2 GPUs (the fifth, north-south, is not modelled). " + _LAT_PCIE
        ),
        "generic": "Builder default: numbers supplied by the caller, no external source.",
    }
)

NVLINK3_A100 = LinkSpec(bw_Bps=230e9, latency_s=1.0e-6, link="nvlink3", source="nvlink3-a100")
NVLINK4_H100 = LinkSpec(bw_Bps=370e9, latency_s=1.0e-6, link="nvlink4", source="nvlink4-h100")
NVLINK4_H200 = LinkSpec(bw_Bps=370e9, latency_s=1.0e-6, link="nvlink4", source="nvlink4-h200")
PCIE4_GPU = LinkSpec(bw_Bps=24e9, latency_s=0.6e-6, link="pcie4", source="pcie4-gpu")
PCIE4_UPLINK = LinkSpec(bw_Bps=24e9, latency_s=0.6e-6, link="pcie4", source="pcie4-uplink")
UPI = LinkSpec(bw_Bps=20e9, latency_s=0.05e-6, link="upi", source="upi")
HOST_MEM_DDR4 = LinkSpec(bw_Bps=102.4e9, latency_s=0.1e-6, link="host_mem", source="ddr-host")
PCIE5_NIC = LinkSpec(bw_Bps=64e9, latency_s=0.6e-6, link="pcie5", source="pcie5-nic")
IB_NDR = LinkSpec(bw_Bps=48e9, latency_s=2.5e-6, link="ib_ndr", source="ib-ndr")
IB_NDR_UPLINK = LinkSpec(bw_Bps=48e9, latency_s=2.5e-6, link="ib_ndr", source="ib-ndr-spine")
ROCE_400G = LinkSpec(bw_Bps=48e9, latency_s=2.5e-6, link="roce", source="roce-400g")
ROCE_UPLINK = LinkSpec(bw_Bps=48e9, latency_s=2.5e-6, link="roce", source="eth-spine")
PCIE4_NIC = LinkSpec(bw_Bps=24e9, latency_s=0.6e-6, link="pcie4", source="pcie4-nic")
#: uplinks per leaf switch of the rail-optimised fabrics (ib-ndr-spine: 1:1 with 32 node ports)
LEAF_UPLINKS = 32
#: servers on one leaf switch per rail (ib-ndr-spine: one scalable unit)
SERVERS_PER_LEAF = 32


def sources_for(keys: Iterable[str]) -> dict[str, str]:
    """The citation texts for ``keys`` as a fresh dict (to store in a graph's ``sources``)."""
    return {k: SOURCES[k] for k in dict.fromkeys(keys)}
