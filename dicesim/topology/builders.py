"""Topology builders for any size: small synthetic shapes, one-server layouts, and multi-server.

A *node builder* returns a one-server topology (server 0, node ids prefixed ``n0.``, ranks
0..g-1); ``multi_node`` copies it per server, renumbers ranks and joins the servers through NICs
and one network switch; ``rail_fabric`` joins them through a rail-optimised leaf-spine fabric.
Builders do not validate; ``validate_topology`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import networkx as nx

from dicesim.errors import ConfigError
from dicesim.topology.graph import LinkSpec, add_device, add_gpu, add_link, gpu_nodes, new_topology, server_prefix
from dicesim.topology.hardware import PCIE5_NIC, SOURCES, sources_for

NodeBuilder = Callable[[], nx.DiGraph]


def _check_count(field: str, n: int, minimum: int = 1) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {n!r}")


def _generic(bw_Bps: float, latency_s: float, link: str) -> LinkSpec:
    if not (bw_Bps > 0 and latency_s > 0):
        raise ConfigError("bw_Bps/latency_s", f"must be positive, got {bw_Bps!r} and {latency_s!r}")
    return LinkSpec(bw_Bps=bw_Bps, latency_s=latency_s, link=link, source="generic")


def _gpus_only(name: str, n: int, gpu: str, p2p: bool) -> tuple[nx.DiGraph, list[str]]:
    G = new_topology(name=name, p2p=p2p, gpu=gpu, gpus_per_node=n, sources=sources_for(["generic"]))
    return G, [add_gpu(G, f"n0.gpu{i}", rank=i, server=0) for i in range(n)]


def ring(n: int, bw_Bps: float, latency_s: float, *, link: str = "generic", gpu: str = "generic",
         name: str | None = None) -> nx.DiGraph:
    """n GPUs in a bidirectional ring (GPU i <-> GPU i+1 mod n); 2n directed edges for n >= 3."""
    _check_count("n", n)
    spec = _generic(bw_Bps, latency_s, link)
    G, gpus = _gpus_only(name or f"ring{n}", n, gpu, True)
    for i in range(n if n > 2 else n - 1):
        add_link(G, gpus[i], gpus[(i + 1) % n], spec)
    return G


def fully_connected(n: int, bw_Bps: float, latency_s: float, *, link: str = "generic", gpu: str = "generic",
                    name: str | None = None) -> nx.DiGraph:
    """n GPUs with a direct link between every pair; n(n-1) directed edges."""
    _check_count("n", n)
    spec = _generic(bw_Bps, latency_s, link)
    G, gpus = _gpus_only(name or f"full{n}", n, gpu, True)
    for i in range(n):
        for j in range(i + 1, n):
            add_link(G, gpus[i], gpus[j], spec)
    return G


def single_switch(n: int, bw_Bps: float, latency_s: float, *, link: str = "generic", gpu: str = "generic",
                  switch_kind: str = "nvswitch", name: str | None = None) -> nx.DiGraph:
    """n GPUs each linked to one switch node; the GPU port is the bottleneck. 2n directed edges."""
    _check_count("n", n)
    spec = _generic(bw_Bps, latency_s, link)
    G, gpus = _gpus_only(name or f"switch{n}", n, gpu, True)
    sw = add_device(G, "n0.sw0" if switch_kind != "nvswitch" else "n0.nvsw0", switch_kind)
    for g in gpus:
        add_link(G, g, sw, spec)
    return G


def nvswitch_server(spec: LinkSpec, *, gpus: int, gpu: str, name: str) -> nx.DiGraph:
    """One server whose GPUs all hang off one logical NVSwitch node (per-GPU port bandwidth)."""
    _check_count("gpus", gpus)
    G = new_topology(name=name, p2p=True, gpu=gpu, gpus_per_node=gpus, sources=sources_for([spec.source]))
    sw = add_device(G, "n0.nvsw0", "nvswitch")
    for i in range(gpus):
        add_link(G, add_gpu(G, f"n0.gpu{i}", rank=i, server=0), sw, spec)
    return G


def pcie_server(*, sockets: int, switches_per_socket: int, gpus_per_switch: int, gpu_link: LinkSpec,
                uplink: LinkSpec, host_mem: LinkSpec, socket_link: LinkSpec | None, p2p: bool, gpu: str,
                name: str) -> nx.DiGraph:
    """One PCIe server: GPUs under PCIe switches, switches under CPU sockets, each socket with host memory.

    GPU i sits under switch i // gpus_per_switch; switch j under socket j // switches_per_socket.
    Sockets are joined pairwise by ``socket_link`` (UPI/xGMI); required when sockets > 1.
    """
    for field, v in (("sockets", sockets), ("switches_per_socket", switches_per_socket),
                     ("gpus_per_switch", gpus_per_switch)):
        _check_count(field, v)
    if sockets > 1 and socket_link is None:
        raise ConfigError("socket_link", "needed when sockets > 1")
    specs = [gpu_link, uplink, host_mem] + ([socket_link] if socket_link else [])
    n_gpus = sockets * switches_per_socket * gpus_per_switch
    G = new_topology(name=name, p2p=p2p, gpu=gpu, gpus_per_node=n_gpus,
                     sources=sources_for(s.source for s in specs))
    cpus = []
    for s in range(sockets):
        cpu = add_device(G, f"n0.cpu{s}", "cpu")
        add_link(G, cpu, add_device(G, f"n0.mem{s}", "host_mem"), host_mem)
        cpus.append(cpu)
    for s in range(sockets):
        for t in range(s + 1, sockets):
            add_link(G, cpus[s], cpus[t], socket_link)  # type: ignore[arg-type]
    for j in range(sockets * switches_per_socket):
        sw = add_device(G, f"n0.pcie{j}", "pcie_switch")
        add_link(G, sw, cpus[j // switches_per_socket], uplink)
        for i in range(j * gpus_per_switch, (j + 1) * gpus_per_switch):
            add_link(G, add_gpu(G, f"n0.gpu{i}", rank=i, server=0), sw, gpu_link)
    return G


def _servers_with_nics(servers: int, node_builder: NodeBuilder, nic: LinkSpec, attach: LinkSpec,
                       nics_per_server: int | None, attach_to: Sequence[str] | None,
                       sources: Mapping[str, str] | None, extra: Sequence[LinkSpec], name: str | None,
                       suffix: str, hub: str, on_nic: Callable[[nx.DiGraph, int, int, str], None]) -> nx.DiGraph:
    """``servers`` renumbered copies of ``node_builder()`` with their NICs attached, after the network
    switch ``hub``; ``on_nic(G, server, k, nic_node)`` joins NIC k of each server to the network."""
    _check_count("servers", servers)
    base = node_builder()
    local_gpus = gpu_nodes(base)
    g = len(local_gpus)
    n_nics = g if nics_per_server is None else nics_per_server
    _check_count("nics_per_server", n_nics)
    targets = list(attach_to) if attach_to is not None else [local_gpus[k * g // n_nics] for k in range(n_nics)]
    if len(targets) != n_nics or any(t not in base for t in targets):
        raise ConfigError("attach_to", f"needs {n_nics} node ids of the server graph", sorted(base.nodes))
    known = {**SOURCES, **dict(sources or {}), **base.graph["sources"]}
    keys = [nic.source, attach.source] + [s.source for s in extra]
    missing = [k for k in keys if k not in known]
    if missing:
        raise ConfigError("sources", f"no citation text for {missing}")
    all_sources = {**base.graph["sources"], **{k: known[k] for k in keys}}
    G = new_topology(name=name or f"{servers}x-{base.graph['name']}{suffix}", p2p=base.graph["p2p"],
                     gpu=base.graph["gpu"], gpus_per_node=g, sources=all_sources)
    add_device(G, hub, "net_switch")
    for s in range(servers):
        pre = server_prefix(s)
        rename = {n: pre + n.removeprefix(server_prefix(0)) for n in base.nodes}
        for n, data in base.nodes(data=True):
            data = dict(data)
            if data.get("kind") == "gpu":
                data.update(rank=data["rank"] + s * g, server=s)
            G.add_node(rename[n], **data)
        for u, v, data in base.edges(data=True):
            G.add_edge(rename[u], rename[v], **dict(data))
        for k, target in enumerate(targets):
            nic_node = add_device(G, f"{pre}nic{k}", "nic")
            add_link(G, rename[target], nic_node, attach)
            on_nic(G, s, k, nic_node)
    return G


def multi_node(servers: int, node_builder: NodeBuilder, nic_bw_Bps: float, nic_latency_s: float = 2.5e-6, *,
               nic_link: str = "ib_ndr", nic_source: str = "generic", attach: LinkSpec = PCIE5_NIC,
               nics_per_server: int | None = None, attach_to: Sequence[str] | None = None,
               sources: Mapping[str, str] | None = None, name: str | None = None) -> nx.DiGraph:
    """``servers`` copies of ``node_builder()`` joined by NICs to one network switch ``ib.sw0``.

    Each server gets ``nics_per_server`` NICs (default: one per GPU). NIC k attaches with
    ``attach`` to ``attach_to[k]`` (local ``n0.`` ids; default GPU k*g//nics, so one NIC per GPU
    when counts match) and to the switch with (nic_bw_Bps, nic_latency_s). Ranks stay contiguous
    per server: server s holds ranks s*g .. s*g+g-1.
    """
    nic = LinkSpec(bw_Bps=nic_bw_Bps, latency_s=nic_latency_s, link=nic_link, source=nic_source)

    def to_switch(G: nx.DiGraph, _s: int, _k: int, nic_node: str) -> None:
        add_link(G, nic_node, "ib.sw0", nic)

    return _servers_with_nics(servers, node_builder, nic, attach, nics_per_server, attach_to, sources, (), name, "",
                              "ib.sw0", to_switch)


def rail_fabric(servers: int, node_builder: NodeBuilder, nic: LinkSpec, *, attach: LinkSpec, uplink: LinkSpec,
                servers_per_leaf: int = 32, uplinks_per_leaf: int = 32, nics_per_server: int | None = None,
                attach_to: Sequence[str] | None = None, sources: Mapping[str, str] | None = None,
                name: str | None = None) -> nx.DiGraph:
    """``servers`` copies of ``node_builder()`` on a rail-optimised two-level (leaf-spine) fabric.

    NIC k of every server is on rail k. Servers form units of ``servers_per_leaf``; each unit has
    one leaf switch per rail (``net.u<unit>.leaf<k>``) to which NIC k of each of its servers
    connects with ``nic``. Every leaf joins one logical spine (``net.spine``) through one link of
    ``uplinks_per_leaf`` x ``uplink`` bandwidth: the spine switches with traffic spread evenly over
    them (ECMP / adaptive routing) as a fluid, so the leaf's uplink total, not one port, limits
    cross-leaf traffic. Same-rail traffic inside a unit crosses one leaf; the rest is routed by
    latency (over the spine, or over the server's own fabric to a NIC on the destination's rail).
    NICs attach as in :func:`multi_node`; ranks stay contiguous per server.
    """
    _check_count("servers_per_leaf", servers_per_leaf)
    _check_count("uplinks_per_leaf", uplinks_per_leaf)
    trunk = LinkSpec(bw_Bps=uplink.bw_Bps * uplinks_per_leaf, latency_s=uplink.latency_s, link=uplink.link,
                     source=uplink.source)

    def to_leaf(G: nx.DiGraph, s: int, k: int, nic_node: str) -> None:
        leaf = f"net.u{s // servers_per_leaf}.leaf{k}"
        if leaf not in G:
            add_link(G, add_device(G, leaf, "net_switch"), "net.spine", trunk)
        add_link(G, nic_node, leaf, nic)

    return _servers_with_nics(servers, node_builder, nic, attach, nics_per_server, attach_to, sources, (uplink,),
                              name, "-rail", "net.spine", to_leaf)
