"""One call from traced runs to a calibrated profile: :func:`calibrate_runs`."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import pandas as pd

from dicesim.calibrate.fit_comm import CommFit, fit_comm
from dicesim.calibrate.fit_compute import OpFit, add_work, fit_compute
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

    def topology(self, world_size: int) -> nx.DiGraph:
        """The CPU topology predictions with this profile run on (gloo ranks of one host)."""
        return cpu_topology(world_size, self.comm)


def default_base(runs: list[TraceRun]) -> HardwareProfile:
    """The profile whose unfitted numbers a calibration keeps: the traced GPU's built-in, or a CPU stub."""
    devices = {r.meta.device.lower() for r in runs}
    if all(d in ("cpu", "") or d.startswith("cpu") for d in devices):
        return cpu_base_profile()
    hint = next(iter(sorted(devices)))
    return profile_for_gpu(hint)


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
                   comm_interference: float | None = None) -> Calibration:
    """Fit a profile from ``runs``; ``base`` supplies whatever the traces cannot (default: see :func:`default_base`).

    ``interference``, ``comm_interference``: hold at this value instead of fitting (the latter
    is fitted, on step latency, only where collectives were fitted too).
    """
    if not runs:
        raise TraceError("<runs>", "no traces to calibrate from")
    prof = default_base(runs) if base is None else (base if isinstance(base, HardwareProfile) else get_profile(base))
    samples, instances, absorbed = gather(runs, stream=stream)
    stub = prof.name == cpu_base_profile().name  # a CPU stub has no rates worth anchoring on
    fits, interf = fit_compute(samples, anchors=None if stub else anchors_from(prof), interference=interference)
    comm = fit_comm(instances)
    work = {"flops": samples["flops"].to_numpy(), "nbytes": samples["nbytes"].to_numpy(),
            "rows": samples.loc[samples["kind"] == "experts", "rows"].to_numpy()}
    prov = provenance_of(runs, work, stream=stream, comm=comm)
    label = name or f"{prof.name}-calibrated"
    profile = build_profile(prof, fits, comm, interf, prov, name=label, absorbed_gaps=absorbed, n_runs=len(runs),
                            keep_base_rates=not stub)
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
                       instances=instances, overlap=overlap)
