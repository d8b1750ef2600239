"""Public link figures used by the presets, each with the citation that justifies it.

Bandwidths are **line rates** per direction (datasheet or standard arithmetic). What a
collective library really reaches on a link is a separate, fitted factor of the NCCL model
(:mod:`dicesim.sim.network.nccl`, docs/nccl.md), so a spec figure and its efficiency are never mixed.
Edge latencies are derived from the small-message figures in docs/topologies.md ("Latency
derivation"); calibration refines all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from dicesim.topology.graph import LinkSpec

_BRIEF = "shared brief hardware.md"
_EFF = "What NCCL reaches on it is the fitted NCCL-model efficiency (docs/nccl.md)."
_LAT_NV = (
    "Latency: DGX-A100 small all-reduce ~10 us (2 GPUs) to ~34 us (8 GPUs) fits a ring with "
    "2(W-1) hops of 2.0 us plus a 6 us NCCL base (base range 4-14 us); a hop is 2 edges, so 1.0 us per edge."
)
_LAT_PCIE = (
    "Latency: 8x RTX 4090 small all-reduce ~42 us = 6 us base + 14 hops of ~2.6 us; a host-staged hop is "
    "4 PCIe edges + 2 host-memory edges (0.1 us each), so 0.6 us per PCIe edge (per-hop PCIe range 1-6 us)."
)
_PCIE = "PCI-SIG PCIe {gen}: {gts} GT/s x 16 lanes x 128b/130b encoding / 8 = {bw} GB/s per direction (line rate). "

SOURCES = MappingProxyType(
    {
        "nvlink3-a100": (
            "NVIDIA A100 datasheet: NVLink 600 GB/s bidirectional = 12 NVLink3 links x 25 GB/s per direction = "
            "300 GB/s per direction per GPU (NVIDIA/nccl-tests#149, NCCL maintainer, 2023-07-05: '12 NVLinks ... "
            "25GB/s (in each direction)'). " + _EFF + " " + _LAT_NV
        ),
        "nvlink4-h100": (
            "NVIDIA H100 SXM datasheet: NVLink 900 GB/s bidirectional = 18 NVLink4 links x 25 GB/s = 450 GB/s per "
            "direction (NVIDIA/nccl-tests#212, NCCL maintainer, 2024-05-06: '450GB/s is the line rate'). "
            + _EFF + " Latency as nvlink3-a100 (same per-hop range 0.5-3.4 us)."
        ),
        "nvlink4-h200": (
            "NVIDIA H200 datasheet: NVLink 900 GB/s bidirectional, the same NVLink4/NVSwitch generation as H100: "
            "450 GB/s per direction. " + _EFF + " Latency as nvlink3-a100."
        ),
        "nvlink4-h800": (
            "NVIDIA H800 SXM: NVLink 400 GB/s bidirectional = 200 GB/s per direction (deepseek-ai/DeepSeek-V3#28, "
            "2024-12-31: '400GB/s is the bidirectional theoretical value, 160GB/s our unidirectional measurement'). "
            + _EFF + " Latency as nvlink3-a100."
        ),
        "nvlink3-a800": (
            "NVIDIA A800 (SXM): the A100 with its NVLink cut to 400 GB/s bidirectional (A100: 600), everything else "
            "as the A100 (tweakers.net/nieuws/203182, 2022-11, after Reuters): 200 GB/s per direction. "
            + _EFF + " Latency as nvlink3-a100."
        ),
        "nvlink4-h20": (
            "NVIDIA H20: 18 NVLink4 links per GPU ('NV18' in nvidia-smi topo, NVIDIA/nccl-tests#321, 2025-06) x "
            "25 GB/s = 450 GB/s per direction. " + _EFF + " Latency as nvlink3-a100."
        ),
        "pcie4-gpu": (
            _PCIE.format(gen="4.0", gts=16, bw=31.5) + f"({_BRIEF}: 32 GB/s spec, ~22-25 GB/s measured.) "
            + _EFF + " " + _LAT_PCIE
        ),
        "pcie4-uplink": (
            "PCIe switch uplink to the CPU root port, PCIe 4.0 x16: " + _PCIE.format(gen="4.0", gts=16, bw=31.5)
            + "Shared by the GPUs behind the switch. " + _EFF + " " + _LAT_PCIE
        ),
        "pcie3-gpu": (
            _PCIE.format(gen="3.0", gts=8, bw=15.75) + _EFF + " Latency per edge as pcie4-gpu."
        ),
        "pcie5-gpu": (
            _PCIE.format(gen="5.0", gts=32, bw=63.0) + _EFF + " Latency per edge as pcie4-gpu."
        ),
        "upi": (
            f"{_BRIEF}: cross-socket (QPI/UPI) bandwidth varies and is often the bottleneck of 8-GPU PCIe boxes. "
            "Assumed 20 GB/s per direction, the low end of one UPI link (lowlat-ms.pages.dev/glossary/qpi: "
            "~20-25 GB/s per direction per link); latency 0.05 us (same page: remote hop adds ~40-50 ns). "
            "Assumption to calibrate."
        ),
        "xgmi-rome": (
            "AMD EPYC 7002 (Rome) two-socket: the sockets are joined by x16 Infinity Fabric (xGMI) links; with "
            "160 PCIe lanes exposed, 96 lanes (3 x16 links) run socket to socket (servethehome.com, 'Why AMD EPYC "
            "Rome 2P Will Have 128-160 PCIe Gen4 Lanes and a Bonus'); at 16 GT/s per lane, PCIe 4.0 signalling: "
            "3 x 31.5 = 94.5 GB/s per direction. Latency 0.05 us as upi. Consistent with one GPU-to-GPU copy "
            "across the sockets of an 8x RTX 4090 / 2x EPYC 7542 box reaching 20.6-22.5 GB/s (blog 'RTX4090 "
            "GPUDirect P2P Unlocked!', 2025-02-07, p2pBandwidthLatencyTest), above the 20 GB/s of 'upi'."
        ),
        "upi-spr": (
            "Intel Xeon Platinum 8480+ (Sapphire Rapids): 4 UPI links at 16 GT/s (Intel ARK); a UPI link carries "
            "2 bytes per transfer per direction (20.8 GB/s at 10.4 GT/s, source of 'upi'), so 32 GB/s per link and "
            "128 GB/s per direction for four. Latency 0.05 us as upi."
        ),
        "ddr-host": (
            "Host memory of one socket: 8 channels DDR4-3200 x 8 B = 204.8 GB/s peak (JEDEC arithmetic), split "
            "evenly between the write (CPU->memory) and read (memory->CPU) directions: 102.4 GB/s each; latency "
            "0.1 us (DRAM access order). Assumption; not the bottleneck next to PCIe."
        ),
        "ddr5-host": (
            "Host memory of one socket: 8 channels DDR5-4800 x 8 B = 307.2 GB/s peak (JEDEC arithmetic), split "
            "evenly between write and read: 153.6 GB/s each; latency 0.1 us. Assumption, as ddr-host."
        ),
        "root-port": (
            "A GPU plugged straight into a CPU root port (no PCIe switch): the root complex is not a bottleneck "
            "next to the x16 link, so its internal hop is 1 TB/s and 0.05 us. Assumption."
        ),
        "pcie5-nic": (
            "NIC attachment, PCIe 5.0 x16: " + _PCIE.format(gen="5.0", gts=32, bw=63.0)
            + "(the 50 GB/s NIC is the bottleneck). Latency 0.6 us per edge as pcie4-gpu."
        ),
        "ib-ndr": (
            "InfiniBand NDR ConnectX-7, 400 Gb/s = 50 GB/s per NIC per direction (line rate; NVIDIA/nccl-tests#267, "
            "2025-01-23: 'CX-7 NICs at NDR rate (400Gbps) should achieve up to 48-49GB/s per NIC'; all-to-all does "
            "not aggregate NICs). " + _EFF + " Latency: network hop 3-10 us, so 2.5 us per NIC<->switch edge "
            "(5 us NIC to NIC)."
        ),
        "ib-ndr-spine": (
            "NVIDIA DGX SuperPOD reference architecture, DGX H100 (RA-11333-001; docs.nvidia.com/dgx-superpod/"
            "reference-architecture-scalable-infrastructure-h100): scalable units (SU) of 32 DGX H100 systems on a "
            "rail-optimised NDR 400 Gb/s InfiniBand compute fabric, one leaf switch per rail per SU. The same RA "
            "family's component table (DGX B200 SuperPOD RA, same NDR fabric) lists for 4 SUs / 128 nodes / 1024 GPUs "
            "32 leaf and 16 spine switches with 1024 node-leaf and 1024 leaf-spine cables: each leaf has as many "
            "uplinks (32) as node ports (1:1). Per uplink the ib-ndr line rate, 50 GB/s; a leaf's uplinks are one "
            "aggregated edge (traffic spread evenly over the spines). " + _EFF + " Latency 2.5 us per leaf-spine "
            "edge, as ib-ndr."
        ),
        "roce-400g": (
            "400 GbE RoCE NIC (BlueField-3 B3140H SuperNIC or ConnectX-7): 50 GB/s line rate; perftest reaches "
            "392 Gb/s = 49 GB/s on one rail (NVIDIA/nccl#2409, where NCCL itself reached ~27 GB/s per rail). The line "
            "rate is used; " + _EFF[0].lower() + _EFF[1:] + " Latency 2.5 us per NIC<->switch edge (shared brief "
            "hardware.md: network hop 3-10 us); an assumption to calibrate."
        ),
        "roce-100g": (
            "OCI BM.GPU4.8 cluster network: RoCE v2, '100Gbps x 16 /ノード' (oracle-japan/ocitutorials, "
            "content/hpc/benchmark/run-nccltests-ubuntu/index.md @ 4011426, section 0): 100 Gb/s = 12.5 GB/s per port "
            "per direction (line rate), 16 ports per node. Which GPU each port sits next to is not stated: two per GPU "
            "assumed (16 ports, 8 GPUs). " + _EFF + " Latency 2.5 us per NIC<->switch edge as roce-400g."
        ),
        "eth-spine": (
            "NVIDIA Enterprise Reference Architecture east-west fabric (docs.nvidia.com/enterprise-reference-"
            "architectures/rtx-pro-ai-factory, Networking Physical Topologies): Spectrum Ethernet switches in a full "
            "non-blocking fat tree, rail-optimised through the SuperNICs, so a leaf has as many uplinks as node ports. "
            "32 servers per leaf is assumed (as the InfiniBand preset). Per uplink the roce-400g figure; a leaf's "
            "uplinks are one aggregated edge. " + _EFF + " Latency 2.5 us per leaf-spine edge, as roce-400g."
        ),
        "roce-400g-hgx": (
            "NVIDIA HGX AI Factory reference architecture (H100, H200, B200; docs.nvidia.com/reference-architectures/"
            "hgx-ai-factory-h100-h200-b200, Abstract): the 2-8-9-400 configuration, 2 CPUs, 8 GPUs and 9 NICs, "
            "400 Gb/s per GPU, on NVIDIA Spectrum-X Ethernet (RoCE), GPUs on a rail-optimised leaf-spine east-west "
            "fabric through their SuperNICs (Network Logical Architecture): one 400 GbE NIC per GPU = 50 GB/s per "
            "direction (line rate; the ninth NIC, a north-south DPU, is not modelled). " + _EFF[0].lower() + _EFF[1:]
            + " Latency 2.5 us per NIC<->switch edge as roce-400g; an assumption to calibrate."
        ),
        "pcie4-nic": (
            "PCIe 4.0 x16 between a PCIe switch and a NIC: " + _PCIE.format(gen="4.0", gts=16, bw=31.5) + _EFF + " "
            "Placement from the NVIDIA AI Enterprise reference architecture (compute node hardware): 'PCIe Optimized "
            "2-8-5' = 2 sockets, 8 GPUs, 5 network adapters with GPUs balanced across sockets and root ports: 4 "
            "east-west NICs, one per PCIe switch of 2 GPUs (the fifth, north-south, is not modelled). " + _LAT_PCIE
        ),
        "generic": "Builder default: numbers supplied by the caller, no external source.",
    }
)

#: how each cited figure is known, for the assumptions every prediction lists (docs/trust.md):
#: ``cited`` a datasheet, a standard's arithmetic or a vendor reference design; ``measured`` a
#: published measurement of the figure itself; ``assumed`` a stated assumption to calibrate
SOURCE_STATUS = MappingProxyType({
    "nvlink3-a100": "cited", "nvlink4-h100": "cited", "nvlink4-h200": "cited", "nvlink4-h800": "cited",
    "nvlink4-h20": "cited", "pcie4-gpu": "cited", "pcie4-uplink": "cited", "pcie3-gpu": "cited",
    "pcie5-gpu": "cited", "upi": "assumed", "xgmi-rome": "cited", "upi-spr": "cited", "ddr-host": "assumed",
    "ddr5-host": "assumed", "root-port": "assumed", "pcie5-nic": "cited", "ib-ndr": "cited", "ib-ndr-spine": "cited",
    "roce-400g": "cited", "roce-400g-hgx": "cited", "roce-100g": "cited", "nvlink3-a800": "cited",
    "eth-spine": "cited", "pcie4-nic": "cited",
    "pcie5-host-h100": "measured",
    "pcie5-host-h200": "assumed", "pcie5-uplink": "assumed", "generic": "assumed",
})

NVLINK3_A100 = LinkSpec(bw_Bps=300e9, latency_s=1.0e-6, link="nvlink3", source="nvlink3-a100")
NVLINK4_H100 = LinkSpec(bw_Bps=450e9, latency_s=1.0e-6, link="nvlink4", source="nvlink4-h100")
NVLINK4_H200 = LinkSpec(bw_Bps=450e9, latency_s=1.0e-6, link="nvlink4", source="nvlink4-h200")
NVLINK4_H800 = LinkSpec(bw_Bps=200e9, latency_s=1.0e-6, link="nvlink4", source="nvlink4-h800")
NVLINK3_A800 = LinkSpec(bw_Bps=200e9, latency_s=1.0e-6, link="nvlink3", source="nvlink3-a800")
NVLINK4_H20 = LinkSpec(bw_Bps=450e9, latency_s=1.0e-6, link="nvlink4", source="nvlink4-h20")
PCIE4_GPU = LinkSpec(bw_Bps=31.5e9, latency_s=0.6e-6, link="pcie4", source="pcie4-gpu")
PCIE4_UPLINK = LinkSpec(bw_Bps=31.5e9, latency_s=0.6e-6, link="pcie4", source="pcie4-uplink")
PCIE3_GPU = LinkSpec(bw_Bps=15.75e9, latency_s=0.6e-6, link="pcie3", source="pcie3-gpu")
PCIE5_GPU = LinkSpec(bw_Bps=63.0e9, latency_s=0.6e-6, link="pcie5", source="pcie5-gpu")
UPI = LinkSpec(bw_Bps=20e9, latency_s=0.05e-6, link="upi", source="upi")
XGMI_ROME = LinkSpec(bw_Bps=94.5e9, latency_s=0.05e-6, link="xgmi", source="xgmi-rome")
UPI_SPR = LinkSpec(bw_Bps=128e9, latency_s=0.05e-6, link="upi", source="upi-spr")
HOST_MEM_DDR4 = LinkSpec(bw_Bps=102.4e9, latency_s=0.1e-6, link="host_mem", source="ddr-host")
HOST_MEM_DDR5 = LinkSpec(bw_Bps=153.6e9, latency_s=0.1e-6, link="host_mem", source="ddr5-host")
ROOT_PORT = LinkSpec(bw_Bps=1e12, latency_s=0.05e-6, link="root_port", source="root-port")
PCIE5_NIC = LinkSpec(bw_Bps=63.0e9, latency_s=0.6e-6, link="pcie5", source="pcie5-nic")
IB_NDR = LinkSpec(bw_Bps=50e9, latency_s=2.5e-6, link="ib_ndr", source="ib-ndr")
IB_NDR_UPLINK = LinkSpec(bw_Bps=50e9, latency_s=2.5e-6, link="ib_ndr", source="ib-ndr-spine")
ROCE_400G = LinkSpec(bw_Bps=50e9, latency_s=2.5e-6, link="roce", source="roce-400g")
ROCE_400G_HGX = LinkSpec(bw_Bps=50e9, latency_s=2.5e-6, link="roce", source="roce-400g-hgx")
ROCE_100G = LinkSpec(bw_Bps=12.5e9, latency_s=2.5e-6, link="roce", source="roce-100g")
ROCE_UPLINK = LinkSpec(bw_Bps=50e9, latency_s=2.5e-6, link="roce", source="eth-spine")
PCIE4_NIC = LinkSpec(bw_Bps=31.5e9, latency_s=0.6e-6, link="pcie4", source="pcie4-nic")
#: uplinks per leaf switch of the rail-optimised fabrics (ib-ndr-spine: 1:1 with 32 node ports)
LEAF_UPLINKS = 32
#: servers on one leaf switch per rail (ib-ndr-spine: one scalable unit)
SERVERS_PER_LEAF = 32


def sources_for(keys: Iterable[str]) -> dict[str, str]:
    """The citation texts for ``keys`` as a fresh dict (to store in a graph's ``sources``)."""
    return {k: SOURCES[k] for k in dict.fromkeys(keys)}


def source_status(key: str, text: str = "") -> str:
    """How the figure cited as ``key`` is known: its entry in :data:`SOURCE_STATUS`, else read off
    the citation ``text`` of a file's own source (``measured``, ``assum...``, ``fitted``), else ``cited``."""
    if key in SOURCE_STATUS:
        return SOURCE_STATUS[key]
    low = text.lower()
    for word, status in (("assum", "assumed"), ("measured", "measured"), ("fitted", "fitted")):
        if word in low:
            return status
    return "cited"
