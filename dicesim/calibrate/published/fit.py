"""Fit the NCCL model on part of the published set and predict every figure with it.

Every prediction is a real simulator run (:func:`dicesim.sim.microbench.collective_ops.simulate_op`):
the operation's flows on the machine's graph through the simpy flow network. The fit:

1. bandwidth efficiencies (``bw_eff``), transport by transport, each a bounded 1-D search
   minimising the squared log error of the fitted bandwidth figures whose flows cross it (a
   figure crosses a transport when making that transport very slow moves it; a transport no
   fitted figure crosses keeps its prior value and says so); two passes, because a figure can
   cross two transports (DeepEP across nodes: NVLink and the NIC);
2. then the latencies, which enter linearly: ``base_latency_s`` and ``hop_latency_s`` of the
   transports the fitted time figures cross, by bounded linear least squares on relative error.

The result records, per parameter, the figures it was fitted on (``NcclModel.fitted``).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear, minimize_scalar

from dicesim.calibrate.published.set import DEFAULT_FIT_ON, FIELDS, Figure
from dicesim.calibrate.select import compile_selector
from dicesim.errors import ConfigError
from dicesim.sim.microbench.collective_ops import simulate_op
from dicesim.sim.network.nccl import TRANSPORTS, NcclModel, nccl_model_from_dict
from dicesim.topology.machines import get_machine

_METRIC_KEY = {"busbw": "busbw_Bps", "algbw": "algbw_Bps", "time": "time_s",
               "deepep_nvl": "deepep_nvl_Bps", "deepep_rdma": "deepep_rdma_Bps"}
_EFF_BOUNDS = (0.05, 1.0)
_PROBE_EFF = 0.1  # a transport this slow becomes the bottleneck of every figure whose flows cross it
_SENSITIVE = 1e-3


def prior_model() -> NcclModel:
    """Starting point of every fit: line rate everywhere, no latency beyond the graph's edges."""
    note = "prior (no fitted figure moves it): {}"
    return nccl_model_from_dict({
        "name": "nccl-prior", "source": "prior", "date": "", "fit_on": "not fitted",
        "bw_eff": {t: 1.0 for t in TRANSPORTS}, "base_latency_s": 0.0, "a2a_latency_s": 0.0,
        "hop_latency_s": {t: 0.0 for t in TRANSPORTS},
        "fitted": {**{f"bw_eff.{t}": note.format("line rate") for t in TRANSPORTS},
                   "base_latency_s": note.format("0"), "a2a_latency_s": note.format("0"),
                   **{f"hop_latency_s.{t}": note.format("0, the route's edge latencies only") for t in TRANSPORTS}},
    })


def predict(fig: Figure, model: NcclModel) -> float:
    """The simulated value of ``fig`` in SI units (bytes/s or seconds)."""
    r = simulate_op(get_machine(fig.topology), fig.operation, model, gpus=fig.gpus, nbytes=fig.nbytes,
                    deepep=fig.deepep.config() if fig.deepep else None)
    return r.metrics[_METRIC_KEY[fig.metric]]


def split_figures(figs: Sequence[Figure], fit_on: str = DEFAULT_FIT_ON) -> tuple[list[Figure], list[Figure]]:
    """``(fit, held_out)`` by a ``--fit-on`` expression over :data:`FIELDS`."""
    pred = compile_selector(fit_on, FIELDS)
    fit = [f for f in figs if pred(f.fields())]
    return fit, [f for f in figs if f not in fit]


def _with_eff(model: NcclModel, t: str, v: float) -> NcclModel:
    return model.model_copy(update={"bw_eff": {**model.bw_eff, t: v}})


def _fit_bandwidths(model: NcclModel, figs: list[Figure], fitted: dict[str, str]) -> NcclModel:
    for _ in range(2):
        for t in TRANSPORTS:
            base = [predict(f, model) for f in figs]
            moved = [f for f, b in zip(figs, base)
                     if abs(predict(f, _with_eff(model, t, _PROBE_EFF)) / b - 1) > _SENSITIVE]
            if not moved:
                continue

            def loss(v: float, t=t, moved=moved) -> float:
                m = _with_eff(model, t, v)
                return sum(math.log(predict(f, m) / f.value_si) ** 2 for f in moved)

            res = minimize_scalar(loss, bounds=_EFF_BOUNDS, method="bounded", options={"xatol": 1e-4})
            model = _with_eff(model, t, round(float(res.x), 4))
            fitted[f"bw_eff.{t}"] = "fitted on " + ", ".join(f.id for f in moved)
    return model


def _fit_latencies(model: NcclModel, figs: list[Figure], fitted: dict[str, str]) -> NcclModel:
    zero = model.model_copy(update={"base_latency_s": 0.0, "a2a_latency_s": 0.0,
                                    "hop_latency_s": {t: 0.0 for t in TRANSPORTS}})
    t0 = np.array([predict(f, zero) for f in figs])
    params = ["base_latency_s", "a2a_latency_s"] + [f"hop_latency_s.{t}" for t in TRANSPORTS]
    cols = []
    for p in params:  # each time figure is linear in the latency parameters: read the coefficients off
        if p.startswith("hop_latency_s."):
            bump = zero.model_copy(update={"hop_latency_s": {**zero.hop_latency_s, p.split(".")[1]: 1e-6}})
        else:
            bump = zero.model_copy(update={p: 1e-6})
        cols.append((np.array([predict(f, bump) for f in figs]) - t0) / 1e-6)
    A = np.column_stack(cols)
    used = [j for j in range(len(params)) if np.any(np.abs(A[:, j]) > 1e-6)]
    y = np.array([f.value_si for f in figs])
    w = 1.0 / y  # relative error
    sol = lsq_linear(A[:, used] * w[:, None], (y - t0) * w, bounds=(0.0, np.inf))
    hop = dict(model.hop_latency_s)
    scalars = {}
    for j, v in zip(used, sol.x):
        v = round(float(v), 9)
        if params[j].startswith("hop_latency_s."):
            hop[params[j].split(".")[1]] = v
        else:
            scalars[params[j]] = v
        movers = [f.id for f, a in zip(figs, A[:, j]) if abs(a) > 1e-6]
        fitted[params[j]] = "fitted on " + ", ".join(movers)
    return model.model_copy(update={**scalars, "hop_latency_s": hop})


def fit_nccl_model(figs: Sequence[Figure], *, fit_on: str = DEFAULT_FIT_ON, name: str = "nccl-published") -> NcclModel:
    """The NCCL model fitted on ``figs`` (already the fit part), starting from :func:`prior_model`."""
    if not figs:
        raise ConfigError("fit-on", f"{fit_on!r} selects no published figure")
    model = prior_model()
    fitted = dict(model.fitted)
    model = _fit_bandwidths(model, [f for f in figs if f.metric != "time"], fitted)
    times = [f for f in figs if f.metric == "time"]
    if times:
        model = _fit_latencies(model, times, fitted)
    return nccl_model_from_dict({
        **model.model_dump(), "name": name, "fit_on": fit_on, "fitted": fitted,
        "date": _dt.date.today().isoformat(),
        "source": f"dicesim accuracy --published --fit-on {fit_on!r}: {len(figs)} figures of traces/published",
    })


@dataclass(frozen=True)
class PublishedAccuracy:
    """Every figure with its prediction and error; the model used; the held-out summary."""

    rows: pd.DataFrame
    model: NcclModel
    fit_on: str
    summary: dict


def run_published_accuracy(figs: Sequence[Figure], fit_on: str = DEFAULT_FIT_ON) -> PublishedAccuracy:
    """Fit on the ``fit_on`` part, predict every figure, and summarise the held-out errors."""
    fit, held = split_figures(figs, fit_on)
    if not held:
        raise ConfigError("fit-on", f"{fit_on!r} selects every published figure; nothing is left to predict")
    model = fit_nccl_model(fit, fit_on=fit_on)
    rows = []
    for f in figs:
        pred = predict(f, model) / (1e9 if f.unit == "GB/s" else 1e-6)
        rows.append({"id": f.id, "split": "fit" if f in fit else "held-out", "family": f.family, "gpu": f.gpu,
                     "gpus": f.gpus, "nodes": f.nodes, "topology": f.topology, "operation": f.operation,
                     "nbytes": f.nbytes, "metric": f.metric, "unit": f.unit, "published": f.value,
                     "predicted": pred, "error": pred / f.value - 1.0, "source_kind": f.source.kind,
                     "source": f.source.title, "url": f.source.url, "locator": f.source.locator,
                     "date": f.source.date, "quote": f.quote})
    df = pd.DataFrame(rows)
    h = df[df["split"] == "held-out"]
    abs_err = h["error"].abs()
    summary = {
        "figures": len(df), "fit": int((df["split"] == "fit").sum()), "held_out": len(h),
        "families": sorted(df["family"].unique().tolist()),
        "median_abs_err": float(abs_err.median()), "max_abs_err": float(abs_err.max()),
        "median_abs_err_fit": float(df[df["split"] == "fit"]["error"].abs().median()),
        "per_family": {fam: {"held_out": int(len(g)), "median_abs_err": float(g["error"].abs().median()),
                             "max_abs_err": float(g["error"].abs().max())}
                       for fam, g in h.groupby("family")},
        "target_median": 0.10, "target_max": 0.25,
    }
    summary["meets_target"] = summary["median_abs_err"] <= 0.10 and summary["max_abs_err"] <= 0.25
    return PublishedAccuracy(rows=df, model=model, fit_on=fit_on, summary=summary)
