"""Reading a sweep table: speedup over sync, the best strategy under a budget, the report.

Works on the table :func:`dicesim.sweep.run_sweep` returns (one row per configuration,
``status`` ok/skipped/error, descriptor columns, metric columns in SI units).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dicesim.compare import METRIC_KEYS
from dicesim.report.explorer import explorer
from dicesim.report.figures import pareto_mask
from dicesim.report.html import Section
from dicesim.sweep import AXES

#: columns that describe the strategy rather than the scenario it runs on
STRATEGY_COLUMNS = frozenset({
    "strategy", "scheme", "sync_layers", "cond_interval", "cond_policy", "warmup_steps", "cooldown_steps",
    "sync_every", "stale_weights", "count_comm",
})
_BEST_DETAIL = ("sync_layers", "cond_interval")
_NOT_DESCRIPTORS = frozenset({"index", "key", "status", "reason", "label", "speedup"})
_METRICS = frozenset(METRIC_KEYS)
_AXES = frozenset(AXES)


def scenario_columns(table: pd.DataFrame) -> list[str]:
    """Descriptor columns that are not about the strategy (model, topology, world_size, batch...).

    Only sweep axes count: columns an evaluator adds (a study's busiest link) describe results.
    """
    return [c for c in table.columns if c in _AXES and c not in STRATEGY_COLUMNS | _NOT_DESCRIPTORS | _METRICS]


def with_speedup(table: pd.DataFrame) -> pd.DataFrame:
    """Copy with ``speedup``: the ``sync`` row's step latency on the same scenario / this row's.

    NaN where the sweep has no successful ``sync`` row for that scenario.
    """
    out = table.copy()
    keys = scenario_columns(out)
    ok = out["status"] == "ok"
    sync = out[ok & (out["strategy"] == "sync")].drop_duplicates(keys)[keys + ["step_latency_s"]]
    sync = sync.rename(columns={"step_latency_s": "_sync_s"})
    merged = out[keys].merge(sync, on=keys, how="left") if keys else out.assign(
        _sync_s=sync["_sync_s"].iloc[0] if len(sync) else np.nan)
    out["speedup"] = np.where(ok, merged["_sync_s"].to_numpy(dtype=float) / out["step_latency_s"].to_numpy(dtype=float),
                              np.nan)
    return out


def over_memory(table: pd.DataFrame) -> pd.Series:
    """Rows whose memory does not fit their GPUs (``memory_margin_bytes`` < 0; unknown counts as fitting)."""
    if "memory_margin_bytes" not in table.columns:
        return pd.Series(False, index=table.index)
    return table["memory_margin_bytes"].astype(float) < 0


def best_under_budget(table: pd.DataFrame, *, max_lag: float | None = None, max_latency_ms: float | None = None,
                      by: Sequence[str] = ("topology", "world_size")) -> pd.DataFrame:
    """Fastest strategy per scenario among configurations within the lag and latency budget
    that fit their GPUs' memory.

    Groups by ``by`` plus every other scenario column that varies in the sweep (comparing
    latencies across batch sizes would be meaningless). Within a group: least step latency,
    then least weighted lag, then sweep order. Groups with nothing inside the budget show
    ``(none within budget)``; ``not_fitting`` names the strategies left out for memory.
    """
    df = with_speedup(table) if "speedup" not in table.columns else table.copy()
    varying = [c for c in scenario_columns(df) if c not in by and df[c].nunique(dropna=False) > 1]
    group_cols = [c for c in by if c in df.columns] + varying
    ok = df["status"] == "ok"
    feasible = ok & ~over_memory(df)
    if max_lag is not None:
        feasible &= df["weighted_lag_steps"] <= max_lag
    if max_latency_ms is not None:
        feasible &= df["step_latency_s"] * 1e3 <= max_latency_ms
    df = df.assign(_feasible=feasible, _ok=ok)
    rows = []
    for keys, part in df.groupby(group_cols, sort=True, dropna=False) if group_cols else [((), df)]:
        keys = keys if isinstance(keys, tuple) else (keys,)
        if not part["_ok"].any():
            continue  # nothing valid ran here; the skipped table says why
        row = dict(zip(group_cols, keys))
        cand = part[part["_feasible"]].sort_values(["step_latency_s", "weighted_lag_steps", "index"], kind="stable")
        row["feasible"] = f"{len(cand)} of {int(part['_ok'].sum())}"
        big = part[part["_ok"] & over_memory(part)]
        row["not_fitting"] = ", ".join(dict.fromkeys(big["strategy"].astype(str))) if len(big) else ""
        if len(cand):
            best = cand.iloc[0]
            row.update(best=best["strategy"], **{c: best[c] for c in _BEST_DETAIL if c in best.index},
                       step_latency_s=best["step_latency_s"], weighted_lag_steps=best["weighted_lag_steps"],
                       speedup=best["speedup"])
        else:
            row.update(best="(none within budget)", **{c: "" for c in _BEST_DETAIL if c in df.columns},
                       step_latency_s=np.nan, weighted_lag_steps=np.nan, speedup=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_sections(table: pd.DataFrame, *, max_lag: float | None = None, max_latency_ms: float | None = None,
                   max_table_rows: int = 500) -> list[Section]:
    """Report sections of a sweep: counts, Pareto plot and front, best per scenario, skips."""
    table = with_speedup(table)
    simulated = table[table["status"] == "ok"]
    big = simulated[over_memory(simulated)]
    ok = simulated[~over_memory(simulated)]  # what does not fit is never on the front nor the best
    counts = table["status"].value_counts()
    summary = (f"{len(table)} configurations: {int(counts.get('ok', 0))} simulated, "
               f"{int(counts.get('skipped', 0))} skipped as invalid, {int(counts.get('error', 0))} failed"
               + (f"; {len(big)} of the simulated do not fit their GPUs' memory and are left out of the front "
                  "and the best strategies." if len(big) else "."))
    budget = ", ".join(filter(None, [f"weighted lag <= {max_lag} steps" if max_lag is not None else "",
                                     f"step latency <= {max_latency_ms} ms" if max_latency_ms is not None else ""]))
    shown = ["strategy", *scenario_columns(table), "sync_layers", "cond_interval", "step_latency_s", "speedup",
             "exposed_comm_step_s", "overlap_frac", "mean_lag_steps", "weighted_lag_steps", "peak_buffer_bytes",
             "peak_memory_bytes"]
    shown = list(dict.fromkeys(c for c in shown if c in table.columns))
    sections = [Section(title="Sweep", items=(summary,))]
    if len(ok):
        front = ok[pareto_mask(ok, "weighted_lag_steps", "step_latency_s")].sort_values(
            ["weighted_lag_steps", "step_latency_s"])
        filters = [c for c in shown if c in ok.columns and c not in _METRICS and c != "speedup"]
        sections.append(Section(title="Step latency vs staleness", items=(
            explorer(ok, x="weighted_lag_steps", y="step_latency_s", filters=filters, element_id="sweep-explorer"),
            "Filter by any axis and pick the metrics; the dashed line is the Pareto front of what is shown "
            "(the view is kept in the address, #...). Over the whole sweep, the Pareto-optimal configurations "
            "(no other configuration is both faster and less stale) are:",
            front[shown],
        )))
        best = best_under_budget(table, max_lag=max_lag, max_latency_ms=max_latency_ms)
        sections.append(Section(title="Best strategy per topology and world size", items=(
            f"Budget: {budget or 'none (fastest overall)'}.", best)))
        rows = ok[shown] if len(ok) <= max_table_rows else ok.nsmallest(max_table_rows, "step_latency_s")[shown]
        note = "" if len(ok) <= max_table_rows else f"The {max_table_rows} fastest of {len(ok)} configurations."
        sections.append(Section(title="All simulated configurations", items=tuple(filter(len, (note,))) + (rows,)))
    if len(big):
        cols = [c for c in ("strategy", *scenario_columns(table), "peak_memory_bytes", "memory_capacity_bytes",
                            "memory_note") if c in big.columns]
        sections.append(Section(title="Configurations that do not fit in GPU memory", items=(
            "Simulated for reference, never ranked: each needs more memory per GPU than its GPU has "
            "(docs/memory.md).", big[list(dict.fromkeys(cols))])))
    bad = table[table["status"] != "ok"]
    if len(bad):
        reasons = bad.groupby(["status", "reason"], sort=True).size().reset_index(name="configurations")
        sections.append(Section(title="Skipped and failed configurations", items=(reasons,)))
    return sections
