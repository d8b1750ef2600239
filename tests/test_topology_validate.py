"""validate_topology: each broken graph gives its own one-line message naming the problem."""

from __future__ import annotations

import math

import networkx as nx
import pytest

from dicesim.errors import TopologyError
from dicesim.topology import get_topology, validate_topology


def _broken(mutate):
    G = get_topology("dgx-h100")
    mutate(G)
    return G


def _split(G):
    """Remove GPU 7's links: it can no longer reach anyone."""
    G.remove_edges_from([("n0.gpu7", "n0.nvsw0"), ("n0.nvsw0", "n0.gpu7")])


CASES = [
    (lambda G: G.remove_nodes_from([f"n0.gpu{i}" for i in range(8)]), "no GPU nodes"),
    (lambda G: G.nodes["n0.gpu3"].update(rank=2), "duplicate rank 2 on n0.gpu2, n0.gpu3"),
    (lambda G: G.nodes["n0.gpu7"].update(rank=9), "rank 7 is missing"),
    (lambda G: G.nodes["n0.gpu7"].pop("rank"), "GPU n0.gpu7 needs a non-negative integer 'rank'"),
    (lambda G: G.nodes["n0.gpu1"].update(rank=True), "GPU n0.gpu1 needs a non-negative integer 'rank'"),
    (lambda G: G.nodes["n0.nvsw0"].update(kind="switch"),
     "node n0.nvsw0 has unknown kind 'switch' (allowed: gpu, nvswitch, pcie_switch, cpu, host_mem, nic, net_switch)"),
    (_split, "GPUs n0.gpu0 and n0.gpu7 are not connected"),
    (lambda G: G.remove_edge("n0.nvsw0", "n0.gpu7"), "GPUs n0.gpu0 and n0.gpu7 are not connected"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].update(bw_Bps=0.0), "edge n0.gpu2->n0.nvsw0 has bw_Bps=0.0"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].update(bw_Bps=math.inf), "edge n0.gpu2->n0.nvsw0 has bw_Bps=inf"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].update(latency_s=-1e-6), "has latency_s=-1e-06"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].update(latency_s="1us"), "has latency_s='1us'"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].pop("latency_s"), "edge n0.gpu2->n0.nvsw0 is missing latency_s"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].update(source="nowhere"), "cites source 'nowhere'"),
    (lambda G: G.edges["n0.gpu2", "n0.nvsw0"].update(link=""), "needs a link class string"),
    (lambda G: G.graph.update(p2p="yes"), "graph attribute 'p2p' must be true or false"),
    (lambda G: G.graph.update(gpus_per_node=4), "server 0 has 8 GPUs but graph attribute gpus_per_node is 4"),
    (lambda G: G.graph.pop("name"), "graph attribute 'name' must be a non-empty string"),
    (lambda G: G.add_edge("n0.gpu0", "n0.gpu0", bw_Bps=1.0, latency_s=1.0, link="x", source="nvlink4-h100"),
     "self-loop"),
]


@pytest.mark.parametrize("mutate, problem", CASES)
def test_each_problem_has_its_one_line_message(mutate, problem):
    with pytest.raises(TopologyError) as exc:
        validate_topology(_broken(mutate))
    msg = str(exc.value)
    assert "\n" not in msg and problem in msg


def test_non_contiguous_server_ranks():
    G = get_topology("tiny-2x2-ib")
    G.nodes["n0.gpu1"]["rank"], G.nodes["n1.gpu1"]["rank"] = 3, 1  # server 0 holds ranks 0 and 3
    with pytest.raises(TopologyError, match="ranks of server 0 are not contiguous"):
        validate_topology(G)


def test_rejects_non_digraphs():
    with pytest.raises(TopologyError, match="networkx.DiGraph, got Graph"):
        validate_topology(nx.Graph())
    with pytest.raises(TopologyError, match="got MultiDiGraph"):
        validate_topology(nx.MultiDiGraph(get_topology("tiny-ring4")))
