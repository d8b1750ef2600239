"""How accurate is the simulator? Fit on some traced runs, predict the others, compare.

:func:`run_accuracy` splits the runs with a ``--fit-on`` expression, calibrates a profile on
the fit part (one per world size by default: ranks that share a CPU get a different
share of it at each world size, so "the hardware" is not the same), rebuilds every run as
a scenario (:mod:`dicesim.calibrate.predict`) and compares the simulator's step latency,
exposed communication and overlap fraction with the measured ones
(:mod:`dicesim.calibrate.measure`).

Repetitions of one configuration (stems ending in ``-r<k>``) are one measurement: one
representative repetition per configuration is used, both to fit and to compare: the one
with the median step latency (``reps="median"``) or the fastest (``reps="min"``: on a
machine whose other load only ever adds time, the least disturbed run). Their spread is
reported as the measurement's own noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from dicesim.calibrate.api import Calibration, calibrate_runs
from dicesim.calibrate.fit_collectives import CollectivesFit, fit_collectives, load_bench
from dicesim.calibrate.measure import measured_metrics, simulated_metrics
from dicesim.calibrate.predict import scenario_of, simulate_run
from dicesim.calibrate.profile_fit import range_warnings
from dicesim.calibrate.runs import TraceRun, config_key
from dicesim.calibrate.select import DEFAULT_FIT_ON, split_runs
from dicesim.errors import ConfigError
from dicesim.progress import NO_PROGRESS, Ticker

METRICS = ("step_latency_s", "exposed_comm_s", "overlap_frac")
REP_POLICIES = ("median", "min")


@dataclass(frozen=True)
class Bench:
    """A gloo collectives microbenchmark (:mod:`dicesim.calibrate.fit_collectives`) and where it came from."""

    rows: list
    source: str

    @classmethod
    def load(cls, path: str) -> "Bench":
        return cls(rows=load_bench(path), source=str(path))


@dataclass(frozen=True)
class AccuracyReport:
    """Per-configuration comparison (``rows``), headline numbers and the strategy rankings."""

    fit_on: str
    rows: pd.DataFrame
    summary: dict
    rankings: pd.DataFrame
    calibrations: dict[int | str, Calibration]
    warnings: list[str] = field(default_factory=list)


def representatives(runs: list[TraceRun], policy: str = "median") -> dict[str, tuple[TraceRun, dict, np.ndarray]]:
    """Per configuration: (representative run, its measured metrics, every rep's step latency)."""
    if policy not in REP_POLICIES:
        raise ConfigError("reps", f"unknown policy {policy!r}", REP_POLICIES)
    groups: dict[str, list[TraceRun]] = {}
    for r in runs:
        groups.setdefault(config_key(r), []).append(r)
    out = {}
    for key, reps in sorted(groups.items()):
        mets = [measured_metrics(r) for r in reps]
        lat = np.array([m["step_latency_s"] for m in mets])
        order = np.argsort(lat, kind="stable")
        pick = int(order[0] if policy == "min" else order[(len(order) - 1) // 2])
        out[key] = (reps[pick], mets[pick], lat)
    return out


def _calibrations(fit: list[TraceRun], world_sizes: set[int], per_world_size: bool,
                  base: object, bench: Bench | None = None) -> dict[int | str, Calibration]:
    if not fit:
        raise ConfigError("fit-on", "selects no run to fit on")
    pooled = None
    out: dict[int | str, Calibration] = {}

    def coll(ws: set[int]) -> CollectivesFit | None:
        return None if bench is None else fit_collectives(bench.rows, ws, source=bench.source)

    for W in sorted(world_sizes):
        mine = [r for r in fit if r.world_size == W] if per_world_size else []
        if mine:
            out[W] = calibrate_runs(mine, base=base, name=f"cpu-calibrated-w{W}", collectives=coll({W}))
        else:
            pooled = pooled or calibrate_runs(fit, base=base, name="cpu-calibrated",
                                              collectives=coll({r.world_size for r in fit} | set(world_sizes)))
            out[W] = pooled
    return out


def _rank_agreement(meas: dict[str, float], pred: dict[str, float], tie_rel: float) -> tuple[bool, bool, float]:
    """Strict equality of the orders, equality up to measured near-ties, Kendall tau."""
    names = sorted(meas)
    strict = sorted(names, key=meas.get) == sorted(names, key=pred.get)
    conc = disc = 0
    tolerant = True
    for a, b in combinations(names, 2):
        dm, dp = meas[a] - meas[b], pred[a] - pred[b]
        same = np.sign(dm) == np.sign(dp)
        conc += same
        disc += not same
        if not same and abs(dm) > tie_rel * min(meas[a], meas[b]):
            tolerant = False
    tau = (conc - disc) / max(conc + disc, 1)
    return strict, tolerant, float(tau)


def run_accuracy(runs: list[TraceRun], *, fit_on: str = DEFAULT_FIT_ON, per_world_size: bool = True,
                 base: object = None, tie_rel: float = 0.03, reps: str = "median",
                 ticker: Ticker = NO_PROGRESS, collectives: Bench | None = None) -> AccuracyReport:
    """Fit on the runs ``fit_on`` selects, predict every configuration, compare (see module doc).

    ``tie_rel``: measured step latencies closer than this fraction count as ties when the
    predicted ranking is compared with the measured one (reported beside the strict result).
    ``reps``: which repetition represents a configuration (``median`` or ``min``).
    ``ticker`` hears of each configuration simulated. ``collectives``: a gloo microbenchmark the profiles'
    all-gather and ring-pass parameters are fitted on (else the all-to-all's stand in for them).
    """
    chosen = representatives(runs, reps)
    fit, held = split_runs([c[0] for c in chosen.values()], fit_on)
    if not held:
        raise ConfigError("fit-on", f"{fit_on!r} holds out no run: nothing to predict")
    cals = _calibrations(fit, {r.world_size for r in runs}, per_world_size, base, collectives)
    held_keys = {config_key(r) for r in held}
    rows, warnings = [], []
    ticker.expect(len(chosen))
    for key, (run, m, lat) in chosen.items():
        ticker.advance()
        cal = cals[run.world_size]
        pred = simulated_metrics(simulate_run(run, cal.profile, cal.topology(run.world_size)))
        issues = range_warnings(cal.profile, scenario_of(run)) if key in held_keys else []
        if issues:
            warnings.append(f"{key}: outside the fitted range: {'; '.join(issues)}")
        rows.append({
            "config": key, "model": run.model, "world_size": run.world_size, "batch": run.batch,
            "strategy": run.strategy_name, "family": run.family, "held_out": key in held_keys, "reps": len(lat),
            "rep_spread": float((lat.max() - lat.min()) / np.median(lat)),
            "in_rep_range": bool(lat.min() <= pred["step_latency_s"] <= lat.max()),
            **{f"measured_{k}": m[k] for k in METRICS}, **{f"predicted_{k}": pred[k] for k in METRICS},
            "step_err": (pred["step_latency_s"] - m["step_latency_s"]) / m["step_latency_s"],
            "exposed_err_of_step": (pred["exposed_comm_s"] - m["exposed_comm_s"]) / m["step_latency_s"],
            "overlap_err": pred["overlap_frac"] - m["overlap_frac"], "outside_range": bool(issues),
        })
    df = pd.DataFrame(rows)
    rankings = _rankings(df[df["held_out"]], tie_rel)
    summary = {**summarize(df, rankings, tie_rel), "reps_policy": reps}
    return AccuracyReport(fit_on=fit_on, rows=df, summary=summary, rankings=rankings,
                          calibrations=cals, warnings=warnings)


def _rankings(held: pd.DataFrame, tie_rel: float) -> pd.DataFrame:
    out = []
    for (model, W, b), g in held.groupby(["model", "world_size", "batch"]):
        if len(g) < 2:
            continue
        meas = dict(zip(g["strategy"], g["measured_step_latency_s"]))
        pred = dict(zip(g["strategy"], g["predicted_step_latency_s"]))
        strict, tolerant, tau = _rank_agreement(meas, pred, tie_rel)
        out.append({"model": model, "world_size": W, "batch": b,
                    "measured_order": " < ".join(sorted(meas, key=meas.get)),
                    "predicted_order": " < ".join(sorted(pred, key=pred.get)),
                    "equal": strict, "equal_up_to_ties": tolerant, "kendall_tau": tau})
    return pd.DataFrame(out, columns=["model", "world_size", "batch", "measured_order", "predicted_order", "equal",
                                      "equal_up_to_ties", "kendall_tau"])


def _errors(g: pd.DataFrame) -> dict:
    """Median and max abs step-latency and exposed-communication errors of some held-out rows."""
    e, x = g["step_err"].abs(), g["exposed_err_of_step"].abs()
    return {"median_abs_step_err": float(e.median()), "max_abs_step_err": float(e.max()),
            "median_abs_exposed_err_of_step": float(x.median()), "max_abs_exposed_err_of_step": float(x.max()),
            "n": len(g)}


def summarize(df: pd.DataFrame, rankings: pd.DataFrame, tie_rel: float) -> dict:
    """Headline numbers over the held-out configurations, overall, per strategy and per family.

    ``fit_families`` / ``held_out_families``: the strategy families the profiles were fitted on and
    those predicted (a family absent from ``fit_families`` is predicted with nothing of it fitted)."""
    h = df[df["held_out"]]
    e, x = h["step_err"].abs(), h["exposed_err_of_step"].abs()
    per = {s: {**_errors(g), "family": str(g["family"].iloc[0])} for s, g in h.groupby("strategy")}
    return {
        "fit_families": sorted(df.loc[~df["held_out"], "family"].unique().tolist()),
        "held_out_families": sorted(h["family"].unique().tolist()),
        "per_family": {f: _errors(g) for f, g in h.groupby("family")},
        "held_out_configs": len(h), "fit_configs": int((~df["held_out"]).sum()),
        "median_abs_step_err": float(e.median()), "max_abs_step_err": float(e.max()),
        "median_abs_exposed_err_of_step": float(x.median()), "max_abs_exposed_err_of_step": float(x.max()),
        "median_abs_overlap_err": float(h["overlap_err"].abs().median()),
        "fit_median_abs_step_err": float(df.loc[~df["held_out"], "step_err"].abs().median()),
        "median_rep_spread": float(df["rep_spread"].median()),
        "held_out_in_rep_range": int(h["in_rep_range"].sum()),
        "rankings_equal": int(rankings["equal"].sum()), "rankings_equal_up_to_ties": int(rankings["equal_up_to_ties"].sum()),
        "rankings_total": len(rankings), "tie_rel": tie_rel, "per_strategy": per,
    }
