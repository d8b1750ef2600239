"""One call from traced runs to a calibrated profile: :func:`calibrate_runs`."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import pandas as pd

from dicesim.calibrate.fit_collectives import CollectivesFit
from dicesim.calibrate.fit_comm import CommFit, fit_comm
from dicesim.calibrate.fit_compute import OpFit, add_work, fit_compute
from dicesim.calibrate.fit_host import HostFit, fit_host, load_host_costs
from dicesim.calibrate.fit_overlap import OverlapFit, fit_comm_interference
from dicesim.calibrate.profile_fit import (
    anchors_from,
    build_profile,
    cpu_base_profile,
    cpu_topology,
    provenance_of,
)
from dicesim.calibrate.runs import TraceRun
from dicesim.calibrate.timeline import collective_instances, compute_samples
from dicesim.errors import TraceError
from dicesim.sim.costs.profile import HardwareProfile, get_profile, profile_for_gpu

#: the op timings' device-time track (CUDA-graph replays: no host in them)
DEVICE_STREAM = "compute:graph"


@dataclass(frozen=True)
class Calibration:
    """A calibrated profile and the fits behind it."""

    profile: HardwareProfile
    op_fits: dict[str, OpFit]
    comm: CommFit | None
    interference: float | None
    samples: pd.DataFrame
    instances: pd.DataFrame
    overlap: OverlapFit | None = None
    host: HostFit | None = None
    collectives: CollectivesFit | None = None

    def topology(self, world_size: int) -> nx.DiGraph:
        """The CPU topology predictions with this profile run on (gloo ranks of one host)."""
        return cpu_topology(world_size, self.comm)


def default_base(runs: list[TraceRun]) -> HardwareProfile:
    """The profile whose unfitted numbers a calibration keeps: the traced GPU's built-in, or a CPU stub."""
    devices = {r.meta.device.lower() for r in runs}
    if all(d in ("cpu", "") or d.startswith("cpu") for d in devices):
        return cpu_base_profile()
    hint = next(iter(sorted(devices)))
    return profile_for_gpu(hint, datasheet=True)


def gather(runs: list[TraceRun], *, stream: str = "compute") -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Compute samples (with work) and collective instances of every run; whether gaps were absorbed."""
    samples, instances = [], []
    absorbed = False
    for run in runs:
        inst = collective_instances(run)
        s = compute_samples(run, inst, stream=stream)
        if len(s):
            samples.append(add_work(s, run).assign(trace=run.stem))
        if len(inst):
            instances.append(inst.assign(trace=run.stem))
        absorbed |= run.is_timeline
    if not samples:
        raise TraceError(", ".join(sorted({str(r.path.parent) for r in runs})),
                         f"no compute events on stream {stream!r} to calibrate from")
    inst_df = pd.concat(instances, ignore_index=True) if instances else pd.DataFrame()
    return pd.concat(samples, ignore_index=True), inst_df, absorbed


def calibrate_runs(runs: list[TraceRun], *, base: HardwareProfile | str | None = None, stream: str = "compute",
                   name: str | None = None, interference: float | None = None,
                   comm_interference: float | None = None, host_costs: str | None = None,
                   collectives: CollectivesFit | None = None) -> Calibration:
    """Fit a profile from ``runs``; ``base`` supplies whatever the traces cannot (default: see :func:`default_base`).

    ``interference``, ``comm_interference``: hold at this value instead of fitting (the latter
    is fitted, on step latency, only where collectives were fitted too). ``host_costs``: a CPU
    host-cost file (``traces/host/cpu-executor.toml``): the ops' device times are fitted on the
    ``compute:graph`` stream and the eager host on ``stream`` (:mod:`dicesim.calibrate.fit_host`),
    so the profile separates the two. ``collectives``: the all-gather's and ring pass's own parameters, fitted
    on a gloo microbenchmark (:mod:`dicesim.calibrate.fit_collectives`), put into the profile.
    """
    if not runs:
        raise TraceError("<runs>", "no traces to calibrate from")
    prof = default_base(runs) if base is None else (base if isinstance(base, HardwareProfile) else get_profile(base))
    host = None
    if host_costs is not None:
        eager, _, _ = gather(runs, stream=stream)
        graph, _, _ = gather(runs, stream=DEVICE_STREAM)
        host = fit_host(eager, graph, {r.stem: r.experts_on_rank for r in runs}, load_host_costs(host_costs))
        stream = DEVICE_STREAM
    samples, instances, absorbed = gather(runs, stream=stream)
    stub = prof.name == cpu_base_profile().name  # a CPU stub has no rates worth anchoring on
    fits, interf = fit_compute(samples, anchors=None if stub else anchors_from(prof), interference=interference)
    comm = fit_comm(instances)
    work = {"flops": samples["flops"].to_numpy(), "nbytes": samples["nbytes"].to_numpy(),
            "rows": samples.loc[samples["kind"] == "experts", "rows"].to_numpy()}
    prov = provenance_of(runs, work, stream=stream, comm=comm)
    label = name or f"{prof.name}-calibrated"
    profile = build_profile(prof, fits, comm, interf, prov, name=label, absorbed_gaps=absorbed, n_runs=len(runs),
                            keep_base_rates=not stub, collectives=collectives)
    if host is not None:
        profile = profile.with_updates(host=host.model, host_op_s=0.0, host_collective_s=0.0, citations={
            **profile.citations, **host_citations(host, host_costs)})
    overlap = None
    if comm_interference is not None:
        profile = profile.with_updates(comm_interference=comm_interference)
    elif comm is not None:
        overlap = fit_comm_interference(runs, profile, lambda W: cpu_topology(W, comm))
        if overlap is not None:
            profile = profile.with_updates(comm_interference=overlap.comm_interference, citations={
                **profile.citations, "comm_interference": (
                    f"fitted on the step latency of {overlap.n_configs} configurations with asynchronous layers: "
                    f"rms relative error {overlap.rel_err_rms:.1%} (without it {overlap.rel_err_rms_at_zero:.1%})")})
    return Calibration(profile=profile, op_fits=fits, comm=comm, interference=interf, samples=samples,
                       instances=instances, overlap=overlap, host=host, collectives=collectives)


def host_citations(host: HostFit, path: str) -> dict[str, str]:
    """Where each number of a fitted host model comes from (the profile's ``citations``)."""
    gpu = ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in host.gpu_host_s.items())
    err = ", ".join(f"{k} {v:+.0%}" for k, v in host.transfer_err.items())
    return {
        "host": (f"fitted (dicesim.calibrate.fit_host): per timed op, host time from eager vs CUDA-graph timings "
                 f"({gpu}; median |error| of max(host, device) against eager {host.eager_err_median:.1%}); "
                 f"mapped from the CPU host costs {path} as rho * H_cpu + tau * launches, rho {host.rho:.3g}, "
                 f"tau {host.tau_s * 1e6:.2f} us (errors {err}); executor ops, syncs and the per-expert cost "
                 f"from the same file; per local expert {host.model.expert_s * 1e6:.0f} us (cross-check costed "
                 f"on the GPU machine alone: {host.per_launch_s * 1e6:.1f} us per counted launch, least squares "
                 f"over the timed ops, gives {host.expert_per_launch_s * 1e6:.0f} us)"),
        "host.sync_s": "assumption: one sync costs one kernel launch's tau (a driver round trip and a small copy)",
        "host_op_s": "0: the host model times the host",
        "host_collective_s": "0: the host model times the host",
        "ops.*": "device time: fitted on the compute:graph stream (CUDA-graph replays, no launch cost)",
    }
