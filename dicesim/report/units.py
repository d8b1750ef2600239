"""Display units of the result columns: one table, used by figures, HTML tables and the CLI.

Result tables keep SI base units in their column names (``step_latency_s``,
``peak_buffer_bytes``, ``overlap_frac``); people read milliseconds, MiB and percent. Every
conversion lives here so a figure axis, an HTML table header and a terminal table can never
disagree about a unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MiB = float(2**20)
GiB = float(2**30)


@dataclass(frozen=True, kw_only=True)
class Unit:
    """How to show one column: a human label with its unit, a scale factor, a number format."""

    label: str
    unit: str
    scale: float = 1.0
    fmt: str = "{:.2f}"

    @property
    def title(self) -> str:
        """Axis or header title such as ``step latency (ms)``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def show(self, value: object) -> str:
        """One value formatted with this unit's scale; missing values show as an en dash."""
        if value is None or (isinstance(value, float) and value != value):
            return "–"
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and self.scale == 1.0:
            return str(int(value))
        try:
            return self.fmt.format(float(value) * self.scale)
        except (TypeError, ValueError):
            return str(value)


_MS = dict(unit="ms", scale=1e3, fmt="{:.2f}")
_PCT = dict(unit="%", scale=100.0, fmt="{:.1f}")
_STEPS = dict(unit="steps", fmt="{:.3f}")

COLUMN_UNITS: dict[str, Unit] = {
    "step_latency_s": Unit(label="step latency", **_MS),
    "sampled_step_low_s": Unit(label="sampled step latency, 95% low", **_MS),
    "sampled_step_high_s": Unit(label="sampled step latency, 95% high", **_MS),
    "steps_simulated": Unit(label="steps simulated", unit="steps", fmt="{:.0f}"),
    "groups_simulated": Unit(label="groups simulated", unit="groups", fmt="{:.0f}"),
    "total_latency_s": Unit(label="total latency", unit="s", fmt="{:.3f}"),
    "exposed_comm_s": Unit(label="exposed comm", **_MS),
    "exposed_comm_step_s": Unit(label="exposed comm per step", **_MS),
    "comm_busy_s": Unit(label="comm busy", **_MS),
    "compute_busy_s": Unit(label="compute busy", **_MS),
    "overlap_s": Unit(label="overlap", **_MS),
    "host_gap_s": Unit(label="host gap", **_MS),
    "latency_s": Unit(label="latency", **_MS),
    "duration_s": Unit(label="duration", **_MS),
    "busy_s": Unit(label="busy", **_MS),
    "overlap_frac": Unit(label="overlap", **_PCT),
    "comm_frac": Unit(label="comm in flight", **_PCT),
    "utilisation": Unit(label="utilisation of capacity", **_PCT),
    "busy_frac": Unit(label="time with traffic", **_PCT),
    "mean_lag": Unit(label="mean lag", **_STEPS),
    "weighted_lag": Unit(label="weighted lag", **_STEPS),
    "mean_lag_steps": Unit(label="mean lag", **_STEPS),
    "weighted_lag_steps": Unit(label="weighted lag", **_STEPS),
    "max_lag_steps": Unit(label="max lag", unit="steps", fmt="{:.0f}"),
    "steady_step_latency_s": Unit(label="step latency after step 0", **_MS),
    "exposed_comm_share_frac": Unit(label="exposed comm share", **_PCT),
    "sync_exposed_comm_share_frac": Unit(label="sync exposed comm share", **_PCT),
    "sync_step_latency_s": Unit(label="sync step latency", **_MS),
    "busiest_link_utilisation": Unit(label="busiest link utilisation", **_PCT),
    "sync_busiest_link_utilisation": Unit(label="sync busiest link utilisation", **_PCT),
    "eff_bw_Bps": Unit(label="reachable bandwidth", unit="GB/s", scale=1e-9, fmt="{:.1f}"),
    "step_latency_low_s": Unit(label="band low", **_MS),
    "step_latency_high_s": Unit(label="band high", **_MS),
    "shadow_rel_l2_mean": Unit(label="shadow rel. L2 error, mean", unit="", fmt="{:.4f}"),
    "shadow_rel_l2_max": Unit(label="shadow rel. L2 error, max", unit="", fmt="{:.4f}"),
    "max_lag": Unit(label="max lag", unit="steps", fmt="{:.0f}"),
    "lag": Unit(label="lag", unit="steps", fmt="{:.0f}"),
    "peak_buffer_bytes": Unit(label="peak buffer", unit="MiB", scale=1 / MiB, fmt="{:.1f}"),
    # GPU memory is quoted in GiB (24 GiB cards, 80 GiB cards)
    "peak_memory_bytes": Unit(label="memory per GPU", unit="GiB", scale=1 / GiB, fmt="{:.1f}"),
    "memory_capacity_bytes": Unit(label="GPU memory", unit="GiB", scale=1 / GiB, fmt="{:.1f}"),
    "memory_margin_bytes": Unit(label="memory left", unit="GiB", scale=1 / GiB, fmt="{:.1f}"),
    "buffer_bytes": Unit(label="buffer", unit="MiB", scale=1 / MiB, fmt="{:.1f}"),
    "nbytes": Unit(label="bytes", unit="MiB", scale=1 / MiB, fmt="{:.1f}"),
    "bw_Bps": Unit(label="bandwidth", unit="GB/s", scale=1e-9, fmt="{:.1f}"),
    "mean_bw_Bps": Unit(label="bandwidth while busy", unit="GB/s", scale=1e-9, fmt="{:.2f}"),
    "speedup": Unit(label="speedup over sync", unit="x", fmt="{:.2f}"),
    "pred_fd_change": Unit(label="predicted FD change", unit="FD units", fmt="{:.3f}"),
    "pred_deviation": Unit(label="predicted deviation", unit="rel. L2 %", scale=100.0, fmt="{:.2f}"),
    "world_size": Unit(label="GPUs", unit="", fmt="{:.0f}"),
    "batch": Unit(label="batch per GPU", unit="images", fmt="{:.0f}"),
    "steps": Unit(label="steps", unit="", fmt="{:.0f}"),
}


def unit_for(column: str) -> Unit:
    """The display unit of ``column``; unknown columns fall back to a unit read off the suffix."""
    if column in COLUMN_UNITS:
        return COLUMN_UNITS[column]
    label = column.replace("_", " ")
    for suffix, kw in (("_s", _MS), ("_frac", _PCT), ("_bytes", dict(unit="MiB", scale=1 / MiB, fmt="{:.1f}")),
                       ("_Bps", dict(unit="GB/s", scale=1e-9, fmt="{:.2f}")), ("_us", dict(unit="us", fmt="{:.1f}"))):
        if column.endswith(suffix):
            return Unit(label=column[: -len(suffix)].replace("_", " "), **kw)  # type: ignore[arg-type]
    return Unit(label=label, unit="", fmt="{}")


def display_frame(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Strings ready to print: each numeric column scaled and formatted, headers carry units.

    Non-numeric columns pass through unchanged (with their plain name as header).
    """
    cols = list(df.columns) if columns is None else columns
    out: dict[str, list[str]] = {}
    for col in cols:
        series = df[col]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            u = unit_for(col)
            out[u.title] = [u.show(v) for v in series.tolist()]
        else:
            out[col] = ["–" if v is None else str(v) for v in series.tolist()]
    return pd.DataFrame(out, index=df.index)
