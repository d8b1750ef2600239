"""What a run does, in words: where each group of exchanging GPUs lives, which links its collectives
cross (the network or not), how much each GPU sends, and why a what-if did or did not move the result.

Pure functions of the scenario and its topology graph (routes by :func:`dicesim.topology.group_routes`,
the layout by the strategy's family); nothing is simulated here.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from dicesim.models import block_workload
from dicesim.plan import layout_for, rank_workload
from dicesim.scenario import Scenario
from dicesim.sim.network.nccl import link_transport
from dicesim.strategy.base import DEFAULT_FAMILY
from dicesim.topology import group_routes
from dicesim.topology.cache import TopologyCache

#: the hardware family of the published collective set whose errors a transport inherits
#: (traces/published: consumer-pcie covers PCIe with and without peer-to-peer, nvswitch NVLink,
#: infiniband the NIC-to-NIC network; RoCE has its own family once the set measures it)
TRANSPORT_FAMILY: dict[str, str] = {"shm": "consumer-pcie", "pcie_p2p": "consumer-pcie", "nvlink": "nvswitch",
                                    "net": "infiniband", "deepep_nvlink": "nvswitch"}
#: a family the published set may not measure yet, and the measured family that stands in for it
STAND_IN: dict[str, str] = {"roce": "infiniband"}
_NETWORK_NODES = ("nic", "net_switch")

#: the collective Ulysses' facts name (the sequence family's head all-to-all)
HEAD_A2A = "head all-to-all"
#: the collective ring attention's facts name (the sequence family's K/V passes to the next rank)
KV_RING = "K/V ring pass"
#: USP's facts name both (the head all-to-alls inside a Ulysses group, the K/V passes around a ring group)
USP_COLLECTIVES = "head all-to-alls and K/V ring passes"


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """The layout and traffic of one scenario (see the module docstring)."""

    machine: str
    world_size: int
    groups: tuple[tuple[int, ...], ...]
    group_servers: tuple[tuple[int, ...], ...]
    placement: str
    expert_parallel: bool
    replicated: bool
    num_experts: int
    experts_per_rank: int
    link_classes: tuple[str, ...]
    transports: tuple[str, ...]
    families: tuple[str, ...]
    crosses_network: bool
    cpu: bool
    rows_per_rank: int
    a2a_nbytes_per_rank: float
    #: the family's exchange and what it carries: the all-to-alls of expert traffic, or (sequence
    #: parallelism) the all-gathers of K/V slices
    collective: str = "all-to-all"
    traffic: str = "expert traffic"

    def sentences(self) -> list[str]:
        """The facts as sentences every output prints under "What the run does"."""
        if self.replicated:
            return [f"Every GPU holds all {self.num_experts} experts (data parallel): no all-to-all, so no link "
                    "carries expert traffic."]
        n, size = len(self.groups), len(self.groups[0])
        kind = "expert-parallel group" if self.expert_parallel else (
            "sequence-parallel group" if self.collective != "all-to-all" else "exchange group")
        spans = sorted({len(s) for s in self.group_servers})
        where = (f"inside one server each (servers {_ids(sorted({s[0] for s in self.group_servers}))})"
                 if spans == [1] else f"each spread over {spans[-1]} servers")
        lay = f"{n} {self.placement} {kind}s of {size} GPUs, {where}" if n > 1 else \
              f"one {kind} of all {size} GPUs" + ("" if spans == [1] else f" over {spans[-1]} servers")
        held = (f"; each GPU holds {self.experts_per_rank} of the {self.num_experts} experts"
                if self.expert_parallel else "")
        if self.collective != "all-to-all":
            held = f"; each GPU holds all {self.num_experts} experts and 1/{size} of every image's tokens"
        out = [f"{lay}{held}."]
        links = ", ".join(self.link_classes) or "no link"
        net = f"the network carries {'' if self.crosses_network else 'no '}{self.traffic}"
        if self.collective == "all-to-all":
            out.append(f"Its all-to-alls cross {links}: {net}; each GPU sends about "
                       f"{self.a2a_nbytes_per_rank / 2**20:.1f} MiB per all-to-all ({self.rows_per_rank} token "
                       "copies).")
        elif self.collective == HEAD_A2A:
            out.append(f"Its {self.collective}s cross {links}: {net}; each GPU sends about "
                       f"{self.a2a_nbytes_per_rank / 2**20:.1f} MiB per attention layer (Q, K, V and the attention "
                       f"output of its {self.rows_per_rank} tokens, four all-to-alls: 1/{size} of each to each "
                       f"of {size - 1} ranks).")
        elif self.collective == USP_COLLECTIVES:
            out.append(f"Its {self.collective} cross {links}: {net}; each GPU sends about "
                       f"{self.a2a_nbytes_per_rank / 2**20:.1f} MiB per attention layer (USP: Q, K, V and the output "
                       f"of its {self.rows_per_rank} tokens all-to-all'd inside its Ulysses group, then K/V blocks "
                       "passed around its ring group under the attention on the block in hand).")
        elif self.collective == KV_RING:
            out.append(f"Its {self.collective}es cross {links}: {net}; each GPU sends about "
                       f"{self.a2a_nbytes_per_rank / 2**20:.1f} MiB per attention layer (K and V of its "
                       f"{self.rows_per_rank} tokens, {size - 1} passes to the next GPU in the ring, each under the "
                       "attention on the block in hand).")
        else:
            out.append(f"Its {self.collective}s cross {links}: {net}; each GPU sends about "
                       f"{self.a2a_nbytes_per_rank / 2**20:.1f} MiB per attention layer (K and V of its "
                       f"{self.rows_per_rank} tokens, ring all-gather: to {size - 1} ranks in turn).")
        if n > 1 and not self.crosses_network and self.placement == "contiguous" and _multi_server(self):
            out.append("With --placement strided each group would take one GPU per server in turn, and its "
                       "all-to-alls would cross the network.")
        return out


def _ids(values: list[int]) -> str:
    return ", ".join(str(v) for v in values) if len(values) <= 8 else f"{values[0]}..{values[-1]}"


def _multi_server(f: RunFacts) -> bool:
    return len({s for servers in f.group_servers for s in servers}) > 1


def run_facts(scenario: Scenario, G: nx.DiGraph, topologies: TopologyCache | None = None) -> RunFacts:
    """The facts of ``scenario`` on topology graph ``G`` (routes searched in ``topologies`` when given)."""
    preset = scenario.preset()
    layout = layout_for(scenario.strategy, scenario.world_size, preset.num_experts, group_layout=scenario.placement)
    groups = layout.groups()
    server = {int(d["rank"]): int(d.get("server", 0)) for _, d in G.nodes(data=True) if d.get("kind") == "gpu"}
    p2p = bool(G.graph.get("p2p", True))
    classes: set[str] = set()
    families: set[str] = set()
    network = False
    # the sequence family's ranks hold every expert (a replicated placement) yet gather K/V in their group
    sequence = layout.token_split > 1
    exchanging = [g for g in groups if len(g) > 1] if sequence or not layout.replicated else []
    for table in (topologies.routes if topologies is not None else group_routes)(G, exchanging):
        for path in table.routes.values():
            for u, v in path:
                cls = str(G.edges[u, v].get("link", ""))
                classes.add(cls)
                at_nic = G.nodes[u].get("kind") in _NETWORK_NODES or G.nodes[v].get("kind") in _NETWORK_NODES
                network = network or at_nic
                families.add(_family(cls, p2p, at_nic))
    families.discard("")
    transports = sorted({t for c in classes if (t := link_transport(c, p2p)) is not None})
    wl = block_workload(preset, batch=scenario.batch, image_px=scenario.image_size, cfg=scenario.cfg,
                        dtype=scenario.dtype)
    size = len(groups[0]) if groups else 1
    rows = wl.routed_rows
    nbytes = 0.0 if layout.replicated else rows * wl.row_nbytes() * (size - 1) / size
    seq_kind = {"collective": "K/V all-gather", "traffic": "K/V traffic"}
    if sequence:  # K and V of this rank's slice, each sent to the size-1 other ranks around the ring
        rows = rank_workload(scenario.strategy, wl, scenario.world_size).tokens
        nbytes = 2.0 * rows * wl.row_nbytes() * (size - 1)
        if layout.head_split > 1 and layout.ring_passes:  # USP: Ulysses' bytes in its group, ring's in its ring
            u, r = layout.head_split, layout.ring_size
            nbytes = 4.0 * rows * wl.row_nbytes() * (u - 1) / u + 2.0 * rows * wl.row_nbytes() * (r - 1)
            seq_kind = {"collective": USP_COLLECTIVES, "traffic": "attention traffic"}
        elif layout.head_split > 1:  # Ulysses: q, k, v and the output, (size-1)/size of each leaves the rank
            nbytes = 4.0 * rows * wl.row_nbytes() * (size - 1) / size
            seq_kind = {"collective": HEAD_A2A, "traffic": "attention traffic"}
        elif layout.ring_passes:  # ring attention: the same bytes as the ring all-gather, to the next rank only
            seq_kind = {"collective": KV_RING, "traffic": "K/V traffic"}
    return RunFacts(
        machine=str(G.graph.get("name", scenario.topology)), world_size=scenario.world_size, groups=groups,
        group_servers=tuple(tuple(sorted({server.get(r, 0) for r in g})) for g in groups),
        placement=scenario.placement, expert_parallel=scenario.strategy.family == DEFAULT_FAMILY,
        replicated=layout.replicated and not sequence, num_experts=preset.num_experts,
        experts_per_rank=layout.experts_per_rank,
        link_classes=tuple(sorted(classes)), transports=tuple(transports),
        families=tuple(sorted(families)),
        crosses_network=network, cpu=str(G.graph.get("gpu", "")) == "cpu", rows_per_rank=rows,
        a2a_nbytes_per_rank=nbytes, **(seq_kind if sequence else {}))


def machine_families(G: nx.DiGraph, world_size: int, topologies: TopologyCache | None = None) -> tuple[str, ...]:
    """The published families of the links between the ``world_size`` GPUs a run uses, as if they all
    exchanged: a run that sends nothing (data parallelism) still runs on that machine, whose whole steps
    the step level may have measured."""
    p2p = bool(G.graph.get("p2p", True))
    fams: set[str] = set()
    route = topologies.routes if topologies is not None else group_routes
    for table in route(G, [tuple(range(world_size))] if world_size > 1 else []):
        for path in table.routes.values():
            for u, v in path:
                at_nic = G.nodes[u].get("kind") in _NETWORK_NODES or G.nodes[v].get("kind") in _NETWORK_NODES
                fams.add(_family(str(G.edges[u, v].get("link", "")), p2p, at_nic))
    fams.discard("")
    return tuple(sorted(fams))


def _family(link_class: str, p2p: bool, at_nic: bool) -> str:
    """The published family a hop's errors come from: RoCE or InfiniBand for network links, the network
    (``""``, resolved by the caller) for the PCIe hop into or out of a NIC (GPUDirect's hop is part of the
    network path), else the family of the hop's transport."""
    if link_class.lower().startswith("roce"):
        return "roce"
    if link_transport(link_class, p2p) == "net":
        return "infiniband"
    if at_nic:
        return ""
    return TRANSPORT_FAMILY.get(link_transport(link_class, p2p) or "", "")


#: scenario fields a what-if flag changes, with how to say them
_WHAT_IF_FIELDS = ("num_experts", "placement", "dtype", "topology", "world_size", "batch", "image_size", "steps",
                   "model", "profile", "routing")


def what_if_changes(base: Scenario, scenario: Scenario) -> list[str]:
    """``field a -> b`` for every field of :data:`_WHAT_IF_FIELDS` that differs (the expert count as
    the models' effective counts)."""
    out = []
    for f in _WHAT_IF_FIELDS:
        a, b = getattr(base, f), getattr(scenario, f)
        if f == "num_experts":
            a, b = base.preset().num_experts, scenario.preset().num_experts
        if f == "routing":
            a, b = a.kind, b.kind
        if a != b:
            out.append(f"{f} {a} -> {b}")
    return out


#: a what-if that moves the step latency less than this (relative) "changed nothing" worth a reason
NEGLIGIBLE = 0.005


def what_if_note(changes: list[str], base_facts: RunFacts, facts: RunFacts, base_step_s: float,
                 step_s: float) -> str:
    """One paragraph: how far the what-if moved the step latency, and when it (nearly) did not, why."""
    if not changes:
        return ""
    what = ", ".join(changes)
    rel = step_s / base_step_s - 1 if base_step_s > 0 else 0.0
    moved_by = f"step latency {base_step_s * 1e3:.2f} -> {step_s * 1e3:.2f} ms ({rel:+.2%})"
    if abs(rel) >= NEGLIGIBLE:
        return f"What-if ({what}): {moved_by}."
    same, moved = [], []
    per = "all-to-all" if facts.collective == "all-to-all" else "attention layer"
    for label, a, b in (
        (f"token {'copies' if per == 'all-to-all' else 'slice'} each GPU sends per {per}", base_facts.rows_per_rank,
         facts.rows_per_rank),
        (f"bytes each GPU sends per {per}", round(base_facts.a2a_nbytes_per_rank), round(facts.a2a_nbytes_per_rank)),
        (f"links the {facts.collective}s cross", base_facts.link_classes, facts.link_classes),
        ("GPUs per exchange group", len(base_facts.groups[0]), len(facts.groups[0])),
        ("servers each group spans", base_facts.group_servers[0:1], facts.group_servers[0:1]),
    ):
        (same if a == b else moved).append(label if a == b else f"{label} ({a} -> {b})")
    held = ""
    if base_facts.experts_per_rank != facts.experts_per_rank:
        held = (f" What does change is what each GPU holds: {facts.experts_per_rank} experts instead of "
                f"{base_facts.experts_per_rank} (weight memory, and weight reads that the compute hides: the expert "
                "work follows the token copies a GPU receives, top-k of every token whatever the expert count).")
    if facts.collective != "all-to-all" and any(c.startswith("placement") for c in changes):
        held += " Placement forms expert-parallel groups; sequence parallelism gathers over all GPUs in one group."
    elif len(base_facts.groups) == 1 and len(facts.groups) == 1 and any(c.startswith("placement") for c in changes):
        held += " Placement only matters with more GPUs than experts (several groups); here there is one group."
    why = f"the {', the '.join(same)} are the same" if same else "what changed cancels out"
    extra = f"; changed: {', '.join(moved)}" if moved else ""
    return f"What-if ({what}) changed almost nothing, {moved_by}: {why}{extra}.{held}"
