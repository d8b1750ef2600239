"""The written summary of a study: what changed along its axes and why, in a few sentences.

Pure function of the study table (:func:`dicesim.study.study_table`: one row per model x
setting x strategy with ``speedup``, the exposed-communication share and the busiest link
of each run). Every figure quoted is read from that table, with its unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dicesim.report.sweep_report import over_memory
from dicesim.report.units import unit_for

def _fmt(column: str, value: float) -> str:
    u = unit_for(column)
    return f"{u.show(value)} {u.unit}".strip()


def _value(axis: str, value: object) -> str:
    if axis == "world_size":
        return f"{value} GPUs"
    if axis == "image_size":
        return f"{value} px"
    if axis == "batch":
        return f"batch {value}"
    return str(value)


def _sorted(values: Sequence[object]) -> list[object]:
    try:
        return sorted(values)
    except TypeError:
        return list(values)


def _setting(row: pd.Series, axes: Sequence[str]) -> str:
    parts = [_value(a, row[a]) for a in axes]
    if "topology" not in axes:
        parts.insert(0, f"{row['topology']}")
    if "world_size" not in axes:
        parts.insert(1, f"{int(row['world_size'])} GPUs")
    return ", ".join(parts)


def study_summary(table: pd.DataFrame, axes: Sequence[str], best: pd.DataFrame | None = None) -> list[str]:
    """Paragraphs (plain text) summarising ``table``; ``axes`` are the study's varying axes;
    ``best``: :func:`fastest_per_setting` of ``table`` and ``axes`` when the caller has it already."""
    if table.empty:
        return ["No configuration could be simulated; the table of skipped configurations says why."]
    best = fastest_per_setting(table, axes) if best is None else best
    out: list[str] = []
    for model, part in table.groupby("model", sort=False):
        # a model's settings are grouped the same way in its rows alone as in the whole table
        mine = best[best["model"] == model].reset_index(drop=True) if len(best) else best
        out += _model_summary(str(model), part, list(axes), mine)
    return [p for p in out if p]


def _reference(part: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, str]:
    """The rows at the largest value of the second axis (the setting the summary quotes)."""
    if len(axes) < 2:
        return part, ""
    ref_val = _sorted(part[axes[1]].unique().tolist())[-1]
    return part[part[axes[1]] == ref_val], f" at {_value(axes[1], ref_val)}"


def fastest_per_setting(table: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """One row per model and setting: the fastest strategy that fits its GPUs' memory, its speedup,
    and sync's exposed share and busiest links (what there was to hide, and where); ``not_fitting``
    names the strategies left out because they do not fit (docs/memory.md)."""
    keys = ["model", *[a for a in ("topology", "world_size", "batch", "image_size") if a in table.columns]]
    rows = []
    for _, g in table.groupby(keys, sort=False):
        sync = g[g["strategy"] == "sync"]
        big = over_memory(g)
        others = g[(g["strategy"] != "sync") & ~big].dropna(subset=["speedup"])
        if sync.empty or others.empty:
            continue
        s, best = sync.iloc[0], others.sort_values("speedup", ascending=False, kind="stable").iloc[0]
        row = {k: s[k] for k in keys}
        row.update(fastest=best["strategy"], speedup=best["speedup"], step_latency_s=best["step_latency_s"],
                   sync_step_latency_s=s["step_latency_s"], sync_exposed_comm_share_frac=s["exposed_comm_share_frac"],
                   not_fitting=", ".join(g.loc[big, "strategy"].astype(str)))
        if "parallelism" in g.columns:
            row["fastest_parallelism"] = best["parallelism"]
        if {"step_latency_low_s", "step_latency_high_s"} <= set(g.columns):
            rivals = [str(r["strategy"]) for _, r in g[~big].iterrows() if r["strategy"] != best["strategy"]
                      and r["step_latency_low_s"] <= best["step_latency_high_s"]
                      and best["step_latency_low_s"] <= r["step_latency_high_s"]]
            row.update(step_latency_low_s=best["step_latency_low_s"], step_latency_high_s=best["step_latency_high_s"],
                       order_resolved=not rivals, overlapping=", ".join(rivals))
        if isinstance(s.get("busiest_link_class"), str) and "busiest_link_utilisation" in s:
            row.update(sync_busiest_links=f"{int(s['busiest_link_count'])} x {s['busiest_link_class']}",
                       sync_busiest_link_utilisation=s["busiest_link_utilisation"])
        rows.append(row)
    return pd.DataFrame(rows)


def _model_summary(model: str, part: pd.DataFrame, axes: list[str], settings: pd.DataFrame) -> list[str]:
    ref, ref_note = _reference(part, axes)
    best = fastest_per_setting(ref, axes)
    if best.empty:
        return [f"{model}: no setting has both a sync run and another strategy to compare."]
    prim = axes[0] if axes else None
    lines = []
    if len(best) > 1:
        top = best.sort_values("speedup", ascending=False, kind="stable")
        hi, lo = top.iloc[0], top.iloc[-1]
        lines.append(f"{model}{ref_note}: the fastest strategy that fits gains most on {_setting(hi, axes)} "
                     f"({hi['fastest']} "
                     f"{hi['speedup']:.2f}x over sync) and least on {_setting(lo, axes)} ({lo['fastest']} "
                     f"{lo['speedup']:.2f}x).")
        lines.append(_why(hi, lo, axes) + _deep_note(part))
        lines.append(_same(ref, prim))
    else:
        r = best.iloc[0]
        lines.append(f"{model} on {_setting(r, axes)}: {r['fastest']} is fastest, {r['speedup']:.2f}x over sync; "
                     f"sync waits {_fmt('exposed_comm_share_frac', r['sync_exposed_comm_share_frac'])} of its step "
                     f"for communication{_links(r)}." + _deep_note(part))
    if len(axes) > 1:
        lines.append(_secondary(part, axes[0], axes[1]))
    lines.append(_bands(settings, model))
    lines.append(_staleness(ref, axes))
    return lines


def _bands(best: pd.DataFrame, model: str) -> str:
    """How many settings' winners lead by more than the error bands (docs/trust.md)."""
    if "order_resolved" not in best.columns or best.empty:
        return ""
    unresolved = best[~best["order_resolved"].astype(bool)]
    if unresolved.empty:
        return (f"Error bands ({model}): on every setting the fastest strategy leads the next by more than both "
                "bands, so the order is resolved within the measured collective error.")
    first = unresolved.iloc[0]
    return (f"Error bands ({model}): on {len(unresolved)} of {len(best)} settings the fastest strategy's band overlaps "
            f"another's, so the order there is not resolved (e.g. {first['fastest']} against {first['overlapping']}); "
            "`dicesim compare --sensitivity` on one of them says which unmeasured parameter would flip it.")


def _why(hi: pd.Series, lo: pd.Series, axes: list[str]) -> str:
    """What sync waits for where the gain is largest and smallest, read the right way round: more to
    hide where it gains more, or said plainly that the exposed share alone does not explain it."""
    share = "exposed_comm_share_frac"
    a, b = _fmt(share, hi[f"sync_{share}"]), _fmt(share, lo[f"sync_{share}"])
    if hi[f"sync_{share}"] >= lo[f"sync_{share}"]:
        # data parallelism wins by sending nothing, the other families by hiding what they send
        verb = "avoid" if str(hi.get("fastest_parallelism")) == "data_parallel" else "hide"
        return (f"Why: there is more communication to {verb} there: sync waits for it {a} of its step"
                f"{_links(hi)}, against {b} on {_setting(lo, axes)}{_links(lo)}.")
    return (f"Sync waits for communication {a} of its step there{_links(hi)} and {b} on {_setting(lo, axes)}"
            f"{_links(lo)}: the exposed share alone does not set the gain; how much compute each strategy can "
            "overlap the all-to-alls with does too.")


def _links(row: pd.Series) -> str:
    if not isinstance(row.get("sync_busiest_links"), str):
        return ""
    return (f" (busiest links: {row['sync_busiest_links']}, each carrying "
            f"{_fmt('utilisation', row['sync_busiest_link_utilisation'])} of what it can over the run)")


def _same(ref: pd.DataFrame, prim: str | None) -> str:
    """Settings of the first axis on which every strategy ran in exactly the same time."""
    if prim is None:
        return ""
    lat = ref.pivot_table(index=prim, columns="strategy", values="step_latency_s", aggfunc="first")
    groups: dict[tuple, list[str]] = {}
    for value, row in lat.iterrows():
        groups.setdefault(tuple(round(v, 12) for v in row.tolist()), []).append(str(value))
    same = [g for g in groups.values() if len(g) > 1]
    if not same:
        return ""
    return " ".join(f"{' and '.join(g)} give identical results for every strategy: the all-to-alls cross the same "
                    "kind of links there." for g in same)


def _deep_note(part: pd.DataFrame) -> str:
    if "sync_layers" not in part.columns:
        return ""
    deep = part[part["sync_layers"].astype(str) == "deep"]
    if deep.empty:
        return ""
    cond = deep["cond_interval"] > 1 if "cond_interval" in deep.columns else pd.Series(False, index=deep.index)
    plain, skipping = sorted(deep.loc[~cond, "strategy"].unique()), sorted(deep.loc[cond, "strategy"].unique())
    note = ""
    if plain:
        one = len(plain) == 1
        note += (f" {', '.join(plain)} {'keeps' if one else 'keep'} the deep half of the layers synchronous, so "
                 f"{'it hides' if one else 'they hide'} only the other half's all-to-alls.")
    if skipping:
        verb = "keep" if len(skipping) > 1 else "keeps"
        note += (f" {', '.join(skipping)} {verb} the deep half synchronous{' too' if plain else ''}, but on the "
                 "steps the reference's skip-cache gate allows (every other step on synchronous layers, every "
                 "fourth on asynchronous ones) a layer sends one copy per token and its experts run half the rows "
                 "(conditional communication): that cuts the synchronous layers' traffic and the expert work "
                 "as well.")
    return note


def _secondary(part: pd.DataFrame, prim: str, sec: str) -> str:
    values = _sorted(part[sec].unique().tolist())
    lo_v, hi_v = values[0], values[-1]
    moves = []
    for v, g in part.groupby(prim, sort=False):
        sync = g[g["strategy"] == "sync"].set_index(sec)["step_latency_s"]
        best = g[g["strategy"] != "sync"].groupby(sec)["speedup"].max()
        if lo_v in sync.index and hi_v in sync.index and lo_v in best.index and hi_v in best.index:
            moves.append((v, sync[hi_v] / sync[lo_v], best[lo_v], best[hi_v]))
    if not moves:
        return ""
    widest = max(moves, key=lambda m: abs(m[3] - m[2]))
    growth = ", ".join(f"{m[1]:.1f}x on {_value(prim, m[0])}" for m in moves[:6])
    return (f"From {_value(sec, lo_v)} to {_value(sec, hi_v)}, sync's step latency grows {growth}. "
            f"The best speedup moves most on {_value(prim, widest[0])}: {widest[2]:.2f}x → {widest[3]:.2f}x.")


def _staleness(ref: pd.DataFrame, axes: Sequence[str]) -> str:
    first = ref.iloc[0]
    setting = ref
    for a in axes[:1]:
        setting = setting[setting[a] == first[a]]
    parts = []
    any_kv = False
    for _, r in setting.iterrows():
        if r["strategy"] == "sync":
            continue
        kv = "lag_of" in r.index and str(r["lag_of"]) not in ("expert output", "", "nan")
        any_kv = any_kv or kv
        parts.append(f"{r['strategy']} {r['weighted_lag_steps']:.2f} steps{' of K/V' if kv else ''} "
                     f"(max {int(r['max_lag_steps'])}), "
                     f"{_fmt('peak_buffer_bytes', r['peak_buffer_bytes'])}")
    if not parts:
        return ""
    of_kv = ", or of the other ranks' K/V for sequence parallelism" if any_kv else ""
    return (f"Staleness and memory on {_setting(first, axes)} (router-weighted mean lag{of_kv}; "
            "stale buffers per GPU): "
            + "; ".join(parts) + ". Lags follow from the strategy alone; buffer memory grows with the tokens "
            "per GPU (batch, image size) and with the experts each GPU holds.")
