"""How far to trust one simulated run: its error band, the parameters on its bottleneck, its facts.

:func:`assess_run` reads what the run already produced (headline numbers, the links table) and
what its inputs say about themselves (link citations, the NCCL model's fit notes, the profile's
provenance, the accuracy file), and returns an :class:`Assessment`:

- ``band``: :func:`dicesim.evidence.band_for` for the run's hardware families;
- ``assumptions``: every parameter the run's all-to-alls and compute rest on, with its value,
  status (measured, fitted, cited, assumed) and source, marked when it sits on the bottleneck:
  the busiest link classes (:func:`dicesim.sim.metrics.busiest_links`, within 10% of the top
  utilisation), the compute profile when the step is mostly compute, interference when
  communication overlaps compute;
- ``facts``: :class:`~dicesim.trust.facts.RunFacts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import pandas as pd

from dicesim.evidence import Assumption, ErrorBand, Evidence, band_for, load_evidence
from dicesim.scenario import Scenario
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.metrics import busiest_links
from dicesim.sim.network.nccl import NcclModel, builtin_nccl_model, link_transport
from dicesim.topology.cache import TopologyCache
from dicesim.trust.facts import STAND_IN, RunFacts, machine_families, run_facts
from dicesim.trust.provenance import compute_status, efficiency_status, interference_status, link_status, profile_basis

#: links within this share of the top utilisation count as the bottleneck
BOTTLENECK_SHARE = 0.9


@dataclass(frozen=True, kw_only=True)
class Assessment:
    """Band, assumptions and facts of one run (see the module docstring)."""

    band: ErrorBand
    assumptions: tuple[Assumption, ...]
    facts: RunFacts
    #: (link class, citation key) of the links on the bottleneck: each cited figure is one parameter
    bottleneck: tuple[tuple[str, str], ...]

    @property
    def bottleneck_classes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for c, _ in self.bottleneck))


def bottleneck_links(links: pd.DataFrame, G: nx.DiGraph, ranked: pd.DataFrame | None = None
                     ) -> tuple[tuple[str, str], ...]:
    """(class, source) of the links whose utilisation is within :data:`BOTTLENECK_SHARE` of the busiest's
    (``ranked``: :func:`busiest_links` of ``links``, when the caller has it already)."""
    if links is None or not len(links) or float(links["utilisation"].max()) <= 0:
        return ()
    if ranked is None:
        ranked = busiest_links(links)
    top = ranked[ranked["utilisation"] >= BOTTLENECK_SHARE * float(ranked["utilisation"].iloc[0])]
    return tuple(dict.fromkeys((str(c), str(G.edges[u, v].get("source", "")))
                               for u, v, c in zip(top["src"], top["dst"], top["link_class"])))


def bottleneck_classes(links: pd.DataFrame, G: nx.DiGraph) -> tuple[str, ...]:
    """The classes of :func:`bottleneck_links`."""
    return tuple(dict.fromkeys(c for c, _ in bottleneck_links(links, G)))


def _gbps(values: list[float]) -> str:
    return " / ".join(f"{v / 1e9:g}" for v in sorted(set(values))) + " GB/s per direction"


def link_assumptions(G: nx.DiGraph, classes: tuple[str, ...], bottleneck: tuple[tuple[str, str], ...],
                     nccl: NcclModel) -> list[Assumption]:
    """One entry per (link class, source) the run's collectives cross, then one per transport efficiency."""
    by_source: dict[tuple[str, str], list[float]] = {}
    for _, _, d in G.edges(data=True):
        cls = str(d.get("link", ""))
        if cls in classes:
            by_source.setdefault((cls, str(d.get("source", ""))), []).append(float(d["bw_Bps"]))
    out = [Assumption(parameter=f"{cls} link bandwidth", value=_gbps(bws), status=link_status(G, src),
                      source=src, on_bottleneck=(cls, src) in bottleneck)
           for (cls, src), bws in sorted(by_source.items())]
    p2p = bool(G.graph.get("p2p", True))
    transports = {t: cls for cls in classes if (t := link_transport(cls, p2p)) is not None}
    for t, cls in sorted(transports.items()):
        status, note = efficiency_status(nccl, t)
        out.append(Assumption(parameter=f"NCCL efficiency on {t}", value=f"{nccl.bw_eff[t]:.3f} of line rate",
                              status=status, source=note,
                              on_bottleneck=any(link_transport(c, p2p) == t for c, _ in bottleneck)))
    return out


def _coverage_note(scenario: Scenario, facts: RunFacts, band: ErrorBand, evidence: Evidence) -> str:
    """What the band's evidence did not measure for this run: a collective kind the published set lacks
    (its all-reduce and all-to-all errors stand in), a strategy the CPU runs did not include."""
    if band.covers == "communication" and facts.collective != "all-to-all":
        return (f"; {facts.collective}s are not in the published set: the family's all-reduce and all-to-all "
                "errors stand in")
    cpu = evidence.cpu
    if band.covers == "step" and facts.cpu and cpu is not None and cpu.families \
            and scenario.strategy.name not in cpu.families:
        return f"; {scenario.strategy.name} was not among the held-out CPU runs: all runs' errors stand in"
    return ""


def assess_run(scenario: Scenario, G: nx.DiGraph, profile: HardwareProfile, summary: dict[str, Any],
               links: pd.DataFrame, *, nccl: NcclModel | None = None, evidence: Evidence | None = None,
               topologies: TopologyCache | None = None, ranked: pd.DataFrame | None = None) -> Assessment:
    """The :class:`Assessment` of a run of ``scenario`` on ``G`` with ``profile``; ``summary`` holds the
    simulator's totals (``step_latency_s``, ``comm_busy_s``, ``exposed_comm_s``, ``overlap_frac``);
    ``topologies``: the caller's route cache; ``ranked``: :func:`busiest_links` of ``links``, when at hand."""
    nccl = nccl or builtin_nccl_model()
    evidence = evidence if evidence is not None else load_evidence()
    facts = run_facts(scenario, G, topologies)
    steps = max(scenario.steps, 1)
    step_s = float(summary["step_latency_s"])
    exposed = float(summary.get("exposed_comm_s", 0.0)) / steps
    comm = float(summary.get("comm_busy_s", 0.0)) / steps
    # a run that crosses no link is still judged by its machine's whole-step figures
    families = facts.families or machine_families(G, scenario.world_size, topologies)
    band = band_for(step_s=step_s, comm_busy_step_s=comm, exposed_step_s=exposed, families=families,
                    evidence=evidence, compute_basis=profile_basis(profile), profile=profile.name, cpu=facts.cpu,
                    stand_in=STAND_IN)
    band = band.model_copy(update={"statement": band.statement + _coverage_note(scenario, facts, band, evidence)})
    neck = bottleneck_links(links, G, ranked)
    items = link_assumptions(G, facts.link_classes, neck, nccl)
    c_status, c_source = compute_status(profile)
    items.append(Assumption(parameter="compute throughput (profile)",
                            value=f"{profile.name} ({profile_basis(profile)})",
                            status=c_status, source=c_source, on_bottleneck=exposed < 0.5 * step_s))
    i_status, i_source = interference_status(profile)
    items.append(Assumption(parameter="compute slow-down while communicating", value=f"x{1 + profile.interference:g}",
                            status=i_status, source=i_source,
                            on_bottleneck=float(summary.get("overlap_frac", 0.0) or 0.0) > 0))
    return Assessment(band=band, assumptions=tuple(items), facts=facts, bottleneck=neck)
