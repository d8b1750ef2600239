"""Rebuild a traced run as a simulator scenario and simulate it with a calibrated profile.

The scenario comes from the trace's metadata (model, experts, batch, image size, CFG,
dtype, steps, strategy, world size). The topology is the CPU topology of the calibration
(or a given graph); routing is the *measured* one: the router histogram recorded per
(rank, step, layer, expert) becomes the simulator's routed counts directly, so every
(layer, step, sender, receiver) pair carries the rows it carried in the run. The scenario
itself says ``routing.kind = "histogram"`` with the per-layer histogram saved as ``.npy``,
so the same run can be replayed from a scenario file.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import networkx as nx
import numpy as np

from dicesim.calibrate.runs import TraceRun
from dicesim.calibrate.timeline import measured_routing
from dicesim.scenario import RoutingConfig, Scenario, make_scenario
from dicesim.sim.api import prepare
from dicesim.sim.engine.engine import run_engine
from dicesim.sim.metrics import SimResult, build_result
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.topology import save_toml


def router_histogram_LE(run: TraceRun) -> np.ndarray | None:
    """Copies routed to each expert per layer, summed over ranks and steps: ``[layers, experts]``."""
    if run.router_hist_WTLE is None:
        return None
    return run.router_hist_WTLE.sum(axis=(0, 1)).astype(float)


def scenario_of(run: TraceRun) -> Scenario:
    """The run's configuration as a Scenario, topology not checked (for range checks and labels)."""
    return Scenario(model=run.model, num_experts=run.num_experts, batch=run.batch, image_size=run.image_size,
                    steps=run.steps, cfg=run.cfg, dtype=run.dtype, world_size=run.world_size,
                    **({"strategy": run.strategy} if run.strategy is not None else {}))


def scenario_for(run: TraceRun, topology_path: str, histogram_path: str | None) -> Scenario:
    """The scenario a trace's metadata describes, on the given topology file."""
    routing = RoutingConfig(kind="histogram", histogram=histogram_path) if histogram_path else RoutingConfig()
    return make_scenario(model=run.model, num_experts=run.num_experts, batch=run.batch, image_size=run.image_size,
                         steps=run.steps, cfg=run.cfg, dtype=run.dtype, strategy=run.strategy,
                         world_size=run.world_size, topology=topology_path, routing=routing)


def simulate_run(run: TraceRun, profile: HardwareProfile, graph: nx.DiGraph, *,
                 workdir: str | Path | None = None, exact_routing: bool = True) -> SimResult:
    """Simulate ``run``'s configuration on ``graph`` with ``profile`` and the run's measured routing."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        topo = Path(tmp) / "topology.toml"
        save_toml(graph, topo)
        hist = router_histogram_LE(run)
        hist_path = None
        if hist is not None and hist.sum(axis=1).min() > 0:
            hist_path = str(Path(tmp) / "router_hist.npy")
            np.save(hist_path, hist)
        sc = scenario_for(run, str(topo), hist_path)
        prep = prepare(sc, profile=profile, graph=graph, histogram=hist if hist_path else None)
    spec = prep.spec
    routing = measured_routing(run) if exact_routing else None
    if routing is not None and routing.counts_LTWE.shape[:2] == (run.preset.depth, run.steps):
        spec = dataclasses.replace(spec, routing=routing)
    raw = run_engine(spec)
    return build_result(raw, plan=spec.plan, routing=spec.routing, row_nbytes=spec.row_nbytes, graph=spec.graph,
                        label=f"{run.stem} (simulated)",
                        meta={"scenario": sc.model_dump(mode="json"), "profile": profile.name})
