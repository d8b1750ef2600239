"""Synthetic traces for calibration tests: the simulator itself, with known parameters, as the "executor"."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dicesim.calibrate.profile_fit import cpu_base_profile
from dicesim.scenario import make_scenario
from dicesim.sim.api import prepare
from dicesim.sim.engine.engine import run_engine
from dicesim.sim.costs.profile import OP_KINDS, HardwareProfile
from dicesim.topology import save_toml, single_switch
from dicesim.trace import TraceMeta, write_trace

TRUE_LAUNCH_S = {"embed": 40e-6, "attention": 30e-6, "gate": 20e-6, "experts": 25e-6, "shared_expert": 15e-6,
                 "local_combine": 10e-6, "final": 35e-6}
TRUE_EFF = {"embed": 0.5, "attention": 0.8, "gate": 0.3, "experts": 0.9, "shared_expert": 1.0,
            "local_combine": 0.2, "final": 0.6}
TRUE_PEAK_TFLOPS = 0.02  # 20 GFLOP/s: a slow CPU, so FLOPs matter next to the launch costs
TRUE_A2A_BASE_S, TRUE_COUNTS_BASE_S = 50e-6, 30e-6
TRUE_BW_BPS, TRUE_EDGE_LAT_S = 2e8, 2e-6


def true_profile(interference: float = 0.0, comm_interference: float = 0.0) -> HardwareProfile:
    """A compute-bound CPU-like profile with every number known; host costs zero (host = compute thread);
    memory bandwidth at the top of its plausible range (dicesim.limits.PHYSICAL), so memory never limits."""
    ops = {k: {"compute_eff": TRUE_EFF[k], "mem_eff": 1.0, "launch_s": TRUE_LAUNCH_S[k]} for k in OP_KINDS}
    return cpu_base_profile().with_updates(
        name="truth", peak_tflops=TRUE_PEAK_TFLOPS, mem_bw_GBps=1e5, ops=ops, interference=interference,
        comm_interference=comm_interference,
        collective_base_s={"all_to_all": TRUE_A2A_BASE_S, "count_exchange": TRUE_COUNTS_BASE_S})


def synthetic_traces(out: Path, *, profile: HardwareProfile, world_size: int = 2, batches=(1, 3),
                     strategies=("sync", "displaced"), steps: int = 3, model: str = "tiny",
                     image_size: int = 32) -> list[Path]:
    """Simulate every (batch, strategy) with ``profile`` and write its events as an executor would."""
    G = single_switch(world_size, TRUE_BW_BPS, TRUE_EDGE_LAT_S, link="cpu-loopback", gpu="cpu", switch_kind="cpu")
    out.mkdir(parents=True, exist_ok=True)
    topo = out / "truth-topology.toml"
    save_toml(G, topo)
    paths = []
    for b in batches:
        for s in strategies:
            sc = make_scenario(model=model, batch=b, image_size=image_size, steps=steps, dtype="fp32",
                               strategy=s, world_size=world_size, topology=str(topo))
            spec = prepare(sc, profile=profile, graph=G, record=True).spec
            raw = run_engine(spec)
            hist_WTLE = np.asarray(spec.routing.counts_LTWE).transpose(2, 1, 0, 3)
            meta = TraceMeta(source="sim", scenario=sc.model_dump(mode="json"), strategy=s, world_size=world_size,
                             model=model, backend="sim", device="cpu",
                             extra={"router_hist": hist_WTLE.tolist(), "router_hist_axes": ["rank", "step", "layer", "expert"]})
            paths.append(write_trace(raw.events, meta, out, f"syn-w{world_size}-b{b}-{s}")["parquet"])
    return paths
