"""The GPU check of the overlap model: host-staged executor traces against their simulation.

Pure functions from traced runs and simulator results to the error table that
``benchmarks/gpu_overlap_check.py`` writes (docs/gpu-overlap-check.md):

- :func:`simulate_trace` rebuilds a host-staged trace's run (model, batch per emulated rank,
  emulated ranks, steps, strategy, and its routed copies per emulated rank) and simulates it
  on a one-GPU host-staged topology with a profile;
- :func:`refit_on_sync` fits what the ``sync`` runs measure and nothing else: per-op compute
  times (as ``dicesim calibrate``), the count exchange's latency and the all-to-all base
  latency (their median service times on synchronous layers, the copy time at the measured
  bandwidth taken off). Interference stays the profile's: it is what the check tests;
- :func:`check_rows` and :func:`markdown_table` compare step latency, exposed communication,
  compute slowed by copies and bytes through host memory, per strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from dicesim.calibrate.api import gather
from dicesim.calibrate.fit_compute import fit_compute
from dicesim.calibrate.measure import FIRST_STEP, measured_metrics, simulated_metrics
from dicesim.calibrate.profile_fit import anchors_from, build_profile, provenance_of
from dicesim.calibrate.runs import TraceRun
from dicesim.calibrate.overlap.slowdown import compute_slowdown
from dicesim.calibrate.timeline import collective_instances
from dicesim.errors import TraceError
from dicesim.report.units import unit_for
from dicesim.sim.hoststaged import simulate_host_staged
from dicesim.sim.metrics import SimResult
from dicesim.sim.costs.profile import HardwareProfile


def host_staged_meta(run: TraceRun) -> dict:
    """The ``host_staged`` block of a trace's metadata; TraceError for other traces."""
    hs = run.meta.extra.get("host_staged")
    if not isinstance(hs, dict) or "emulated_world_size" not in hs:
        raise TraceError(run.path, "not a host-staged trace (no host_staged metadata)")
    return hs


def simulate_trace(run: TraceRun, profile: HardwareProfile | str, topology: str | nx.DiGraph) -> SimResult:
    """Simulate ``run``'s configuration as a host-staged run (every op recorded)."""
    hs = host_staged_meta(run)
    return simulate_host_staged(model=run.model, num_experts=run.num_experts, strategy=run.strategy,
                                world_size=int(hs["emulated_world_size"]), batch=int(hs["batch_per_emulated_rank"]),
                                steps=run.steps, image_size=run.image_size, cfg=run.cfg, dtype=run.dtype,
                                profile=profile, topology=topology, record=True,
                                counts_WTLE=np.asarray(hs["router_hist"], dtype=np.int64))


def refit_on_sync(sync_runs: list[TraceRun], base: HardwareProfile, copy_bw_Bps: float) -> HardwareProfile:
    """``base`` with compute, count-exchange and all-to-all latency fitted on ``sync`` runs only."""
    if not sync_runs:
        raise TraceError("<runs>", "refitting needs the sync runs")
    samples, _, absorbed = gather(sync_runs)
    fits, _ = fit_compute(samples, anchors=anchors_from(base), interference=base.interference)
    work = {"flops": samples["flops"].to_numpy(), "nbytes": samples["nbytes"].to_numpy(),
            "rows": samples.loc[samples["kind"] == "experts", "rows"].to_numpy()}
    prof = build_profile(base, fits, None, None, provenance_of(sync_runs, work, stream="compute", comm=None),
                         name=f"{base.name}+sync-refit", absorbed_gaps=absorbed, n_runs=len(sync_runs))
    inst = [collective_instances(r) for r in sync_runs]
    counts = np.concatenate([i.loc[i["name"] == "counts", "service_s"].to_numpy() for i in inst])
    a2a = np.concatenate([(i["service_s"] - i["nbytes"] / copy_bw_Bps).to_numpy()[i["name"] != "counts"]
                          for i in inst])
    base_s = {"count_exchange": float(np.median(counts)) if counts.size else base.collective_base_s["count_exchange"],
              "all_to_all": max(float(np.median(a2a)), 0.0) if a2a.size else base.collective_base_s["all_to_all"]}
    cites = {**prof.citations, "collective_base_s": (
        f"median service time on the sync runs' layers: {counts.size} count exchanges, {a2a.size} all-to-alls "
        f"less their bytes at the measured {copy_bw_Bps / 1e9:.1f} GB/s (the route latency stays on the graph)")}
    return prof.with_updates(collective_base_s=base_s, citations=cites)


@dataclass(frozen=True)
class CheckRow:
    """Measured and simulated figures of one run (seconds, bytes, fractions)."""

    batch: int
    strategy: str
    meas_step_s: float
    sim_step_s: float
    meas_exposed_s: float
    sim_exposed_s: float
    meas_slowdown: float
    sim_slowdown: float
    meas_staged_nbytes: float
    sim_staged_nbytes: float

    @property
    def step_err(self) -> float:
        return self.sim_step_s / self.meas_step_s - 1.0

    @property
    def exposed_err_of_step(self) -> float:
        """Exposed-communication error as a share of the measured step latency."""
        return (self.sim_exposed_s - self.meas_exposed_s) / self.meas_step_s


def _staged_per_step(values: list, row_nbytes: int = 1) -> float:
    v = np.asarray(values, dtype=float)[FIRST_STEP:] * row_nbytes
    return float(v.mean()) if v.size else 0.0


def check_rows(pairs: list[tuple[TraceRun, SimResult]]) -> list[CheckRow]:
    """One row per (run, its simulation); each batch needs its ``sync`` run (the slow-down reference)."""
    sync = {(int(host_staged_meta(r)["batch_per_emulated_rank"])): (r, s) for r, s in pairs
            if r.strategy_name == "sync"}
    rows = []
    for run, res in pairs:
        b = int(host_staged_meta(run)["batch_per_emulated_rank"])
        if b not in sync:
            raise TraceError(run.path, f"no sync run at batch {b} to measure the compute slow-down against")
        ref_run, ref_res = sync[b]
        meas, sim = measured_metrics(run), simulated_metrics(res)
        row_nbytes = run.workload.row_nbytes()
        rows.append(CheckRow(
            batch=b, strategy=run.strategy_name, meas_step_s=meas["step_latency_s"], sim_step_s=sim["step_latency_s"],
            meas_exposed_s=float(meas["exposed_comm_s"]), sim_exposed_s=sim["exposed_comm_s"],
            meas_slowdown=compute_slowdown(run.events, ref_run.events),
            sim_slowdown=compute_slowdown(res.events, ref_res.events),
            meas_staged_nbytes=_staged_per_step(host_staged_meta(run)["staged_nbytes_per_step"]),
            sim_staged_nbytes=_staged_per_step(res.meta["host_staged"]["staged_rows_per_step"], row_nbytes)))
    return sorted(rows, key=lambda r: (r.batch, r.strategy != "sync", r.strategy))


def markdown_table(rows: list[CheckRow]) -> str:
    """The error table: latency and exposed communication in ms, slow-down in %, staged MiB per step."""
    ms, mib = unit_for("step_latency_s"), unit_for("nbytes")
    head = ("| batch/rank | strategy | step ms meas | step ms sim | step err | exposed ms meas | exposed ms sim "
            "| exposed err (% of step) | compute slow-down meas | sim | staged MiB/step meas | sim |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r.batch} | {r.strategy} | {ms.show(r.meas_step_s)} | {ms.show(r.sim_step_s)} | {r.step_err:+.1%} "
        f"| {ms.show(r.meas_exposed_s)} | {ms.show(r.sim_exposed_s)} | {r.exposed_err_of_step:+.1%} "
        f"| {r.meas_slowdown:+.1%} | {r.sim_slowdown:+.1%} | {mib.show(r.meas_staged_nbytes)} "
        f"| {mib.show(r.sim_staged_nbytes)} |\n" for r in rows)
    errs = np.abs([r.step_err for r in rows])
    foot = (f"\nStep latency |error|: median {np.median(errs):.1%}, max {errs.max():.1%} over {len(rows)} runs "
            f"(steps >= {FIRST_STEP}).\n") if len(rows) else ""
    return head + body + foot
