"""Topologies of the machines behind the published measurements (traces/published/).

Each is a plain graph built from cited link figures (:mod:`dicesim.topology.hardware`) and the
machine description its source gives (GPU count, sockets, switches, peer-to-peer or not). They
are not general presets: they exist so ``dicesim accuracy --published`` can simulate every
published operation on the machine that produced it. :func:`get_machine` accepts these names
and every topology preset name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import MappingProxyType

import networkx as nx

from dicesim.errors import ConfigError, TopologyError
from dicesim.topology import hardware as hw
from dicesim.topology.builders import multi_node, nvswitch_server, pcie_server
from dicesim.topology.graph import LinkSpec
from dicesim.topology.presets import PRESETS, SCALED, get_topology, hgx_h200
from dicesim.topology.validate import validate_topology


def direct_attach_server(*, sockets: int, gpus_per_socket: int, gpu_link: LinkSpec, host_mem: LinkSpec,
                         socket_link: LinkSpec | None, p2p: bool, gpu: str, name: str) -> nx.DiGraph:
    """GPUs plugged straight into CPU root ports (no PCIe switch), ``gpus_per_socket`` per socket.

    A root port is a one-GPU "switch" whose uplink is the root complex (``hw.ROOT_PORT``), so a
    staged route is GPU -> root port -> CPU -> memory -> CPU -> root port -> GPU.
    """
    return pcie_server(sockets=sockets, switches_per_socket=gpus_per_socket, gpus_per_switch=1, gpu_link=gpu_link,
                       uplink=hw.ROOT_PORT, host_mem=host_mem, socket_link=socket_link, p2p=p2p, gpu=gpu, name=name)


def _hgx(spec: LinkSpec, gpu: str, name: str) -> nx.DiGraph:
    return nvswitch_server(spec, gpus=8, gpu=gpu, name=name)


def _ib(servers: int, node: Callable[[], nx.DiGraph], name: str) -> nx.DiGraph:
    """``servers`` copies of ``node``, one NDR NIC per GPU over PCIe 5, one non-blocking IB switch."""
    return multi_node(servers, node, hw.IB_NDR.bw_Bps, hw.IB_NDR.latency_s, nic_link=hw.IB_NDR.link,
                      nic_source=hw.IB_NDR.source, attach=hw.PCIE5_NIC, name=name)


_H800 = partial(_hgx, hw.NVLINK4_H800, "h800", "hgx-h800")


def oci_bm_gpu48_roce(servers: int) -> nx.DiGraph:
    """OCI BM.GPU4.8 nodes (8x A100-SXM4-40GB on NVSwitch) on the RoCE v2 cluster network: 16 x 100 Gb/s
    ports per node (hardware ``roce-100g``), two per GPU (NIC 2k and 2k+1 next to GPU k; PCIe 4.0 x16 each)."""
    node = partial(nvswitch_server, hw.NVLINK3_A100, gpus=8, gpu="a100-sxm", name="bm-gpu4.8")
    return multi_node(servers, node, hw.ROCE_100G.bw_Bps, hw.ROCE_100G.latency_s, nic_link=hw.ROCE_100G.link,
                      nic_source=hw.ROCE_100G.source, attach=hw.PCIE4_NIC, nics_per_server=16,
                      attach_to=[f"n0.gpu{k // 2}" for k in range(16)], name=f"{servers}x-oci-bm-gpu4.8-roce")


MACHINES: MappingProxyType[str, Callable[[], nx.DiGraph]] = MappingProxyType({
    # blog "RTX4090 GPUDirect P2P Unlocked!": 2x EPYC 7542, 16x DDR4-3200, 8 GPUs on root ports, no switch
    "8x-rtx4090-epyc": partial(direct_attach_server, sockets=2, gpus_per_socket=4, gpu_link=hw.PCIE4_GPU,
                               host_mem=hw.HOST_MEM_DDR4, socket_link=hw.XGMI_ROME, p2p=False, gpu="rtx4090",
                               name="8x-rtx4090-epyc"),
    # the same machine with peer-to-peer unlocked by tinygrad's patched kernel modules
    "8x-rtx4090-epyc-p2p": partial(direct_attach_server, sockets=2, gpus_per_socket=4, gpu_link=hw.PCIE4_GPU,
                                   host_mem=hw.HOST_MEM_DDR4, socket_link=hw.XGMI_ROME, p2p=True, gpu="rtx4090",
                                   name="8x-rtx4090-epyc-p2p"),
    # tinygrad/open-gpu-kernel-modules#36: 4 GPUs on root ports of one EPYC 7773X, peer-to-peer unlocked
    "4x-rtx4090-epyc-p2p": partial(direct_attach_server, sockets=1, gpus_per_socket=4, gpu_link=hw.PCIE4_GPU,
                                   host_mem=hw.HOST_MEM_DDR4, socket_link=None, p2p=True, gpu="rtx4090",
                                   name="4x-rtx4090-epyc-p2p"),
    # NVIDIA/nccl#1639: 2x Xeon 8480+, 16 DDR5 DIMMs, 8x RTX 5090 on PCIe 5.0 (one GPU per root port assumed)
    "8x-rtx5090-xeon": partial(direct_attach_server, sockets=2, gpus_per_socket=4, gpu_link=hw.PCIE5_GPU,
                               host_mem=hw.HOST_MEM_DDR5, socket_link=hw.UPI_SPR, p2p=False, gpu="rtx5090",
                               name="8x-rtx5090-xeon"),
    # AutoDL container: 2x RTX 2080 Ti under one PCIe 3.0 switch ('PIX'), no peer-to-peer
    "2x-rtx2080ti-pcie3": partial(pcie_server, sockets=1, switches_per_socket=1, gpus_per_switch=2,
                                  gpu_link=hw.PCIE3_GPU, uplink=hw.PCIE3_GPU, host_mem=hw.HOST_MEM_DDR4,
                                  socket_link=None, p2p=False, gpu="rtx2080ti", name="2x-rtx2080ti-pcie3"),
    "hgx-h800": _H800,
    "hgx-h20": partial(_hgx, hw.NVLINK4_H20, "h20", "hgx-h20"),
    # step-level figures (traces/published/steps/): 8x A800 SXM on NVSwitch; 8x L20 in the PCIe server
    # class the L40S ships in ('PCIe Optimized 2-8-5', the 8x-l40s-pcie preset): the sources state neither
    "hgx-a800": partial(_hgx, hw.NVLINK3_A800, "a800", "hgx-a800"),
    "8x-l20-pcie": partial(pcie_server, sockets=2, switches_per_socket=2, gpus_per_switch=2, gpu_link=hw.PCIE4_GPU,
                           uplink=hw.PCIE4_UPLINK, host_mem=hw.HOST_MEM_DDR4, socket_link=hw.UPI, p2p=True,
                           gpu="l20", name="8x-l20-pcie"),
    # DeepEP README @ 3b1045d, lines 15 and 28: H800 GPUs 'each connected to a CX7 InfiniBand 400 Gb/s RDMA
    # network card' (one NIC per GPU); the fabric is not stated, so one non-blocking switch. 1 node: the
    # low-latency kernels of February 2025 send to same-node peers through the NICs too
    # (csrc/kernels/internode_ll.cu @ ebfe47e:142-143)
    **{f"{n}x-hgx-h800-ib": partial(_ib, n, _H800, f"{n}x-hgx-h800-ib") for n in (1, 2, 4, 8, 16, 32)},
    # deepseek-ai/DeepEP#493: two 8x H200 nodes, CX7 400 Gb/s InfiniBand (one NIC per GPU assumed, as
    # DeepEP's normal kernels expect)
    "2x-hgx-h200-ib": partial(_ib, 2, hgx_h200, "2x-hgx-h200-ib"),
    # oracle-japan/ocitutorials run-nccltests-ubuntu: two BM.GPU4.8 on the RoCE v2 cluster network
    "2x-oci-bm-gpu4.8-roce": partial(oci_bm_gpu48_roce, 2),
    # one GPU and one NDR NIC per server: the per-NIC figure of NVIDIA/nccl-tests#267
    "2x-h100-1nic-ib": partial(multi_node, 2, partial(nvswitch_server, hw.NVLINK4_H100, gpus=1, gpu="h100-sxm",
                                                      name="1-h100"),
                               hw.IB_NDR.bw_Bps, hw.IB_NDR.latency_s, nic_link=hw.IB_NDR.link,
                               nic_source=hw.IB_NDR.source, attach=hw.PCIE5_NIC, name="2x-h100-1nic-ib"),
})

MACHINE_NAMES: tuple[str, ...] = tuple(MACHINES)


def get_machine(name: str) -> nx.DiGraph:
    """A validated graph: a published machine (see MACHINE_NAMES), a topology preset name, or a scaled
    cluster preset (``<N>x-dgx-h100-rail``)."""
    if name in MACHINES:
        G = MACHINES[name]()
        validate_topology(G)
        return G
    if name in PRESETS or name.partition("x-")[2] in SCALED:
        try:
            return get_topology(name)
        except TopologyError as exc:
            raise ConfigError("topology", str(exc)) from None
    raise ConfigError("topology", f"unknown machine {name!r}",
                      (*MACHINE_NAMES, *PRESETS, *(f"<N>x-{k}" for k in SCALED)))
