"""Interconnect topologies as plain networkx graphs (no simulation objects).

Build one with a preset (``get_topology("dgx-h100")``), a builder (``ring``, ``single_switch``,
``multi_node`` ...) or a .graphml/.toml file; route GPU-to-GPU traffic with ``route`` or, for
many look-ups, one ``all_pairs_routes`` table per graph. The data model is described in
``dicesim.topology.graph`` and docs/topologies.md.
"""

from dicesim.errors import TopologyError
from dicesim.topology.builders import (
    fully_connected,
    multi_node,
    nvswitch_server,
    pcie_server,
    rail_fabric,
    ring,
    single_switch,
)
from dicesim.topology.graph import (
    EDGE_ATTRS,
    GPU_KEYS,
    GRAPH_ATTRS,
    NODE_KINDS,
    Edge,
    LinkSpec,
    add_device,
    add_gpu,
    add_link,
    gpu_nodes,
    new_topology,
    num_servers,
    path_bottleneck_Bps,
    path_latency_s,
    rank_node,
    world_size,
)
from dicesim.topology.derive import derive_topology, machine_name, parse_bandwidths
from dicesim.topology.io import load_topology_file, save_graphml, save_toml
from dicesim.topology.presets import PRESETS, SCALED, SCALED_NAMES, TOPOLOGY_NAMES, get_topology, topology_gpus
from dicesim.topology.routing import Route, RouteTable, all_pairs_routes, check_routable, group_routes, route
from dicesim.topology.summary import describe, gpu_table, links_table, summary_line
from dicesim.topology.validate import validate_topology

__all__ = [
    "EDGE_ATTRS",
    "GPU_KEYS",
    "GRAPH_ATTRS",
    "NODE_KINDS",
    "PRESETS",
    "SCALED",
    "SCALED_NAMES",
    "TOPOLOGY_NAMES",
    "Edge",
    "LinkSpec",
    "Route",
    "RouteTable",
    "TopologyError",
    "add_device",
    "add_gpu",
    "add_link",
    "all_pairs_routes",
    "check_routable",
    "derive_topology",
    "describe",
    "fully_connected",
    "get_topology",
    "topology_gpus",
    "gpu_nodes",
    "gpu_table",
    "group_routes",
    "links_table",
    "load_topology_file",
    "machine_name",
    "multi_node",
    "new_topology",
    "num_servers",
    "nvswitch_server",
    "parse_bandwidths",
    "path_bottleneck_Bps",
    "path_latency_s",
    "pcie_server",
    "rank_node",
    "rail_fabric",
    "ring",
    "route",
    "save_graphml",
    "save_toml",
    "single_switch",
    "summary_line",
    "validate_topology",
    "world_size",
]
