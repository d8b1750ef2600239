"""One call from a scenario to a :class:`~dicesim.sim.metrics.SimResult`.

``simulate(scenario)`` or ``simulate(model="G/2", strategy="dice", world_size=8, ...)``
builds the plan, workload, routing, topology and profile, runs the engine once and
assembles the metrics. Everything is deterministic for the scenario's seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from dicesim.collector import collector_paused
from dicesim.models import block_workload
from dicesim.plan import Plan, PlanCache, build_plan, layout_for, rank_workload
from dicesim.plan.memory import MemoryEstimate, estimate_memory
from dicesim.scenario import Scenario, check_run_size, make_scenario
from dicesim.sim.costs.costmodel import CostModel
from dicesim.sim.engine.runspec import EngineSpec
from dicesim.sim.fold import run_folded
from dicesim.sim.metrics import SimResult, build_result
from dicesim.sim.sample import SAMPLE_ABOVE, predicted_totals
from dicesim.sim.stepsample import expand_steps, plan_step_sample, predicted_step_totals
from dicesim.sim.costs.profile import HardwareProfile, get_profile, profile_for_gpu
from dicesim.sim.costs.routing import TokenRouting, build_routing
from dicesim.topology import get_topology
from dicesim.topology.cache import TopologyCache


@dataclass(frozen=True)
class Prepared:
    """The built inputs of one simulation (exposed for tests, calibration and sweeps)."""

    scenario: Scenario
    spec: EngineSpec

    @property
    def plan(self) -> Plan:
        return self.spec.plan

    @property
    def routing(self) -> TokenRouting:
        return self.spec.routing

    def memory(self, held_TW: dict[str, Any] | None = None) -> MemoryEstimate:
        """Per-GPU memory of this run against the profile's GPU memory (no simulation needed);
        ``held_TW``: the family's ``memory_TW`` of this run, when the caller has it already."""
        s, sc = self.spec, self.scenario
        return estimate_memory(s.plan, s.layout, s.cost.workload, image_tokens=sc.preset().tokens_per_image(
            sc.image_size), routing=s.routing, row_nbytes=s.row_nbytes,
            capacity_bytes=s.profile.memory_capacity_bytes, held_TW=held_TW)


def resolve_profile(profile: HardwareProfile | str | None, scenario: Scenario, G: nx.DiGraph) -> HardwareProfile:
    """Explicit profile > the scenario's profile file > the topology's GPU's best-evidenced built-in profile
    (measured where the project has measurements of that GPU, else its datasheet profile); with
    ``scenario.interference`` False, its two interference factors set to 0."""
    if isinstance(profile, HardwareProfile):
        prof = profile
    elif profile is not None:
        prof = get_profile(profile)
    elif scenario.profile:
        prof = get_profile(scenario.profile)
    else:
        prof = profile_for_gpu(str(G.graph.get("gpu") or G.graph.get("name", "")))
    if not scenario.interference:  # the switch of docs/model.md "Interference": both directions off
        prof = prof.with_updates(interference=0.0, comm_interference=0.0)
    return prof


def prepare(scenario: Scenario | None = None, *, profile: HardwareProfile | str | None = None,
            graph: nx.DiGraph | None = None, record: bool = False, sampling: str | None = None,
            histogram: np.ndarray | None = None, merge_compute: bool = True, plans: PlanCache | None = None,
            topologies: TopologyCache | None = None, **fields: object) -> Prepared:
    """Build everything :func:`simulate` runs, without running it. Arguments as :func:`simulate`."""
    if scenario is None:
        sc = make_scenario(**fields)
    elif fields:
        sc = make_scenario(**{**dict(scenario), **fields})
    else:
        sc = scenario
    preset = sc.preset()
    wl = rank_workload(sc.strategy, block_workload(preset, batch=sc.batch, image_px=sc.image_size, cfg=sc.cfg,
                                                   dtype=sc.dtype), sc.world_size)
    G = graph if graph is not None else topologies.graph(sc.topology) if topologies is not None else get_topology(
        sc.topology)
    prof = resolve_profile(profile, sc, G)
    layout = layout_for(sc.strategy, sc.world_size, preset.num_experts, group_layout=sc.placement)
    plan = plans.get(sc.strategy, preset.depth, sc.steps) if plans is not None else build_plan(
        sc.strategy, preset.depth, sc.steps)
    sampling = sampling or getattr(sc.routing, "sampling", None) or "expected"
    if sampling != sc.routing.sampling:  # the keyword draws tables the scenario's check did not count
        check_run_size(sc.model_copy(update={"routing": sc.routing.model_copy(update={"sampling": sampling})}))
    routing = build_routing(sc.routing, layout.placement, num_layers=preset.depth, num_steps=sc.steps,
                            tokens_per_rank=wl.tokens, top_k=preset.top_k, seed=sc.seed, sampling=sampling,
                            histogram=histogram)
    cost = CostModel(prof, wl, experts_on_rank=layout.experts_per_rank)
    spec = EngineSpec(plan=plan, layout=layout, cost=cost, routing=routing, graph=G, profile=prof,
                      row_nbytes=wl.row_nbytes(), record=record, merge_compute=merge_compute, plans=plans,
                      topologies=topologies)
    return Prepared(scenario=sc, spec=spec)


def simulate(scenario: Scenario | None = None, *, profile: HardwareProfile | str | None = None,
             graph: nx.DiGraph | None = None, record: bool = False, sampling: str | None = None,
             histogram: np.ndarray | None = None, merge_compute: bool = True, fold: bool = True,
             reuse: bool = True, sample_groups: int | None = None, sample_steps: int | None = None,
             plans: PlanCache | None = None, topologies: TopologyCache | None = None, **fields: object) -> SimResult:
    """Simulate one scenario and return its :class:`SimResult`.

    ``scenario``: a :class:`~dicesim.scenario.Scenario`; or give its fields as keywords
    (``model``, ``strategy`` (preset name or Strategy), ``world_size``, ``topology``, ...);
    keywords given with a scenario override its fields. ``profile``: a HardwareProfile, a
    built-in name or a TOML path (default: the scenario's, else the topology GPU's built-in).
    ``graph``: use this topology graph instead of ``scenario.topology``. ``record``: keep the
    event table (slower). ``sampling``: ``"expected"`` (default) or ``"multinomial"`` routed
    counts. ``histogram``: a router histogram array for ``routing.kind = "histogram"``.
    ``fold``: simulate one of each kind of equivalent, link-isolated expert-parallel group and copy
    it to the others (:mod:`dicesim.sim.fold`); ``reuse``: take repeated windows between group-wide
    cuts from the record (:mod:`dicesim.sim.engine.reuse`). Both are exact (equal to the full run up to
    float round-off); ``meta["fold"]`` and ``meta["reuse"]`` say whether and how much they applied.
    ``sample_groups``: with sampled routing, groups that are alike but carry different draws do not
    fold; more than :data:`~dicesim.sim.sample.SAMPLE_ABOVE` of them are then sampled (None), ``k`` of
    them simulated (``k``) or all (0). A sampled run's total is a prediction with an interval
    (``step_latency_low_s`` / ``_high_s`` in the totals, ``meta["sample"]``; :mod:`dicesim.sim.sample`).
    ``sample_steps``: with sampled routing every step carries new draws and no window repeats; on
    a sample of the steady steps is simulated after the warm-up and the rest predicted (None, the
    default: :data:`~dicesim.sim.stepsample.DEFAULT_STEPS` of them, where that saves half the steady
    steps and groups are not sampled; ``k``: at least ``k``; 0: every step, exact). The
    total is then a prediction with an interval (``step_latency_low_s`` / ``_high_s``,
    ``steps_simulated`` in the totals, ``meta["steps"]``; :mod:`dicesim.sim.stepsample`; the interval
    allows for steps correlated over the plan's carry depth; its coverage is tested against full runs,
    docs/model.md). Expected routing is never sampled: its steps repeat and window reuse is exact.
    ``plans``: a :class:`~dicesim.plan.PlanCache` of the caller's that many simulations share;
    ``topologies``: likewise a :class:`~dicesim.topology.cache.TopologyCache` (graphs and routes).
    """
    with collector_paused():  # a run allocates ~10^5 short-lived objects (dicesim.collector)
        prep = prepare(scenario, profile=profile, graph=graph, record=record, sampling=sampling,
                       histogram=histogram, merge_compute=merge_compute, plans=plans, topologies=topologies,
                       **fields)
        spec, sc = prep.spec, prep.scenario
        steps, why = _step_sample(spec, sample_steps, sample_groups, sc.seed)
        raw, shortcuts = run_folded(steps.spec if steps else spec, fold=fold, reuse=reuse,
                                    sample_groups=sample_groups, seed=sc.seed)
        if steps is not None:
            raw, shortcuts["steps"] = expand_steps(raw, steps)
        else:
            shortcuts["steps"] = {"applied": False, "reason": why}
        meta = {"scenario": sc.model_dump(mode="json"), "profile": spec.profile.name,
                "profile_basis": spec.profile.basis, "profile_desc": spec.profile.describe(),
                "interference": sc.interference,
                "memo_hits": raw.memo_hits, "memo_misses": raw.memo_misses, "sim_events": raw.sim_events, **shortcuts}
        held = spec.plan.rules.memory_TW(spec.plan, spec.routing, spec.row_nbytes)  # read by both, derived once
        res = build_result(raw, plan=spec.plan, routing=spec.routing, row_nbytes=spec.row_nbytes, graph=spec.graph,
                           label=sc.label(), meta=meta, memory=prep.memory(held), held_TW=held)
        if "sample" in shortcuts:
            res = dataclasses.replace(res, totals=predicted_totals(res.totals, shortcuts["sample"], sc.steps))
        elif shortcuts["steps"]["applied"]:
            res = dataclasses.replace(res, totals=predicted_step_totals(res.totals, shortcuts["steps"], sc.steps))
        return res


def _step_sample(spec: EngineSpec, k: int | None, sample_groups: int | None, seed: int):
    """The short run of :mod:`dicesim.sim.stepsample`, or None and why not. The two sampling
    shortcuts do not combine: where groups would be sampled, every step of the sample is simulated."""
    if sample_groups != 0 and len(spec.layout.groups()) > SAMPLE_ABOVE:
        return None, "groups sampled instead (dicesim.sim.sample)"
    return plan_step_sample(spec, k, seed)

