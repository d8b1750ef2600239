"""Fits -> a :class:`~dicesim.sim.costs.profile.HardwareProfile` (with provenance), a CPU topology, range checks.

Mapping (per op kind, from the roofline fit ``launch + max(F * a, B * b)``): ``launch_s = launch``,
``compute_eff = 1 / (a * peak)``, ``mem_eff = 1 / (b * mem_bw)``. ``peak`` and ``mem_bw`` stay
the base profile's unless a fitted rate exceeds them (a CPU base starts low on purpose), in
which case they are raised so every efficiency is <= 1; a term the fit did not use gets
efficiency 1. If the profile model knows a fitted linear form (``OpEfficiency`` fields
``s_per_flop``/``s_per_byte``), kinds whose linear fit is clearly better store it too.

Collectives: ``collective_base_s`` is the fitted latency minus the route latency of the
topology the predictions run on (:func:`cpu_topology` for gloo runs: one switch, every rank
linked to it with the fitted bandwidth). Host: with gaps absorbed into op times (whole
executor runs) ``host_op_s`` is 0; ``host_collective_s`` is the fitted issue cost.

``fitted_range`` is a ``key=lo..hi`` list that :func:`range_warnings` reads back (the models
named there are provenance: another model whose op sizes lie in the fitted range is fine).
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

import networkx as nx
import numpy as np

from dicesim.calibrate.fit_collectives import CollectivesFit
from dicesim.calibrate.fit_comm import CommFit
from dicesim.calibrate.fit_compute import OpFit
from dicesim.calibrate.runs import TraceRun
from dicesim.limits import PHYSICAL
from dicesim.sim.costs.profile import (
    OP_KINDS,
    HardwareProfile,
    OpEfficiency,
    profile_from_dict,
)

EDGE_LATENCY_S = 1e-9  # topology edges need a positive latency; the fitted latency sits in the profile
_LINEAR_FIELDS = {"s_per_flop", "s_per_byte"} <= set(OpEfficiency.model_fields)


def cpu_base_profile() -> HardwareProfile:
    """A neutral starting point for CPU calibration: every number is replaced by a fit."""
    ops = {k: {"compute_eff": 1.0, "mem_eff": 1.0, "launch_s": 0.0} for k in OP_KINDS}
    return profile_from_dict({
        "name": "cpu", "gpu": "cpu", "source": "dicesim.calibrate.profile_fit.cpu_base_profile", "date": "",
        "peak_tflops": 1e-6, "mem_bw_GBps": 1e-3, "ops": ops,
        "collective_base_s": {"all_to_all": 0.0, "count_exchange": 0.0}, "link_latency_s": {"default": 0.0},
        "host_op_s": 0.0, "host_collective_s": 0.0, "interference": 0.0,
    }, origin="cpu base profile")


def cpu_topology(world_size: int, comm: CommFit | None, *, name: str | None = None) -> nx.DiGraph:
    """Ranks of one host exchanging over loopback: one switch, each rank's link at the fitted bandwidth."""
    from dicesim.topology import single_switch, validate_topology

    bw = comm.bw_Bps if comm is not None else 1e12
    G = single_switch(world_size, bw, EDGE_LATENCY_S, link=comm.link_class if comm else "cpu-loopback",
                      gpu="cpu", switch_kind="cpu", name=name or f"cpu-gloo-{world_size}")
    validate_topology(G)
    return G


def anchors_from(profile: HardwareProfile) -> dict[str, tuple[float, float, float]]:
    """Per op kind ``(launch_s, s_per_flop, s_per_byte)`` of a profile's roofline."""
    return {k: (e.launch_s, 1.0 / (profile.peak_flops * e.compute_eff), 1.0 / (profile.mem_bw_Bps * e.mem_eff))
            for k, e in profile.ops.items()}


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a calibration came from (goes into ``source``, ``citations`` and ``fitted_range``)."""

    traces: tuple[str, ...]
    backend: str
    device: str
    torch_version: str
    stream: str
    ranges: dict[str, tuple[float, float]]
    models: tuple[str, ...]


def provenance_of(runs: Iterable[TraceRun], samples_work: dict[str, np.ndarray], *, stream: str,
                  comm: CommFit | None) -> Provenance:
    """Collect provenance from the runs and the work the fit saw (``flops``/``nbytes``/``rows`` arrays)."""
    runs = list(runs)
    def rng(vals: Iterable[float]) -> tuple[float, float]:
        v = np.asarray(list(vals), dtype=float)
        return (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)

    # world size matters once collectives are fitted; compute-only fits see it through the work sizes
    ranges = {"world_size": rng(r.world_size for r in runs)} if comm is not None else {}
    ranges.update(batch=rng(r.batch for r in runs), image_size=rng(r.image_size for r in runs))
    for key in ("flops", "nbytes", "rows"):
        if key in samples_work and len(samples_work[key]):
            ranges[key] = rng(samples_work[key])
    if comm is not None:
        ranges["a2a_nbytes"] = comm.nbytes_range
    def uniq(xs: Iterable[str]) -> str:
        return ",".join(sorted({x for x in xs if x})) or "unknown"

    return Provenance(traces=tuple(sorted({str(r.path.parent) for r in runs})),
                      backend=uniq(r.meta.backend for r in runs), device=uniq(r.meta.device for r in runs),
                      torch_version=uniq(r.meta.torch_version for r in runs), stream=stream, ranges=ranges,
                      models=tuple(sorted({r.model for r in runs})))


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:.6g}..{hi:.6g}"


def _rate(fits: dict[str, OpFit], term: int, base_rate: float | None) -> float:
    """Peak rate for roofline term ``term`` (1: FLOPs, 2: bytes), >= every fitted rate.

    From a datasheet base, its rate; from none (CPU), also high enough that in kinds whose
    fit has no such term it stays under 1% of the op time.
    """
    rates = [base_rate or 0.0]
    for f in fits.values():
        coef, work = f.roofline[term], (f.flops_range if term == 1 else f.nbytes_range)[1]
        if coef > 0:
            rates.append(1.0 / coef)
        elif work > 0 and base_rate is None:
            rates.append(work / (0.01 * max(f.roofline[0], 1e-12)))
    return max(rates)


def build_profile(base: HardwareProfile, fits: dict[str, OpFit], comm: CommFit | None,
                  interference: float | None, prov: Provenance, *, name: str, absorbed_gaps: bool,
                  n_runs: int, keep_base_rates: bool = True,
                  collectives: CollectivesFit | None = None) -> HardwareProfile:
    """The calibrated profile: fitted values where there were data, the base's elsewhere.

    ``collectives``: the all-gather's and the ring pass's own step latency and bandwidth, fitted on a
    microbenchmark (:mod:`dicesim.calibrate.fit_collectives`); without it the all-to-all's stand in.

    ``keep_base_rates``: start peak FLOP/s and memory bandwidth from the base (a datasheet)
    rather than from the fastest fitted op (a CPU stub has no datasheet).
    """
    # a reference rate where no op pins it is a stand-in (a launch-bound op gave 6.6e18 B/s), not
    # a measurement: it is kept inside the physical ranges (dicesim.limits.PHYSICAL); each op's
    # efficiency is taken against the kept rate, so its fitted time per FLOP and per byte stay
    peak = min(_rate(fits, 1, base.peak_flops if keep_base_rates else None), PHYSICAL["peak_tflops"].high * 1e12)
    bw = min(_rate(fits, 2, base.mem_bw_Bps if keep_base_rates else None), PHYSICAL["mem_bw_GBps"].high * 1e9)
    ops = {k: v.model_dump() for k, v in base.ops.items()}
    cites = {"calibration": f"fitted from {n_runs} traces in {', '.join(prov.traces)} ({prov.stream} stream)"}
    for kind, f in fits.items():
        launch, a, b = f.roofline
        entry = {"launch_s": launch, "compute_eff": min(1.0 / (a * peak), 1.0) if a > 0 else 1.0,
                 "mem_eff": min(1.0 / (b * bw), 1.0) if b > 0 else 1.0}
        if _LINEAR_FIELDS and f.form == "linear":
            entry.update(launch_s=f.launch_s, s_per_flop=f.s_per_flop, s_per_byte=f.s_per_byte)
        ops[kind] = entry
        cites[f"ops.{kind}"] = (f"{f.n_samples} samples, {f.n_configs} sizes; roofline |err| median "
                                f"{f.roofline_rel_err_median:.1%} max {f.roofline_rel_err_max:.1%}; linear median "
                                f"{f.rel_err_median:.1%} max {f.rel_err_max:.1%}; best form {f.form}")
    upd: dict = {"name": name, "ops": ops, "peak_tflops": peak / 1e12, "mem_bw_GBps": bw / 1e9,
                 "date": _dt.datetime.now(_dt.UTC).date().isoformat(),
                 "source": (f"dicesim calibrate: {n_runs} traces ({', '.join(prov.traces)}); backend {prov.backend}; "
                            f"device {prov.device}; torch {prov.torch_version}; base profile {base.name}")}
    if absorbed_gaps:
        upd["host_op_s"] = upd["host_collective_s"] = 0.0
        cites["host_op_s"] = cites["host_collective_s"] = (
            "0: host time between ops and around collectives is measured into the ops' launch_s "
            "(host and compute share a thread)")
    if interference is not None:
        upd["interference"] = interference
        cites["interference"] = "fitted: slow-down of ops overlapping a collective vs the same ops without"
    if comm is not None:
        route = 2 * EDGE_LATENCY_S
        upd["collective_base_s"] = {"all_to_all": max(comm.a2a_latency_s - route, 0.0),
                                    "count_exchange": max(comm.counts_latency_s - route, 0.0)}
        upd["link_latency_s"] = {"default": 0.0}
        upd["link_bw_eff"] = {"default": 1.0}
        cites["collective_base_s"] = (f"fitted on {comm.n_a2a} all-to-alls (median |err| {comm.rel_err_median:.1%}) "
                                      f"and {comm.n_counts} count exchanges over {comm.link_class}; "
                                      f"link bandwidth {comm.bw_Bps:.4g} B/s goes into the topology")
    if collectives is not None:
        base_s = dict(upd.get("collective_base_s", base.collective_base_s))
        for fit in (collectives.all_gather, collectives.p2p_pass):
            base_s[fit.op] = fit.latency_s
            cites[f"collective_base_s.{fit.op}"] = f"fitted on {collectives.source}: {fit.describe()}"
        upd["collective_base_s"] = base_s
        upd["collective_bw_Bps"] = {f.op: f.bw_Bps for f in (collectives.all_gather, collectives.p2p_pass)}
    parts = [f"model={','.join(prov.models)}"] + [f"{k}={_fmt_range(*v)}" for k, v in prov.ranges.items()]
    if comm is not None:
        parts.append(f"link_bw_Bps={comm.bw_Bps:.6g}")
    upd["fitted_range"] = "; ".join(parts)
    # the base's citations still explain what was not fitted; mark them as the base's
    upd["citations"] = {**{f"base {base.name}: {k}": v for k, v in base.citations.items()}, **cites}
    return base.with_updates(**upd)


_RANGE_RE = re.compile(r"(\w+)=([-+0-9.eE]+)\.\.([-+0-9.eE]+)")


def fitted_ranges(profile: HardwareProfile) -> dict[str, tuple[float, float]]:
    """The numeric ``key=lo..hi`` ranges of a calibrated profile (empty for datasheet profiles)."""
    return {k: (float(lo), float(hi)) for k, lo, hi in _RANGE_RE.findall(profile.fitted_range)}


def range_warnings(profile: HardwareProfile, scenario: object) -> list[str]:
    """What in ``scenario`` lies outside the range ``profile`` was fitted on (empty if none or unknown)."""
    from dicesim.models import block_workload
    from dicesim.sim.costs.costmodel import embed_cost, final_cost

    ranges = fitted_ranges(profile)
    if not ranges:
        return []
    out = []
    for key in ("world_size", "batch", "image_size"):
        v = getattr(scenario, key)
        if key in ranges and not ranges[key][0] <= v <= ranges[key][1]:
            out.append(f"{key} {v} (fitted {_fmt_range(*ranges[key])})")
    if "flops" in ranges:
        wl = block_workload(scenario.preset(), batch=scenario.batch, image_px=scenario.image_size,
                            cfg=scenario.cfg, dtype=scenario.dtype)
        costs = [wl.attention_half(), wl.gate(), wl.shared_expert(), wl.local_combine(), embed_cost(wl), final_cost(wl)]
        lo, hi = ranges["flops"]
        bad = [c.flops for c in costs if not lo * 0.999 <= c.flops <= hi * 1.001]
        if bad:
            out.append(f"op FLOPs up to {max(bad):.3g} (fitted {_fmt_range(lo, hi)})")
    return out


def warn_outside_range(profile: HardwareProfile, scenario: object, file: TextIO | None = None) -> bool:
    """Print one warning line on stderr if ``scenario`` is outside the profile's fitted range."""
    issues = range_warnings(profile, scenario)
    if issues:
        print(f"warning: profile {profile.name} is used outside its fitted range: {'; '.join(issues)}",
              file=file or sys.stderr)
    return bool(issues)
