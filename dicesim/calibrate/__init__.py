"""Calibration: fit the simulator's hardware profile from traced runs, and measure how accurate it is.

Pipeline (one module per step):

- :mod:`~dicesim.calibrate.runs` / :mod:`~dicesim.calibrate.kineto`: read executor, simulator
  or torch.profiler traces into :class:`TraceRun` (events + configuration);
- :mod:`~dicesim.calibrate.timeline`: per-op samples (host gaps attributed) and collective
  instances (service times, busiest-link bytes from the measured routing);
- :mod:`~dicesim.calibrate.fit_compute` / :mod:`~dicesim.calibrate.fit_comm`: the fits;
- :mod:`~dicesim.calibrate.profile_fit`: fits -> :class:`~dicesim.sim.costs.profile.HardwareProfile`
  with provenance and fitted range, the CPU topology, out-of-range warnings;
- :mod:`~dicesim.calibrate.predict` / :mod:`~dicesim.calibrate.measure` /
  :mod:`~dicesim.calibrate.accuracy`: rebuild runs as scenarios, simulate, compare.

Typical use::

    runs = load_runs(["traces/cpu"])
    cal = calibrate_runs([r for r in runs if r.world_size == 2])
    save_profile(cal.profile, "cpu-w2.toml")
    report = run_accuracy(runs, fit_on="batch in (1, 4)")
"""

from dicesim.calibrate.accuracy import AccuracyReport, run_accuracy
from dicesim.calibrate.api import Calibration, calibrate_runs
from dicesim.calibrate.fit_comm import CommFit, fit_comm
from dicesim.calibrate.fit_compute import OpFit, fit_compute
from dicesim.calibrate.kineto import read_kineto
from dicesim.calibrate.profile_fit import (
    cpu_topology,
    range_warnings,
    warn_outside_range,
)
from dicesim.calibrate.runs import TraceRun, load_runs

__all__ = [
    "AccuracyReport", "Calibration", "CommFit", "OpFit", "TraceRun", "calibrate_runs", "cpu_topology",
    "fit_comm", "fit_compute", "load_runs", "range_warnings", "read_kineto", "run_accuracy", "warn_outside_range",
]
