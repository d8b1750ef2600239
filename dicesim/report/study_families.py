"""Which family of parallelism wins a study's settings, and which configurations do not fit.

Pure functions of the study table (:func:`dicesim.study.study_table`): one row per model x
setting x strategy with ``parallelism`` (data parallel, or the strategy's family: expert parallel,
sequence parallel, ...) and the memory verdict (``memory_margin_bytes``, ``memory_note``;
docs/memory.md). A configuration that does not fit its GPUs is never a winner; its cell says so
with what it needs.
"""

from __future__ import annotations

import pandas as pd

from dicesim.report.sweep_report import over_memory
from dicesim.report.units import unit_for

#: the families in the order the table lists them (others follow in table order)
FAMILY_ORDER: tuple[str, ...] = ("expert_parallel", "sequence", "data_parallel")
_SETTING = ("topology", "world_size", "batch", "image_size")
_GiB = float(2**30)


def family_of_row(row: pd.Series) -> str:
    """The row's ``parallelism``; for tables written before it existed, the strategy's family from
    its preset (``data_parallel`` for the expert family's replicated baseline)."""
    value = row.get("parallelism")
    if isinstance(value, str) and value:
        return value
    from dicesim.strategy import make_strategy

    try:
        s = make_strategy(str(row["strategy"]))
    except Exception:  # noqa: BLE001 -- a label that is no preset (a sweep override): family unknown
        return "unknown"
    return "data_parallel" if getattr(s, "scheme", "") == "data_parallel" else type(s).family


def _ms(value: float) -> str:
    u = unit_for("step_latency_s")
    return f"{u.show(value)} {u.unit}"


def _cell(part: pd.DataFrame, big: pd.Series) -> str:
    """A family's best strategy that fits (``dice 123.45 ms``), or why none does."""
    fit = part[~big.loc[part.index]]
    if len(fit):
        best = fit.sort_values("step_latency_s", kind="stable").iloc[0]
        return f"{best['strategy']} {_ms(best['step_latency_s'])}"
    worst = part.sort_values("memory_margin_bytes", kind="stable").iloc[-1]  # the one closest to fitting
    need, cap = float(worst["peak_memory_bytes"]), float(worst["memory_capacity_bytes"])
    return f"does not fit: {worst['strategy']} needs {need / _GiB:.1f} of {cap / _GiB:.1f} GiB"


def family_winners(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model and setting: the fastest configuration that fits (``winner``, its
    ``family`` and step latency) and, per family, its best configuration that fits or
    ``does not fit (...)``; ``(none fits)`` where nothing does."""
    if table.empty:
        return pd.DataFrame()
    keys = ["model", *[a for a in _SETTING if a in table.columns]]
    df = table.assign(_family=[family_of_row(r) for _, r in table.iterrows()])
    big = over_memory(df)
    families = [f for f in FAMILY_ORDER if f in set(df["_family"])]
    families += [f for f in dict.fromkeys(df["_family"]) if f not in families]
    rows = []
    for k, g in df.groupby(keys, sort=False):
        row = dict(zip(keys, k if isinstance(k, tuple) else (k,)))
        fit = g[~big.loc[g.index]]
        if len(fit):
            best = fit.sort_values("step_latency_s", kind="stable").iloc[0]
            row.update(winner=best["strategy"], family=best["_family"], step_latency_s=best["step_latency_s"])
        else:
            row.update(winner="(none fits)", family="", step_latency_s=float("nan"))
        for fam in families:
            part = g[g["_family"] == fam]
            row[fam] = _cell(part, big) if len(part) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def family_summary(table: pd.DataFrame, winners: pd.DataFrame | None = None) -> list[str]:
    """Sentences: per model, how many settings each family wins, and what does not fit where
    (``winners``: :func:`family_winners` of ``table`` when the caller has it already)."""
    winners = family_winners(table) if winners is None else winners
    if winners.empty:
        return []
    big = table[over_memory(table)]
    out = []
    for model, g in winners.groupby("model", sort=False):
        counts = g[g["family"] != ""]["family"].value_counts()
        wins = ", ".join(f"{fam} in {n} of {len(g)}" for fam, n in counts.items())
        line = f"{model}: the fastest configuration that fits comes from {wins or 'no family'} settings."
        over = big[big["model"] == model]
        if len(over):
            where = "; ".join(
                f"{r['strategy']} on {r.get('topology', '')}, batch {r.get('batch', '')} (needs "
                f"{r['peak_memory_bytes'] / _GiB:.1f} of {r['memory_capacity_bytes'] / _GiB:.1f} GiB per GPU)"
                for _, r in over.head(6).iterrows())
            line += f" Does not fit in GPU memory: {where}" + (" ..." if len(over) > 6 else "") + "."
        out.append(line)
    return out
